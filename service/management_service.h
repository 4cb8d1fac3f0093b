// sipd.mi.v1.Management: the gRPC face of the one MI dispatch path.
//
// Every RPC ends in mi::Dispatch(); this class only converts requests, enforces the
// transport's limits and maps replies to gRPC statuses and metadata as documented in
// proto/sipd/mi/v1/mi.proto (see service/status_mapping.h).
//
// It is an asynchronous (completion-queue) service; MiGrpcServer runs the queues.
// Where calls run:
//  - Execute hands the request to the Dispatcher on the queue thread that received it
//    (see service/cq_tag.h for why one thread); the dispatcher runs it inline or on its
//    workers, and an async or worker call is answered from MiGrpcServer's completion
//    thread when the dispatcher reports it ready. A cancelled call (client gone, or
//    deadline) cancels its exchange.
//  - ExecuteStream runs on a small WorkerPool, because its writes wait for the client.
//    A full pool queue answers RESOURCE_EXHAUSTED.
//
// Execute and ExecuteStream are "raw" methods (the service parses the request bytes
// itself) so that a request that is not a valid ExecuteRequest, e.g. invalid UTF-8 in a
// proto3 string, gets INVALID_ARGUMENT with a clear message rather than the library's
// bare parse failure. Nothing changes on the wire or in reflection.
//
// Request validation (INVALID_ARGUMENT): empty command name, command name longer than
// `max_command_length`, more than `max_args` arguments, arguments totalling more than
// `max_message_size` bytes, an argument with neither name nor value (MI cannot
// represent it, spec 1.2). A call whose deadline already passed is not run
// (DEADLINE_EXCEEDED).
//
// Thread-safety: calls run concurrently on the queue threads and the worker pool; the
// registry is read-only and Dispatch() is thread-safe. StopWorkers() must be called
// after the grpc::Server was shut down and before its completion queues are drained.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "grpcpp/grpcpp.h"
#include "registry/command.h"
#include "registry/dispatcher.h"
#include "registry/worker_pool.h"
#include "sipd/mi/v1/mi.grpc.pb.h"

namespace sipd::service {

namespace v1 = ::sipd::mi::v1;

struct ServiceOptions {
  // Largest request accepted and reply produced (bytes). The server also applies it as
  // gRPC's max send/receive message size.
  size_t max_message_size = 4 << 20;
  size_t max_args = 1024;
  size_t max_command_length = 128;
  // ExecuteStream: nodes per ReplyChunk at most (also cut at max_message_size / 4).
  size_t stream_chunk_nodes = 1000;
  // ExecuteStream: a chunk the client has not taken within this time ends the stream
  // (the handler may hold locks while it flushes; a stalled client must not keep them).
  std::chrono::milliseconds stream_write_timeout{10000};
  // Worker threads for calls that may block (see file comment) and their queue bound.
  size_t workers = 4;
  size_t max_queued = 64;
};

// Parses a serialized ExecuteRequest, then converts and validates it (see file
// comment). On error returns the INVALID_ARGUMENT status to send.
grpc::Status ParseRequest(const grpc::ByteBuffer& bytes, const ServiceOptions& options,
                          mi::Request* out);

// Converts and validates an ExecuteRequest (see file comment). On error returns the
// INVALID_ARGUMENT status to send.
grpc::Status ValidateRequest(const v1::ExecuteRequest& in, const ServiceOptions& options,
                             mi::Request* out);

class ManagementService {
 public:
  using AsyncService = v1::Management::WithRawMethod_Execute<
      v1::Management::WithRawMethod_ExecuteStream<v1::Management::WithAsyncMethod_ListCommands<
          v1::Management::WithAsyncMethod_DescribeCommand<v1::Management::Service>>>>;

  // `dispatcher` runs every command and must outlive the service.
  ManagementService(mi::Dispatcher& dispatcher, ServiceOptions options);
  ~ManagementService();
  ManagementService(const ManagementService&) = delete;
  ManagementService& operator=(const ManagementService&) = delete;

  grpc::Service* service() { return &service_; }

  // Posts this service's pending requests on `cq` (after the server started); once per
  // completion queue.
  void Serve(grpc::ServerCompletionQueue* cq);

  // Finishes the calls queued on the worker pool and joins it. See thread-safety note.
  void StopWorkers();

 private:
  class ExecuteCall;
  class StreamCall;

  // The answers of ListCommands and DescribeCommand (run by UnaryCall).
  grpc::Status ListCommands(const v1::ListCommandsRequest& request,
                            v1::ListCommandsResponse* response) const;
  grpc::Status DescribeCommand(const v1::DescribeCommandRequest& request,
                               v1::CommandInfo* response) const;

  // Status (and trailing metadata) of a finished dispatch. For Execute `response`
  // receives a 2xx reply; for ExecuteStream it is null (the chunks carried the reply).
  grpc::Status FinishStatus(grpc::ServerContext* context, mi::DispatchResult& result,
                            v1::Reply* response) const;
  mi::Dispatcher& dispatcher_;
  const mi::Registry& registry_;
  const ServiceOptions options_;
  AsyncService service_;
  mi::WorkerPool pool_;
};

}  // namespace sipd::service
