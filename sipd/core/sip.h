// One SIP request as a module handler sees it in a SIP worker.
//
// The SIP receivers parse each datagram with libosip2; requests whose method has a
// handler registered through Core::AddSipHandler() are passed to it as a SipRequest.
// Core behaviour without a handler: OPTIONS -> 200 OK; ACK -> absorbed (counted in
// sl:received_ACKs); any other method -> 501 Not Implemented (stateless, counted in
// sl:*). Unparsable datagrams are counted (core:bad_msg_hdr / err_requests /
// drop_requests) and dropped.
//
// Thread/process-safety: a SipRequest lives for one handler call in one worker.
#pragma once

#include <netinet/in.h>
#include <osipparser2/osip_message.h>
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sipd {

class SipRequest {
 public:
  virtual ~SipRequest() = default;

  // The parsed request; valid during the handler call.
  virtual osip_message_t* message() = 0;
  // Request method, upper-case as received ("REGISTER").
  virtual const std::string& method() const = 0;
  // The raw datagram.
  virtual std::string_view raw() const = 0;

  // Where the datagram came from.
  virtual const sockaddr_storage& source() const = 0;
  virtual std::string source_ip() const = 0;
  virtual uint16_t source_port() const = 0;
  // The listen socket that received it, e.g. "udp:127.0.0.1:5060".
  virtual const std::string& socket() const = 0;

  // Sends a stateless reply to the request's top Via (RFC 3261 18.2.2; in practice the
  // source address): status line, Via(s), From, To (with a To-tag added when absent),
  // Call-ID, CSeq copied from the request, then `extra_headers` verbatim (each without
  // CRLF, e.g. "Contact: <sip:a@b>;expires=60"), Server, Content-Length and `body`.
  // Updates the sl statistics (1xx..6xx_replies, sent_replies, sent_err_replies).
  virtual absl::Status Reply(int code, std::string_view reason,
                             const std::vector<std::string>& extra_headers = {},
                             std::string_view body = {}) = 0;

  // Deferred replies, for a handler whose answer must wait for work that may finish in
  // another process (usrloc write-through: the 200 OK only after the group commit, sent
  // by whichever process commits). Defer() returns a token (a few hundred bytes, to be
  // kept e.g. in shared memory) from which SendDeferredReply() below sends this
  // request's final reply later, from ANY sipd process; the request then counts as
  // answered by the handler (a stateful stack sends no reply of its own and absorbs
  // retransmissions meanwhile). After a successful Defer() the handler must not call
  // Reply(). Unimplemented where the request cannot be answered later: answer it with
  // Reply() as usual.
  virtual absl::StatusOr<std::string> Defer() {
    return absl::UnimplementedError("this request cannot be answered later");
  }
};

// Sends the final reply of a deferred request, from any sipd process: `token` as
// SipRequest::Defer() returned it, the rest as SipRequest::Reply(). InvalidArgument for
// a token no stack registered (or a malformed one); otherwise the sender's outcome.
absl::Status SendDeferredReply(std::string_view token, int code, std::string_view reason,
                               const std::vector<std::string>& extra_headers = {},
                               std::string_view body = {});

// How the SIP stack whose tokens start with byte `kind` sends such a reply. The stacks
// register their sender in the attendant before the fork, so that every process has
// it: the core's stateless stack as 'S' (sipd/core/sip_receiver.h), tm as 'T'.
// Registering a kind again replaces its sender; an empty function removes it.
using DeferredReplySender = std::function<absl::Status(
    std::string_view token, int code, std::string_view reason,
    const std::vector<std::string>& extra_headers, std::string_view body)>;
void RegisterDeferredReplySender(char kind, DeferredReplySender sender);

// Work a UDP SIP worker does when no further datagram is waiting, just before it blocks
// for the next one (usrloc write-through: commit the queued REGISTERs as one batch and
// send their replies; tm under overload: send the 503s it held back). `pending` says
// cheaply whether there is any; only then does the worker look, without waiting, whether
// another datagram is there (one more system call), and call `run` if none is. Neither
// may block.
// REQUIRES: the attendant, before the fork (every worker gets the list).
void AddSipIdleHandler(std::function<bool()> pending, std::function<void()> run);
// Whether any handler has work; runs them all (a UDP worker: sipd/core/sip_receiver.cc).
bool SipIdleWorkPending();
void RunSipIdleHandlers();

}  // namespace sipd
