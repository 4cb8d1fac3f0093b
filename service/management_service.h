// sipd.mi.v1.Management: the gRPC face of the one MI dispatch path.
//
// Every RPC ends in mi::Dispatcher; this class and its calls only convert requests,
// enforce the transport's limits and map replies to gRPC statuses and metadata as
// documented in proto/sipd/mi/v1/mi.proto (see service/status_mapping.h).
//
// It is an asynchronous (completion-queue) service; MiGrpcServer runs the queues. No
// call ever holds a thread while it waits, whatever its client does:
//  - Execute hands the request to the Dispatcher on the queue thread that received it
//    (see service/cq_tag.h for why one thread); the dispatcher runs it inline or on its
//    workers, and an async or worker call is answered from MiGrpcServer's completion
//    thread when the dispatcher reports it ready. A cancelled call (client gone, or
//    deadline) cancels its exchange (an async slot is released at once).
//  - ExecuteStream (service/stream_call.cc) pulls its reply (Delivery::kPull): each
//    finished write pulls the next part of the reply and sends its chunks, so a
//    streamed command produces only as fast as its client reads, and a stalled client
//    holds no thread and no lock, only the part not sent yet.
//  - Session (service/session_call.cc) runs many tagged requests on one stream.
// A client that takes nothing for `stream_write_timeout`, or whose reply is not over
// after `reply_timeout`, is cut (see ServiceOptions).
//
// Execute, ExecuteStream and Session are "raw" methods (the service parses the request
// bytes itself) so that a request that is not a valid message, e.g. invalid UTF-8 in a
// proto3 string, gets INVALID_ARGUMENT with a clear message rather than the library's
// bare parse failure. Nothing changes on the wire or in reflection.
//
// Request validation (INVALID_ARGUMENT): empty command name, command name longer than
// `max_command_length`, more than `max_args` arguments, arguments totalling more than
// `max_message_size` bytes, an argument with neither name nor value (MI cannot
// represent it, spec 1.2). A call whose deadline already passed is not run
// (DEADLINE_EXCEEDED).
//
// Memory a client can hold (documented figures in service/README.md):
//  - a stalled ExecuteStream: one part of its reply (ul_dump: 50 AORs) as chunks, the
//    chunk being written (<= stream_chunk_bytes), and the call's gRPC state;
//  - a Session: its requests in flight (<= session_max_inflight), results waiting for
//    the client (reading stops past session_buffer_bytes), one part of each streamed
//    reply;
//  - an unread unary reply: the reply (<= max_message_size), until it is cut.
//
// Thread-safety: calls run concurrently on the queue threads and the dispatcher's
// completion thread; each call guards its state with its own lock (service/call_anchor.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>

#include "grpcpp/grpcpp.h"
#include "registry/command.h"
#include "registry/dispatcher.h"
#include "service/live_calls.h"
#include "sipd/mi/v1/mi.grpc.pb.h"

namespace sipd::service {

namespace v1 = ::sipd::mi::v1;

struct ServiceOptions {
  // Largest request accepted and reply produced (bytes). The server also applies it as
  // gRPC's max send/receive message size.
  size_t max_message_size = 4 << 20;
  size_t max_args = 1024;
  size_t max_command_length = 128;
  // Streamed replies (ExecuteStream, Session with stream = true): nodes and about
  // bytes per ReplyChunk at most.
  size_t stream_chunk_nodes = 1000;
  size_t stream_chunk_bytes = 64 << 10;
  // Stall timeout: a write (a chunk, a Session reply, a unary reply larger than
  // kLargeReplyBytes) the client has not taken within this time cuts the call.
  std::chrono::milliseconds stream_write_timeout{10000};
  // Total reply deadline: an ExecuteStream not over, or a Session request not answered,
  // after this time is cut (whatever the client's own deadline).
  std::chrono::milliseconds reply_timeout{300000};
  // Session: requests in flight at most (one more is refused with RESOURCE_EXHAUSTED),
  // and results waiting for the client beyond which the session reads no request.
  size_t session_max_inflight = 1024;
  size_t session_buffer_bytes = 1 << 20;
  // The dispatcher's worker threads for calls that may block, and their queue bound
  // (the service passes them to Core::NewDispatcher; it has no threads of its own).
  size_t workers = 4;
  size_t max_queued = 64;
};

// A unary reply at least this large gets a stall timer when it is sent (smaller ones
// fit the HTTP/2 windows of any live client).
inline constexpr size_t kLargeReplyBytes = 64 << 10;

// Parses a serialized ExecuteRequest, then converts and validates it (see file
// comment). On error returns the INVALID_ARGUMENT status to send.
grpc::Status ParseRequest(const grpc::ByteBuffer& bytes, const ServiceOptions& options,
                          mi::Request* out);

// Converts and validates an ExecuteRequest (see file comment). On error returns the
// INVALID_ARGUMENT status to send.
grpc::Status ValidateRequest(const v1::ExecuteRequest& in, const ServiceOptions& options,
                             mi::Request* out);
// The same rules for the command of a Session request.
grpc::Status ValidateRequest(const v1::SessionRequest& in, const ServiceOptions& options,
                             mi::Request* out);

class ManagementService {
 public:
  using AsyncService =
      v1::Management::WithRawMethod_Execute<v1::Management::WithRawMethod_ExecuteStream<
          v1::Management::WithRawMethod_Session<v1::Management::WithAsyncMethod_ListCommands<
              v1::Management::WithAsyncMethod_DescribeCommand<v1::Management::Service>>>>>;

  // `dispatcher` runs every command and must outlive the service.
  ManagementService(mi::Dispatcher& dispatcher, ServiceOptions options);
  ~ManagementService() = default;
  ManagementService(const ManagementService&) = delete;
  ManagementService& operator=(const ManagementService&) = delete;

  grpc::Service* service() { return &service_; }
  AsyncService& async_service() { return service_; }
  mi::Dispatcher& dispatcher() { return dispatcher_; }
  const ServiceOptions& options() const { return options_; }

  // Calls cut because their client made no progress (stall or total reply deadline).
  uint64_t calls_cut() const { return calls_cut_.load(std::memory_order_relaxed); }
  void CountCut() { calls_cut_.fetch_add(1, std::memory_order_relaxed); }

  // Posts this service's pending requests on `cq` (after the server started); once per
  // completion queue.
  void Serve(grpc::ServerCompletionQueue* cq);

  // The call objects of this service, of TypedService and of EventService (their calls
  // count here too): a queue is shut down only once there are none.
  LiveCalls& live_calls() const { return live_calls_; }

 private:
  // The answers of ListCommands and DescribeCommand (run by UnaryCall).
  grpc::Status ListCommands(const v1::ListCommandsRequest& request,
                            v1::ListCommandsResponse* response) const;
  grpc::Status DescribeCommand(const v1::DescribeCommandRequest& request,
                               v1::CommandInfo* response) const;

  mi::Dispatcher& dispatcher_;
  const mi::Registry& registry_;
  const ServiceOptions options_;
  AsyncService service_;
  std::atomic<uint64_t> calls_cut_{0};
  mutable LiveCalls live_calls_;
};

}  // namespace sipd::service
