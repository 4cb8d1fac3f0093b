// The body of one `TCP receiver` process: owns a set of TCP connections, reads and frames
// them, runs the SIP message handler for each framed message and writes what is sent on
// them (sipd/core/tcp_transport.h has the whole design).
//
// Loop: epoll over its hand-off channel (new connections from TCP main), its eventfd
// (Send() from other processes queued work in the connection table) and its
// connections; wakes at least every 200 ms for shutdown, the log level and the limits.
// Per readable connection one read of at most 64 KB, then every complete message in
// the buffer is handled (pipelining) before the next connection's turn.
//
// Limits enforced here: idle lifetime, header timeout (first byte to last byte of a
// message), max message size (513 Message Too Large from the header block when it is
// complete, then close), bad Content-Length (400 then close), connect timeout, send
// timeout, send queue (reading pauses at half the queue, resumes at a quarter; a full
// queue closes the connection). Every close is logged with its reason (limits at info,
// ordinary closes at debug).
//
// Thread/process-safety: single-threaded; the only process that touches its connections'
// descriptors.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "sipd/api/module.h"
#include "sipd/core/sip_transport.h"
#include "sipd/core/tcp_framer.h"
#include "sipd/core/tcp_transport.h"

namespace sipd {

class TcpReceiver final : public TcpLocalSender {
 public:
  struct Hooks {
    // The SIP stack entry point (must outlive the receiver).
    const SipMessageHandler* handler = nullptr;
    // Answers a message that cannot be handled (`headers` is its header block): 513
    // Message Too Large, 400 Bad Request for a bad Content-Length. May be empty.
    std::function<void(const SipInbound& headers, int code, std::string_view reason)> reject;
    // This process's busy flag for load:tcp-load (may be nullptr).
    std::atomic<uint8_t>* busy = nullptr;
  };

  TcpReceiver(TcpTransport& transport, int index, Hooks hooks);
  ~TcpReceiver() override;
  TcpReceiver(const TcpReceiver&) = delete;
  TcpReceiver& operator=(const TcpReceiver&) = delete;

  // Frees what a predecessor in this slot left in the table, then serves until
  // core.stopping().
  absl::Status Run(Core& core);

  // TcpLocalSender (Send() in this process).
  absl::Status SendLocal(uint64_t id, std::string_view message) override;

 private:
  using Clock = std::chrono::steady_clock;
  struct Connection;

  void AdoptAll();
  void ProcessWork();
  void StartConnect(uint64_t id);
  void FinishConnect(Connection& c);
  void ReadOnce(Connection& c);
  void ProcessFrames(Connection& c);
  void Flush(Connection& c);
  void UpdateEvents(Connection& c);
  void Touch(Connection& c);
  void Close(Connection& c, std::string_view reason, bool limit);
  void CloseDeferred();
  void CheckTimers();
  size_t Pending(const Connection& c) const;

  TcpTransport& transport_;
  TcpConnTable& table_;
  int index_;
  Hooks hooks_;
  int epoll_ = -1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  std::vector<uint64_t> to_close_;
  std::unique_ptr<char[]> read_buffer_;
  Clock::time_point now_{};
  Clock::time_point next_timer_check_{};
};

}  // namespace sipd
