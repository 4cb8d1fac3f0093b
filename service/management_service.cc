#include "service/management_service.h"

#include <condition_variable>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "registry/proto_convert.h"
#include "service/chunk_writer.h"
#include "service/status_mapping.h"
#include "service/utf8.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

// Longest MI reason copied into grpc-message and sipd-mi-reason, and largest serialized
// error reply put in sipd-mi-reply-bin: trailing metadata must stay well below the
// peers' header-size limit (8 KiB by default).
constexpr size_t kMaxReasonInMetadata = 512;
constexpr size_t kMaxReplyBinBytes = 4096;

bool DeadlineExpired(const grpc::CallbackServerContext* context) {
  return context->deadline() <= std::chrono::system_clock::now();
}

grpc::Status DeadlineExpiredStatus() {
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      "deadline expired before the command ran");
}

bool MayBlock(const mi::Command& command) {
  return command.has_flag(mi::kAsync) || command.has_flag(mi::kStreaming);
}

void AddMiMetadata(grpc::CallbackServerContext* context, uint32_t code, std::string_view reason,
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

// One ExecuteStream call. Created on a gRPC thread, run on a worker thread, deleted in
// OnDone() (which gRPC calls only after Finish(), and Finish() is Run()'s last act).
//
// Thread-safety: Send() runs on the worker; OnWriteDone()/OnCancel() on gRPC threads;
// mu_ guards the write state between them.
class ManagementService::StreamCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  StreamCall(ManagementService* service, grpc::CallbackServerContext* context, mi::Request request)
      : service_(service), context_(context), request_(std::move(request)) {}

  void Run() {
    if (DeadlineExpired(context_)) {
      Finish(DeadlineExpiredStatus());
      return;
    }
    const ServiceOptions& options = service_->options_;
    ChunkReplyWriter::Limits limits;
    limits.max_nodes = options.stream_chunk_nodes;
    limits.max_bytes = options.max_message_size / 4;
    ChunkReplyWriter writer([this](v1::ReplyChunk& chunk) { return Send(chunk); }, limits);
    mi::DispatchResult result = mi::Dispatch(service_->registry_, request_, &writer);
    if (writer.broken()) {
      bool timed_out;
      {
        std::lock_guard<std::mutex> lock(mu_);
        timed_out = timed_out_;
      }
      // No lock held from here: Finish() may run OnDone() (delete this) at once.
      if (timed_out) {
        spdlog::warn("mi_grpc: stream of '{}' stopped: the client took no data for {} ms",
                     request_.command, options.stream_write_timeout.count());
        Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "stream write timed out: the client did not read"));
      } else {
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
      }
      return;
    }
    Finish(service_->FinishStatus(context_, result, nullptr));
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_pending_ = false;
      write_ok_ = ok;
    }
    cv_.notify_all();
  }

  void OnCancel() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
    }
    cv_.notify_all();
  }

  void OnDone() override { delete this; }

 private:
  // The ChunkReplyWriter sink: one write in flight at a time, so memory stays bounded
  // by one chunk whatever the client's speed.
  bool Send(v1::ReplyChunk& chunk) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_ || !write_ok_) return false;
    bool own_buffer = false;
    in_flight_.Clear();  // the previous write is done
    if (!grpc::SerializationTraits<v1::ReplyChunk>::Serialize(chunk, &in_flight_, &own_buffer)
             .ok()) {
      return false;
    }
    write_pending_ = true;
    lock.unlock();
    StartWrite(&in_flight_);
    lock.lock();
    if (!cv_.wait_for(lock, service_->options_.stream_write_timeout,
                      [this] { return !write_pending_; })) {
      timed_out_ = true;
      lock.unlock();
      context_->TryCancel();
      lock.lock();
      // A cancelled call completes its pending write (ok = false); in_flight_ must
      // live until then.
      cv_.wait(lock, [this] { return !write_pending_; });
      return false;
    }
    return write_ok_;
  }

  ManagementService* const service_;
  grpc::CallbackServerContext* const context_;
  const mi::Request request_;

  std::mutex mu_;
  std::condition_variable cv_;
  grpc::ByteBuffer in_flight_;
  bool write_pending_ = false;
  bool write_ok_ = true;
  bool cancelled_ = false;
  bool timed_out_ = false;
};

ManagementService::ManagementService(const mi::Registry& registry, ServiceOptions options)
    : registry_(registry),
      options_(std::move(options)),
      pool_(options_.threads, options_.max_queued) {}

ManagementService::~ManagementService() { Stop(); }

void ManagementService::Stop() { pool_.Stop(); }

grpc::Status ManagementService::FinishStatus(grpc::CallbackServerContext* context,
                                             mi::DispatchResult& result,
                                             v1::Reply* response) const {
  mi::Reply& reply = result.reply;
  switch (result.outcome) {
    case mi::Outcome::kNotAvailable:
      AddMiMetadata(context, reply.code, reply.reason, kOutcomeNotAvailable);
      return grpc::Status(grpc::StatusCode::NOT_FOUND, StatusMessage(reply.reason));
    case mi::Outcome::kFailed:
      AddMiMetadata(context, reply.code, reply.reason, kOutcomeFailed);
      return grpc::Status(grpc::StatusCode::INTERNAL, StatusMessage(reply.reason));
    case mi::Outcome::kReply:
      break;
  }
  const grpc::StatusCode code = MiCodeToStatusCode(reply.code);
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
    AddMiMetadata(context, reply.code, reply.reason, kOutcomeReply);
    return grpc::Status::OK;
  }
  AddMiMetadata(context, reply.code, reply.reason, kOutcomeReply);
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

void ManagementService::RunExecute(grpc::CallbackServerContext* context, const mi::Request& request,
                                   grpc::ByteBuffer* response, grpc::ServerUnaryReactor* reactor) {
  mi::DispatchResult result = mi::Dispatch(registry_, request);
  v1::Reply reply;
  grpc::Status status = FinishStatus(context, result, &reply);
  if (status.ok()) {
    bool own_buffer = false;
    status = grpc::SerializationTraits<v1::Reply>::Serialize(reply, response, &own_buffer);
  }
  reactor->Finish(std::move(status));
}

grpc::ServerUnaryReactor* ManagementService::Execute(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  mi::Request mi_request;
  if (grpc::Status status = ParseRequest(*request, options_, &mi_request); !status.ok()) {
    reactor->Finish(std::move(status));
    return reactor;
  }
  if (DeadlineExpired(context)) {
    reactor->Finish(DeadlineExpiredStatus());
    return reactor;
  }
  const mi::Command* command = registry_.Find(mi_request.command);
  if (command == nullptr || !MayBlock(*command)) {
    RunExecute(context, mi_request, response, reactor);
    return reactor;
  }
  const bool queued =
      pool_.TrySubmit([this, context, response, reactor, mi_request = std::move(mi_request)]() {
        if (DeadlineExpired(context) || context->IsCancelled()) {
          reactor->Finish(DeadlineExpiredStatus());
          return;
        }
        RunExecute(context, mi_request, response, reactor);
      });
  if (!queued) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "too many long-running MI calls in progress"));
  }
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ManagementService::ExecuteStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  mi::Request mi_request;
  grpc::Status status = ParseRequest(*request, options_, &mi_request);
  if (status.ok() && DeadlineExpired(context)) status = DeadlineExpiredStatus();
  if (!status.ok()) {
    class Rejected final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
     public:
      explicit Rejected(grpc::Status s) { Finish(std::move(s)); }
      void OnDone() override { delete this; }
    };
    return new Rejected(std::move(status));
  }
  auto* call = new StreamCall(this, context, std::move(mi_request));
  if (!pool_.TrySubmit([call] { call->Run(); })) {
    call->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "too many long-running MI calls in progress"));
  }
  return call;
}

grpc::ServerUnaryReactor* ManagementService::ListCommands(grpc::CallbackServerContext* context,
                                                          const v1::ListCommandsRequest*,
                                                          v1::ListCommandsResponse* response) {
  for (const auto& command : registry_.commands()) {
    *response->add_commands() = mi::ToProto(*command);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ManagementService::DescribeCommand(
    grpc::CallbackServerContext* context, const v1::DescribeCommandRequest* request,
    v1::CommandInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->command().empty()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty command name"));
    return reactor;
  }
  const mi::Command* command = registry_.Find(request->command());
  if (command == nullptr) {
    const std::string name = request->command().substr(0, options_.max_command_length);
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("command '", name, "' not available")));
    return reactor;
  }
  *response = mi::ToProto(*command);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sipd::service
