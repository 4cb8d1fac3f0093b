#include "service/management_service.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "registry/proto_convert.h"
#include "service/chunk_writer.h"
#include "service/cq_tag.h"
#include "service/status_mapping.h"
#include "service/unary_call.h"
#include "service/utf8.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

// Longest MI reason copied into grpc-message and sipd-mi-reason, and largest serialized
// error reply put in sipd-mi-reply-bin: trailing metadata must stay well below the
// peers' header-size limit (8 KiB by default).
constexpr size_t kMaxReasonInMetadata = 512;
constexpr size_t kMaxReplyBinBytes = 4096;

// Requests kept posted per completion queue: Execute is the hot path, so several calls
// arriving together are matched at once.
constexpr int kPendingExecutePerQueue = 8;
constexpr int kPendingStreamPerQueue = 2;

const grpc::Status kPoolFull(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             "too many long-running MI calls in progress");

bool DeadlineExpired(const grpc::ServerContext& context) {
  return context.deadline() <= std::chrono::system_clock::now();
}

grpc::Status DeadlineExpiredStatus() {
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      "deadline expired before the command ran");
}

void AddMiMetadata(grpc::ServerContext* context, uint32_t code, std::string_view reason,
                   std::string_view outcome) {
  context->AddTrailingMetadata(kMetadataMiCode, std::to_string(code));
  context->AddTrailingMetadata(kMetadataMiReason, EncodeMetadataText(reason, kMaxReasonInMetadata));
  context->AddTrailingMetadata(kMetadataMiOutcome, std::string(outcome));
}

std::string StatusMessage(std::string_view reason) {
  return std::string(reason.substr(0, kMaxReasonInMetadata));
}

}  // namespace

grpc::Status ParseRequest(const grpc::ByteBuffer& bytes, const ServiceOptions& options,
                          mi::Request* out) {
  grpc::ByteBuffer copy(bytes);  // Deserialize consumes its input; this copy is a ref.
  v1::ExecuteRequest request;
  if (!grpc::SerializationTraits<v1::ExecuteRequest>::Deserialize(&copy, &request).ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "request is not a valid sipd.mi.v1.ExecuteRequest (string fields "
                        "must be UTF-8)");
  }
  return ValidateRequest(request, options, out);
}

grpc::Status ValidateRequest(const v1::ExecuteRequest& in, const ServiceOptions& options,
                             mi::Request* out) {
  if (in.command().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty command name");
  }
  if (in.command().size() > options.max_command_length) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("command name longer than ", options.max_command_length, " bytes"));
  }
  const size_t count = static_cast<size_t>(in.params_size()) + in.args_size();
  if (count > options.max_args) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("too many arguments: ", count, " (at most ", options.max_args, ")"));
  }
  size_t total = in.command().size();
  for (const auto& p : in.params()) total += p.size();
  for (const auto& a : in.args()) total += a.name().size() + a.value().size();
  if (total > options.max_message_size) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("arguments total ", total, " bytes (at most ", options.max_message_size, ")"));
  }
  *out = mi::FromProto(in);
  for (size_t i = 0; i < out->args.size(); ++i) {
    if (out->args[i].name.empty() && out->args[i].value.empty()) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("argument ", i + 1, " is empty (an MI argument needs a name or a value)"));
    }
  }
  return grpc::Status::OK;
}

namespace {

// What Execute and ExecuteStream do first with a call: parse and validate the request,
// then refuse it if its deadline already passed (no command runs for a caller that gave
// up).
grpc::Status AcceptRequest(const grpc::ByteBuffer& bytes, const grpc::ServerContext& context,
                           const ServiceOptions& options, mi::Request* out) {
  grpc::Status status = ParseRequest(bytes, options, out);
  if (status.ok() && DeadlineExpired(context)) status = DeadlineExpiredStatus();
  return status;
}

}  // namespace

mi::CallContext GrpcCallContext(const grpc::ServerContext& context) {
  mi::CallContext call;
  call.transport = mi::Transport::kGrpc;
  call.peer.address = context.peer();
  const auto deadline = context.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = deadline - std::chrono::system_clock::now();
    call.deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
  }
  return call;
}

// One Execute: requested -> dispatched -> (ready now, or later from the completion
// thread) -> finished; deleted once the finish and the "done" tags are both back.
//
// Thread-safety: OnRequest runs on a queue thread, OnReady on the completion thread,
// OnDone on a queue thread; mu_ guards the exchange and the answered flag.
class ManagementService::ExecuteCall final {
 public:
  ExecuteCall(ManagementService* service, grpc::ServerCompletionQueue* cq)
      : service_(service), cq_(cq), responder_(&ctx_) {
    ctx_.AsyncNotifyWhenDone(&done_tag_);
    service_->service_.RequestExecute(&ctx_, &request_, &responder_, cq_, cq_, &request_tag_);
  }

 private:
  void OnRequest(bool ok) {
    if (!ok) {  // the server shuts down; no done tag comes for a call never started
      delete this;
      return;
    }
    new ExecuteCall(service_, cq_);
    mi::Request request;
    grpc::Status status = AcceptRequest(request_, ctx_, service_->options_, &request);
    std::lock_guard<std::mutex> lock(mu_);
    if (!status.ok()) {
      FinishLocked(std::move(status));
      return;
    }
    exchange_ = service_->dispatcher_.Start(GrpcCallContext(ctx_), std::move(request),
                                            mi::Delivery::kTree, nullptr, [this] { OnReady(); });
    // A pending callback keeps this call alive until it has run (or was cancelled).
    if (exchange_->callback_expected()) refs_.fetch_add(1, std::memory_order_relaxed);
    if (exchange_->ready()) AnswerLocked();
  }

  // From the dispatcher's completion thread; may run before OnRequest has stored the
  // exchange (it then waits for mu_).
  void OnReady() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (exchange_ != nullptr && exchange_->ready()) AnswerLocked();
    }
    Unref();
  }

  void AnswerLocked() {
    if (finishing_) return;
    mi::DispatchResult result{exchange_->outcome(), std::move(exchange_->reply())};
    v1::Reply reply;
    grpc::Status status = service_->FinishStatus(&ctx_, result, &reply);
    if (status.ok()) {
      bool own_buffer = false;
      status = grpc::SerializationTraits<v1::Reply>::Serialize(reply, &response_, &own_buffer);
    }
    FinishLocked(std::move(status));
  }

  void FinishLocked(grpc::Status status) {
    finishing_ = true;
    if (status.ok()) {
      responder_.Finish(response_, status, &finish_tag_);
    } else {
      responder_.FinishWithError(status, &finish_tag_);
    }
  }

  void OnDone(bool) {
    bool prevented = false;
    if (ctx_.IsCancelled()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (exchange_ != nullptr) prevented = exchange_->Cancel();
      // Not answered yet: finish anyway so that the finish tag comes back.
      if (!finishing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    }
    if (prevented) Unref();  // the callback's reference: it will not come
    Unref();
  }

  void OnFinishDone(bool) { Unref(); }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  ManagementService* const service_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
  MemberTag<ExecuteCall, &ExecuteCall::OnRequest> request_tag_{this};
  MemberTag<ExecuteCall, &ExecuteCall::OnFinishDone> finish_tag_{this};
  MemberTag<ExecuteCall, &ExecuteCall::OnDone> done_tag_{this};
  // The done tag, the finish tag, and a pending dispatcher callback.
  std::atomic<int> refs_{2};

  std::mutex mu_;
  std::unique_ptr<mi::Exchange> exchange_;
  bool finishing_ = false;
};

// One ExecuteStream. The command runs on a worker thread; its chunks are written one
// at a time (the worker waits for each write), so memory stays bounded by one chunk
// whatever the client's speed. Deleted once both the finish and the "done" tags are
// back.
//
// Thread-safety: Send() and Finish() run on the worker; the tags complete on the queue
// thread; mu_ guards the write state between them.
class ManagementService::StreamCall final {
 public:
  StreamCall(ManagementService* service, grpc::ServerCompletionQueue* cq)
      : service_(service), cq_(cq), writer_(&ctx_) {
    ctx_.AsyncNotifyWhenDone(&done_tag_);
    service_->service_.RequestExecuteStream(&ctx_, &request_, &writer_, cq_, cq_, &request_tag_);
  }

 private:
  void OnRequest(bool ok) {
    if (!ok) {  // the server shuts down; no done tag comes for a call never started
      delete this;
      return;
    }
    new StreamCall(service_, cq_);
    mi::Request request;
    grpc::Status status = AcceptRequest(request_, ctx_, service_->options_, &request);
    if (!status.ok()) {
      Finish(std::move(status));
      return;
    }
    if (!service_->pool_.TrySubmit([this, request = std::move(request)] { Run(request); })) {
      Finish(kPoolFull);
    }
  }

  void Run(const mi::Request& request) {
    if (DeadlineExpired(ctx_)) {
      Finish(DeadlineExpiredStatus());
      return;
    }
    const ServiceOptions& options = service_->options_;
    ChunkReplyWriter::Limits limits;
    limits.max_nodes = options.stream_chunk_nodes;
    limits.max_bytes = options.max_message_size / 4;
    ChunkReplyWriter writer([this](v1::ReplyChunk& chunk) { return Send(chunk); }, limits);
    mi::DispatchResult result = service_->dispatcher_.Run(GrpcCallContext(ctx_), request, &writer);
    if (!writer.broken()) {
      Finish(service_->FinishStatus(&ctx_, result, nullptr));
      return;
    }
    bool timed_out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      timed_out = timed_out_;
    }
    if (timed_out) {
      spdlog::warn("mi_grpc: stream of '{}' stopped: the client took no data for {} ms",
                   request.command, options.stream_write_timeout.count());
      Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "stream write timed out: the client did not read"));
    } else {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
    }
  }

  // The ChunkReplyWriter sink (worker thread). Blocks until the chunk is written.
  bool Send(v1::ReplyChunk& chunk) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || !write_ok_) return false;
    in_flight_.Clear();  // the previous write is done
    bool own_buffer = false;
    if (!grpc::SerializationTraits<v1::ReplyChunk>::Serialize(chunk, &in_flight_, &own_buffer)
             .ok()) {
      return false;
    }
    write_pending_ = true;
    lock.unlock();
    writer_.Write(in_flight_, &write_tag_);
    lock.lock();
    if (!cv_.wait_for(lock, service_->options_.stream_write_timeout,
                      [this] { return !write_pending_; })) {
      timed_out_ = true;
      lock.unlock();
      ctx_.TryCancel();
      lock.lock();
      // A cancelled call completes its pending write (ok = false); in_flight_ must live
      // until then.
      cv_.wait(lock, [this] { return !write_pending_; });
      return false;
    }
    return write_ok_;
  }

  void Finish(grpc::Status status) { writer_.Finish(status, &finish_tag_); }

  void OnWriteDone(bool ok) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_pending_ = false;
      write_ok_ = ok;
    }
    cv_.notify_all();
  }

  void OnDone(bool) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = ctx_.IsCancelled();
    }
    cv_.notify_all();
    Unref();
  }

  void OnFinishDone(bool) { Unref(); }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  ManagementService* const service_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  grpc::ByteBuffer request_;
  grpc::ServerAsyncWriter<grpc::ByteBuffer> writer_;
  MemberTag<StreamCall, &StreamCall::OnRequest> request_tag_{this};
  MemberTag<StreamCall, &StreamCall::OnWriteDone> write_tag_{this};
  MemberTag<StreamCall, &StreamCall::OnFinishDone> finish_tag_{this};
  MemberTag<StreamCall, &StreamCall::OnDone> done_tag_{this};
  // The done tag and the finish tag.
  std::atomic<int> refs_{2};

  std::mutex mu_;
  std::condition_variable cv_;
  grpc::ByteBuffer in_flight_;
  bool write_pending_ = false;
  bool write_ok_ = true;
  bool cancelled_ = false;
  bool timed_out_ = false;
};

grpc::Status ManagementService::ListCommands(const v1::ListCommandsRequest& /*request*/,
                                             v1::ListCommandsResponse* response) const {
  for (const auto& command : registry_.commands()) {
    *response->add_commands() = mi::ToProto(*command);
  }
  return grpc::Status::OK;
}

grpc::Status ManagementService::DescribeCommand(const v1::DescribeCommandRequest& request,
                                                v1::CommandInfo* response) const {
  if (request.command().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty command name");
  }
  const mi::Command* command = registry_.Find(request.command());
  if (command == nullptr) {
    const std::string name = request.command().substr(0, options_.max_command_length);
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("command '", name, "' not available"));
  }
  *response = mi::ToProto(*command);
  return grpc::Status::OK;
}

ManagementService::ManagementService(mi::Dispatcher& dispatcher, ServiceOptions options)
    : dispatcher_(dispatcher),
      registry_(dispatcher.registry()),
      options_(std::move(options)),
      pool_(options_.workers, options_.max_queued) {}

ManagementService::~ManagementService() { StopWorkers(); }

void ManagementService::StopWorkers() { pool_.Stop(); }

void ManagementService::Serve(grpc::ServerCompletionQueue* cq) {
  for (int i = 0; i < kPendingExecutePerQueue; ++i) new ExecuteCall(this, cq);
  for (int i = 0; i < kPendingStreamPerQueue; ++i) new StreamCall(this, cq);
  // ListCommands and DescribeCommand are cheap, read-only registry lookups: answered on
  // the queue thread, never on the worker pool.
  new UnaryCall<ManagementService, AsyncService, v1::ListCommandsRequest, v1::ListCommandsResponse>(
      this, &service_, cq, &AsyncService::RequestListCommands, &ManagementService::ListCommands);
  new UnaryCall<ManagementService, AsyncService, v1::DescribeCommandRequest, v1::CommandInfo>(
      this, &service_, cq, &AsyncService::RequestDescribeCommand,
      &ManagementService::DescribeCommand);
}

grpc::Status ManagementService::FinishStatus(grpc::ServerContext* context,
                                             mi::DispatchResult& result,
                                             v1::Reply* response) const {
  mi::Reply& reply = result.reply;
  switch (result.outcome) {
    case mi::Outcome::kNotAvailable:
      AddMiMetadata(context, reply.code, reply.reason, kOutcomeNotAvailable);
      return grpc::Status(grpc::StatusCode::NOT_FOUND, StatusMessage(reply.reason));
    case mi::Outcome::kFailed:
    case mi::Outcome::kParseError:
      AddMiMetadata(context, reply.code, reply.reason, kOutcomeFailed);
      return grpc::Status(grpc::StatusCode::INTERNAL, StatusMessage(reply.reason));
    case mi::Outcome::kReply:
      break;
  }
  const grpc::StatusCode code = MiCodeToStatusCode(reply.code);
  AddMiMetadata(context, reply.code, reply.reason, kOutcomeReply);
  if (code == grpc::StatusCode::OK) {
    if (response != nullptr) {
      *response = mi::ToProto(reply);
      SanitizeUtf8(response);
      const size_t bytes = response->ByteSizeLong();
      if (bytes > options_.max_message_size) {
        response->Clear();
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("reply of ", bytes, " bytes exceeds max_message_size (",
                                         options_.max_message_size, "): use ExecuteStream"));
      }
    }
    return grpc::Status::OK;
  }
  if (response != nullptr) {
    v1::Reply error_reply = mi::ToProto(reply);
    SanitizeUtf8(&error_reply);
    if (error_reply.ByteSizeLong() > kMaxReplyBinBytes) {
      error_reply.clear_nodes();
      if (error_reply.reason().size() > kMaxReasonInMetadata) {
        error_reply.mutable_reason()->resize(kMaxReasonInMetadata);
        SanitizeUtf8(error_reply.mutable_reason());
      }
    }
    context->AddTrailingMetadata(kMetadataMiReplyBin, error_reply.SerializeAsString());
  }
  return grpc::Status(code, StatusMessage(reply.reason));
}

}  // namespace sipd::service
