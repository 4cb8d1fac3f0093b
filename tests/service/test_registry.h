// A registry of small test commands for the gRPC service tests (no sipd needed).
//
//   version                 -> "Server:: sipd-test"
//   echo ARG...             -> one node per argument (name and value as sent)
//   code CODE               -> reply CODE "reason CODE" with one node "Detail:: x"
//   fail                    -> the handler returns an error ("returned nothing")
//   binary                  -> a value holding invalid UTF-8 bytes
//   big BYTES               -> one node whose value is BYTES bytes long
//   dump RECORDS [PAD]      -> streaming: RECORDS "Record:: i" nodes, each with a kid
//                              "Data:: <PAD bytes>", flushing every 50 records; counts
//                              flushes in dump_flushes()
//   slow MS                 -> async-flagged: sleeps MS milliseconds, then replies
//   ps                      -> "Process::  ID=0 PID=<pid> Type=attendant" (like core)
//   park                    -> async: waits for a reply nobody sends (the ticket is
//                              kept in parked(); tests complete it or let it time out)
//   spin                    -> blocking: counts itself in spin_started, runs until its
//                              call is cancelled (at most 30 s), then counts it in
//                              spin_cancelled
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "registry/command.h"

namespace sipd::testing {

struct TestRegistry {
  TestRegistry();
  mi::Registry registry;
  // Flushes done by `dump` so far (shared with the handler).
  std::shared_ptr<std::atomic<int>> dump_flushes = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> dump_finished = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> spin_started = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> spin_cancelled = std::make_shared<std::atomic<int>>(0);
  // Tickets handed out by `park`, in order.
  struct Parked {
    std::mutex mu;
    std::vector<mi::AsyncTicket> tickets;
  };
  std::shared_ptr<Parked> parked = std::make_shared<Parked>();
};

}  // namespace sipd::testing
