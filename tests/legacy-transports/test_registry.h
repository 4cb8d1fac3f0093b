// A registry of fixed-output commands for the golden tests of the FIFO and datagram
// transports: each reproduces a reply of the spec examples byte for byte, independent
// of the daemon (clock, pids, usrloc contents).
#pragma once

#include <memory>
#include <vector>

#include "registry/command.h"

namespace sipd::legacy::testing {

// Commands:
//   uptime, version, ps, ul_dump      the trees of spec 3.4, 4.3, 10.1 and 2
//   ul_dump_many [n]                  one `Domain` (not completed) with n AORs (default
//                                     120), each with one contact and kids; flushes every
//                                     50 AORs and adds records=n at the end (spec 1.7/3.6)
//   table_missing                     404 Table not found
//   fail                              the handler returns nothing (error status)
//   echo [args...]                    one node per argument: name, value as received
//   help [command]                    at most one argument (for "too many arguments")
//   big <lines>                       `line:: <96 x 'x'>` <lines> times, no flushing
//   big_flushed <lines>               the same, flushing every 50 lines
//   long_line <bytes>                 one nameless node of <bytes> 'v' bytes
//   sleep <ms>                        answers 200 OK after <ms> milliseconds
//   whoami                            the caller as the dispatcher sees it: `transport`,
//                                     `uid`, `pid`, `address` nodes (CallContext.peer)
//   async_hold                        goes async and never completes by itself: its ticket
//                                     is added to HeldTickets() for the test to complete
//   wait_for_cancel                   kBlocking (worker thread): waits up to 10 s for its
//                                     cancellation token, then CancelsSeen() is increased
std::unique_ptr<mi::Registry> NewTestRegistry();

// Tickets of async_hold calls not taken yet (TakeHeldTickets() empties the list).
std::vector<mi::AsyncTicket> TakeHeldTickets();
size_t HeldTicketCount();
// How many wait_for_cancel calls saw their cancellation, and how many started waiting
// (a call cancelled while still queued for a worker never runs its handler).
int CancelsSeen();
int CancelWaitsStarted();

}  // namespace sipd::legacy::testing
