// What the call classes of sipd.mi.v1.Management share (internal to service/): request
// acceptance, the CallContext of a gRPC call, the MI status of a dispatch, chunking of
// pulled replies, and the entry points that post each kind of call on a queue.
//
// Thread-safety: pure functions, except where noted.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "registry/call_context.h"
#include "registry/dispatcher.h"
#include "service/chunk_writer.h"
#include "service/management_service.h"
#include "sipd/mi/v1/mi.pb.h"

namespace sipd::service {

// Longest MI reason copied into grpc-message and sipd-mi-reason: trailing metadata must
// stay well below the peers' header-size limit (8 KiB by default).
inline constexpr size_t kMaxReasonInMetadata = 512;

// The CallContext of a call: transport gRPC, peer "ipv4:ip:port", the call's deadline.
mi::CallContext GrpcCallContext(const grpc::ServerContext& context);

// The framing of the client message the call received last (gRPC's PROTOCOL-HTTP2.md):
// a message whose Compressed-Flag is 1 while the call has no grpc-encoding (or
// identity) is INTERNAL "message flagged compressed without grpc-encoding". gRPC core
// 1.51 hands such a message to the server as plain bytes; it records the flag of the
// last received message before the read completes, which this reads. Call it after
// EVERY read of a client message (the request of a unary or server-streaming call
// included), before its bytes are used.
grpc::Status CheckMessageFraming(grpc::ServerContext& context);

// What Execute and ExecuteStream do first with a call: check the message's framing,
// parse and validate the request, then refuse it if its deadline already passed (no
// command runs for a caller that gave up).
grpc::Status AcceptRequest(const grpc::ByteBuffer& bytes, grpc::ServerContext& context,
                           const ServiceOptions& options, mi::Request* out);

grpc::Status DeadlineExpiredStatus();

// The status message of an MI reason (cut at kMaxReasonInMetadata bytes).
std::string StatusMessage(std::string_view reason);

// The status of a finished exchange (the table in mi.proto) and, in trailing metadata,
// sipd-mi-code/-reason/-outcome. REQUIRES: exchange.ready().
grpc::Status ExchangeStatus(grpc::ServerContext* context, mi::Exchange& exchange);

// The pending chunks of a pulled reply: Exchange::WriteNext() writes one part of the
// reply through `writer()`, whose chunks (cut at the limits) queue up here until the
// call sends them, one write each. So a call holds at most one part of a reply.
//
// A chunk popped after it was sent is kept, cleared, for the writer's next chunk (up to
// kSpares of them): protobuf's Clear() keeps a message's nodes and the capacity of their
// strings, so a long stream (dlg_list, ul_dump) builds its chunks without allocating
// each node anew. A spare holds at most one chunk's memory (the writer's byte limit).
//
// Thread-safety: as the owning call (its lock).
class ChunkQueue {
 public:
  explicit ChunkQueue(ChunkReplyWriter::Limits limits)
      : writer_(
            [this](v1::ReplyChunk& chunk) {
              Push(chunk);
              return true;
            },
            limits) {
    spares_.reserve(kSpares);
  }
  ChunkQueue(const ChunkQueue&) = delete;
  ChunkQueue& operator=(const ChunkQueue&) = delete;

  mi::ReplyWriter& writer() { return writer_; }
  bool empty() const { return chunks_.empty(); }
  size_t size() const { return chunks_.size(); }
  v1::ReplyChunk& front() { return chunks_.front(); }
  void pop_front() {
    if (spares_.size() < kSpares) {
      spares_.emplace_back().Swap(&chunks_.front());
      spares_.back().Clear();
    }
    chunks_.pop_front();
  }
  void clear() { chunks_.clear(); }

 private:
  // Two: a 50-dialog part of dlg_list is two chunks at the default limits.
  static constexpr size_t kSpares = 2;

  // Takes the writer's chunk and hands it a spare to fill next, if there is one.
  void Push(v1::ReplyChunk& chunk) {
    chunks_.emplace_back().Swap(&chunk);
    if (spares_.empty()) return;
    chunk.Swap(&spares_.back());
    spares_.pop_back();
  }

  ChunkReplyWriter writer_;
  std::deque<v1::ReplyChunk> chunks_;
  std::vector<v1::ReplyChunk> spares_;
};

ChunkReplyWriter::Limits StreamChunkLimits(const ServiceOptions& options);

// Posts the pending calls of each method on `cq` (each call posts its successor).
void PostExecuteCall(ManagementService& service, grpc::ServerCompletionQueue* cq);
void PostStreamCall(ManagementService& service, grpc::ServerCompletionQueue* cq);
void PostSessionCall(ManagementService& service, grpc::ServerCompletionQueue* cq);

}  // namespace sipd::service
