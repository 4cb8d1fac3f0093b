#include "service/management_service.h"

#include <unistd.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "registry/proto_convert.h"
#include "service/async_call.h"
#include "service/call_anchor.h"
#include "service/call_support.h"
#include "service/cq_tag.h"
#include "service/rich_status.h"
#include "service/status_mapping.h"
#include "service/unary_call.h"
#include "service/utf8.h"
#include "spdlog/spdlog.h"

// gRPC core's accessor of the flags of the message a call received last (libgrpc.so
// exports it with C++ linkage; its header, src/core/lib/surface/call_test_only.h, is not
// installed). Despite its name it is the only way to see a message's Compressed-Flag
// from the C++ API; CheckMessageFraming uses it.
uint32_t grpc_call_test_only_get_message_flags(grpc_call* call);

namespace sipd::service {
namespace {

// Largest serialized error reply put in sipd-mi-reply-bin (see kMaxReasonInMetadata).
constexpr size_t kMaxReplyBinBytes = 4096;

// Requests kept posted per completion queue: Execute is the hot path, so several calls
// arriving together are matched at once.
constexpr int kPendingExecutePerQueue = 8;
constexpr int kPendingStreamPerQueue = 2;
constexpr int kPendingSessionPerQueue = 2;

bool DeadlineExpired(const grpc::ServerContext& context) {
  return context.deadline() <= std::chrono::system_clock::now();
}

void AddMiMetadata(grpc::ServerContext* context, uint32_t code, std::string_view reason,
                   std::string_view outcome) {
  context->AddTrailingMetadata(kMetadataMiCode, std::to_string(code));
  context->AddTrailingMetadata(kMetadataMiReason, EncodeMetadataText(reason, kMaxReasonInMetadata));
  context->AddTrailingMetadata(kMetadataMiOutcome, std::string(outcome));
}

}  // namespace

grpc::Status DeadlineExpiredStatus() {
  return TransportError(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "deadline expired before the command ran", kReasonDeadlineExpired);
}

std::string StatusMessage(std::string_view reason) {
  return std::string(reason.substr(0, kMaxReasonInMetadata));
}

grpc::Status ParseRequest(const grpc::ByteBuffer& bytes, const ServiceOptions& options,
                          mi::Request* out) {
  grpc::ByteBuffer copy(bytes);  // Deserialize consumes its input; this copy is a ref.
  v1::ExecuteRequest request;
  if (!grpc::SerializationTraits<v1::ExecuteRequest>::Deserialize(&copy, &request).ok()) {
    return TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                          "request is not a valid sipd.mi.v1.ExecuteRequest (string fields "
                          "must be UTF-8)",
                          kReasonInvalidRequest);
  }
  return ValidateRequest(request, options, out);
}

namespace {

// ExecuteRequest and SessionRequest carry the same command, params and args fields.
template <typename Message>
grpc::Status Validate(const Message& in, const ServiceOptions& options, mi::Request* out) {
  if (in.command().empty()) {
    return TransportError(grpc::StatusCode::INVALID_ARGUMENT, "empty command name",
                          kReasonInvalidRequest, "command");
  }
  if (in.command().size() > options.max_command_length) {
    return TransportError(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("command name longer than ", options.max_command_length, " bytes"),
        kReasonInvalidRequest, "command");
  }
  const size_t count = static_cast<size_t>(in.params_size()) + in.args_size();
  if (count > options.max_args) {
    return TransportError(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("too many arguments: ", count, " (at most ", options.max_args, ")"),
        kReasonInvalidRequest, "params");
  }
  size_t total = in.command().size();
  for (const auto& p : in.params()) total += p.size();
  for (const auto& a : in.args()) total += a.name().size() + a.value().size();
  if (total > options.max_message_size) {
    return TransportError(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("arguments total ", total, " bytes (at most ", options.max_message_size, ")"),
        kReasonInvalidRequest, "params");
  }
  out->command = in.command();
  out->args_error = absl::OkStatus();
  out->args.clear();
  out->args.reserve(count);
  for (const auto& p : in.params()) out->args.push_back(mi::Argument{"", p});
  for (const auto& a : in.args()) out->args.push_back(mi::Argument{a.name(), a.value()});
  for (size_t i = 0; i < out->args.size(); ++i) {
    if (out->args[i].name.empty() && out->args[i].value.empty()) {
      const size_t params = static_cast<size_t>(in.params_size());
      return TransportError(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("argument ", i + 1, " is empty (an MI argument needs a name or a value)"),
          kReasonInvalidRequest,
          i < params ? absl::StrCat("params[", i, "]") : absl::StrCat("args[", i - params, "]"));
    }
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ValidateRequest(const v1::ExecuteRequest& in, const ServiceOptions& options,
                             mi::Request* out) {
  return Validate(in, options, out);
}

grpc::Status ValidateRequest(const v1::SessionRequest& in, const ServiceOptions& options,
                             mi::Request* out) {
  return Validate(in, options, out);
}

grpc::Status CheckMessageFraming(grpc::ServerContext& context) {
  // Flag bit 1 of a received message is GRPC_WRITE_INTERNAL_COMPRESS (core's
  // src/core/lib/transport/transport.h: the Compressed-Flag). The decompression filter
  // clears it once it has decompressed a message with the call's grpc-encoding, so it is
  // still set only when no decompression took place.
  constexpr uint32_t kInternalCompress = 0x80000000u;
  if (context.c_call() == nullptr) return grpc::Status::OK;
  if ((grpc_call_test_only_get_message_flags(context.c_call()) & kInternalCompress) == 0) {
    return grpc::Status::OK;
  }
  return TransportError(grpc::StatusCode::INTERNAL,
                        "message flagged compressed without grpc-encoding", kReasonFraming);
}

grpc::Status AcceptRequest(const grpc::ByteBuffer& bytes, grpc::ServerContext& context,
                           const ServiceOptions& options, mi::Request* out) {
  if (grpc::Status framing = CheckMessageFraming(context); !framing.ok()) return framing;
  grpc::Status status = ParseRequest(bytes, options, out);
  if (status.ok() && DeadlineExpired(context)) status = DeadlineExpiredStatus();
  return status;
}

mi::CallContext GrpcCallContext(const grpc::ServerContext& context) {
  mi::CallContext call;
  call.transport = mi::Transport::kGrpc;
  call.peer.address = context.peer();
  // "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path".
  const std::string_view peer = call.peer.address;
  if (peer.starts_with("unix:")) {
    // The socket file is 0600 (mi_grpc's listen): only sipd's user (and root) connect.
    call.peer.local = true;
    call.peer.uid = geteuid();
  } else if (peer.starts_with("ipv4:")) {
    call.peer.local = mi::IsLoopbackHost(peer.substr(5, peer.rfind(':') - 5));
  } else if (peer.starts_with("ipv6:[")) {
    call.peer.local = mi::IsLoopbackHost(peer.substr(6, peer.rfind(']') - 6));
  }
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    call.peer.token =
        mi::TokenFromAuthorization(std::string_view(it->second.data(), it->second.size()));
  }
  // A client certificate is there only when the TLS handshake verified it (mi_grpc asks
  // for client certificates with *_AND_VERIFY only).
  if (const auto auth = context.auth_context(); auth != nullptr) {
    const std::vector<grpc::string_ref> subject = auth->FindPropertyValues("x509_subject");
    if (!subject.empty())
      call.peer.tls_subject.assign(subject.front().data(), subject.front().size());
  }
  const auto deadline = context.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = deadline - std::chrono::system_clock::now();
    call.deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
  }
  return call;
}

grpc::Status ExchangeStatus(grpc::ServerContext* context, mi::Exchange& exchange) {
  const mi::Outcome outcome = exchange.outcome();
  const mi::Reply& reply = exchange.reply();
  AddMiMetadata(context, reply.code, reply.reason, OutcomeName(outcome));
  const grpc::StatusCode code = OutcomeStatusCode(outcome, reply);
  if (code == grpc::StatusCode::OK) return grpc::Status::OK;
  return MiErrorStatus(code, reply, OutcomeName(outcome));
}

ChunkReplyWriter::Limits StreamChunkLimits(const ServiceOptions& options) {
  ChunkReplyWriter::Limits limits;
  limits.max_nodes = options.stream_chunk_nodes;
  limits.max_bytes = std::min(options.stream_chunk_bytes, options.max_message_size / 2);
  return limits;
}

namespace {

// The answer of a finished Execute: OK with the serialized reply in `response`, or the
// error status; trailing metadata in both cases (see mi.proto).
grpc::Status ExecuteAnswer(grpc::ServerContext* context, mi::Exchange& exchange,
                           const ServiceOptions& options, grpc::ByteBuffer* response) {
  grpc::Status status = ExchangeStatus(context, exchange);
  const mi::Reply& reply = exchange.reply();
  if (status.ok()) {
    v1::Reply out = mi::ToProto(reply);
    SanitizeUtf8(&out);
    const size_t bytes = out.ByteSizeLong();
    if (bytes > options.max_message_size) {
      return TransportError(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("reply of ", bytes, " bytes exceeds max_message_size (",
                                         options.max_message_size, "): use ExecuteStream"),
                            kReasonReplyTooLarge);
    }
    bool own_buffer = false;
    return grpc::SerializationTraits<v1::Reply>::Serialize(out, response, &own_buffer);
  }
  if (exchange.outcome() == mi::Outcome::kReply) {
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
  return status;
}

// One Execute: requested -> dispatched -> (ready now, or later from the completion
// thread) -> finished; deleted once the finish and the "done" tags (and the stall
// alarm of a large reply) are back. A call cancelled before its answer (client gone,
// deadline) cancels its exchange and finishes CANCELLED at once.
//
// The lifecycle (tags, references, done, alarm, deletion) is AsyncCall's; the unary
// responder finishes with the response message, so the call has its own FinishLocked.
//
// Thread-safety: OnRequest runs on a queue thread, OnReady on the completion thread,
// the other tags on the queue thread; the anchor's mutex guards everything below it.
class ExecuteCall final
    : public AsyncCall<ExecuteCall, grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>> {
 public:
  ExecuteCall(ManagementService& service, grpc::ServerCompletionQueue* cq)
      : AsyncCall(this, cq, service.live_calls()), service_(service) {
    service_.async_service().RequestExecute(&ctx_, &request_, &stream_, cq_, cq_, &request_tag_);
  }

 private:
  friend Base;

  void OnRequest() {
    PostExecuteCall(service_, cq_);
    mi::Request request;
    grpc::Status status = AcceptRequest(request_, ctx_, service_.options(), &request);
    std::lock_guard<std::mutex> lock(anchor_->mu);
    if (!status.ok()) {
      FinishLocked(std::move(status));
      return;
    }
    exchange_ = service_.dispatcher().Start(
        GrpcCallContext(ctx_), std::move(request), mi::Delivery::kTree, nullptr,
        [anchor = anchor_] { anchor->Run([](ExecuteCall& call) { call.OnReadyLocked(); }); });
    if (exchange_->ready()) AnswerLocked();
  }

  void OnReadyLocked() {
    if (exchange_ != nullptr && exchange_->ready()) AnswerLocked();
  }

  void AnswerLocked() {
    if (finishing_) return;
    FinishLocked(ExecuteAnswer(&ctx_, *exchange_, service_.options(), &response_));
    if (finishing_ && response_.Length() >= kLargeReplyBytes) {
      // A large reply may wait for a client that does not read: bound that wait.
      SetAlarmLocked(std::chrono::system_clock::now() + service_.options().stream_write_timeout);
    }
  }

  // Hides AsyncCall::FinishLocked: OK carries response_. REQUIRES: !finishing_.
  void FinishLocked(const grpc::Status& status) {
    finishing_ = true;
    AddRefLocked();
    if (status.ok()) {
      stream_.Finish(response_, status, &finish_tag_);
    } else {
      stream_.FinishWithError(WithErrorDetails(status), &finish_tag_);
    }
  }

  void OnDoneLocked() {
    if (ctx_.IsCancelled()) {
      if (exchange_ != nullptr) exchange_->Cancel();
      // Cancelled before the answer: finish now, so the finish tag comes back.
      if (!finishing_) {
        FinishLocked(
            TransportError(grpc::StatusCode::CANCELLED, "call cancelled", kReasonCancelled));
      }
    }
  }

  void OnAlarmLocked(bool fired) {
    if (fired && !finish_done_) {
      spdlog::warn("mi_grpc: Execute reply of {} bytes not taken in {} ms: call cut",
                   response_.Length(), service_.options().stream_write_timeout.count());
      service_.CountCut();
      ctx_.TryCancel();
    }
  }

  ManagementService& service_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;

  // Guarded by anchor_->mu once the request arrived.
  std::unique_ptr<mi::Exchange> exchange_;
};

}  // namespace

void PostExecuteCall(ManagementService& service, grpc::ServerCompletionQueue* cq) {
  new ExecuteCall(service, cq);
}

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
    return TransportError(grpc::StatusCode::INVALID_ARGUMENT, "empty command name",
                          kReasonInvalidRequest, "command");
  }
  const mi::Command* command = registry_.Find(request.command());
  if (command == nullptr) {
    const std::string name = request.command().substr(0, options_.max_command_length);
    return TransportError(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("command '", name, "' not available"),
                          kReasonUnknownCommand);
  }
  *response = mi::ToProto(*command);
  return grpc::Status::OK;
}

ManagementService::ManagementService(mi::Dispatcher& dispatcher, ServiceOptions options)
    : dispatcher_(dispatcher), registry_(dispatcher.registry()), options_(std::move(options)) {}

void ManagementService::Serve(grpc::ServerCompletionQueue* cq) {
  for (int i = 0; i < kPendingExecutePerQueue; ++i) PostExecuteCall(*this, cq);
  for (int i = 0; i < kPendingStreamPerQueue; ++i) PostStreamCall(*this, cq);
  for (int i = 0; i < kPendingSessionPerQueue; ++i) PostSessionCall(*this, cq);
  // ListCommands and DescribeCommand are cheap, read-only registry lookups: answered on
  // the queue thread.
  new UnaryCall<ManagementService, AsyncService, v1::ListCommandsRequest, v1::ListCommandsResponse>(
      this, &service_, cq, &AsyncService::RequestListCommands, &ManagementService::ListCommands);
  new UnaryCall<ManagementService, AsyncService, v1::DescribeCommandRequest, v1::CommandInfo>(
      this, &service_, cq, &AsyncService::RequestDescribeCommand,
      &ManagementService::DescribeCommand);
}

}  // namespace sipd::service
