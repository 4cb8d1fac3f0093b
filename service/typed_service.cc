// TypedCall: one call of a typed method (see typed_service.h), a completion-queue state
// machine like ExecuteCall and StreamCall:
//
//   requested -> Read(request) -> convert -> Start(kTree | kPull)
//     unary:     [ready] -> FromReply -> WriteAndFinish(response, OK) | Finish(error)
//     streaming: [ready] -> WriteNext(items -> one message) -> Write -> write done -> ...
//                -> last part: WriteAndFinish(last message, status) | Finish(status)
//   -> finish done (and the done tag) -> deleted
//
// Thread-safety: tags complete on the call's queue thread, on_ready on the dispatcher's
// completion thread; the anchor's mutex guards the state.
#include "service/typed_service.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "registry/typed_method.h"
#include "service/async_call.h"
#include "service/call_anchor.h"
#include "service/call_support.h"
#include "service/cq_tag.h"
#include "service/rich_status.h"
#include "service/status_mapping.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

using Clock = std::chrono::steady_clock;

// Calls kept posted per completion queue.
constexpr int kPendingTypedPerQueue = 4;

grpc::Status ConversionFailed(const mi::TypedMethod& method, const absl::Status& why) {
  spdlog::error("mi_grpc: {}: reply conversion failed: {}", method.full_name(), why.ToString());
  return TransportError(
      grpc::StatusCode::INTERNAL,
      absl::StrCat("the reply of ", method.full_name(), " could not be converted: ", why.message()),
      kReasonConversion);
}

class TypedCall final : public AsyncCall<TypedCall, grpc::GenericServerAsyncReaderWriter,
                                         grpc::GenericServerContext> {
 public:
  TypedCall(TypedService& service, grpc::ServerCompletionQueue* cq)
      : AsyncCall(this, cq, service.management().live_calls()),
        service_(service),
        options_(service.management().options()) {
    service_.generic_service()->RequestCall(&ctx_, &stream_, cq_, cq_, &request_tag_);
  }

 private:
  friend Base;

  void OnRequest() {
    new TypedCall(service_, cq_);
    std::lock_guard<std::mutex> lock(anchor_->mu);
    const std::optional<mi::TypedBinding> binding =
        service_.management().dispatcher().registry().FindTyped(ctx_.method());
    if (!binding.has_value()) {
      FinishLocked(TransportError(grpc::StatusCode::UNIMPLEMENTED,
                                  absl::StrCat("unknown method ", ctx_.method()),
                                  kReasonUnknownMethod));
      return;
    }
    binding_ = *binding;
    AddRefLocked();
    reading_ = true;
    stream_.Read(&in_, &read_tag_);
  }

  void OnRead(bool ok) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    reading_ = false;
    if (!finishing_) StartLocked(ok);
    Unref(lock);
  }

  void StartLocked(bool have_message) {
    const mi::TypedMethod& method = *binding_.method;
    if (!have_message) {
      FinishLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                                  "the call ended before its request message",
                                  kReasonInvalidRequest));
      return;
    }
    if (grpc::Status framing = CheckMessageFraming(ctx_); !framing.ok()) {
      FinishLocked(std::move(framing));
      return;
    }
    request_ = method.NewRequest();
    if (in_.Length() > options_.max_message_size ||
        !grpc::SerializationTraits<google::protobuf::Message>::Deserialize(&in_, request_.get())
             .ok()) {
      FinishLocked(TransportError(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("request is not a valid ", request_->GetDescriptor()->full_name(),
                       " (string fields must be UTF-8)"),
          kReasonInvalidRequest));
      return;
    }
    in_.Clear();
    if (ctx_.deadline() <= std::chrono::system_clock::now()) {
      FinishLocked(DeadlineExpiredStatus());
      return;
    }
    absl::StatusOr<std::vector<mi::Argument>> args = method.ToArguments(*request_);
    if (!args.ok()) {
      const std::string field = mi::FieldOfError(args.status());
      if (field.empty()) {
        FinishLocked(ConversionFailed(method, args.status()));
      } else {
        FinishLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                                    std::string(args.status().message()), kReasonInvalidRequest,
                                    field));
      }
      return;
    }
    mi::Request request;
    request.command = binding_.command->name();
    request.args = std::move(*args);
    streaming_ = method.kind() == mi::TypedMethod::Kind::kServerStream;
    if (streaming_) {
      deadline_ = Clock::now() + options_.reply_timeout;
      ArmLocked(Clock::now() + options_.stream_write_timeout);
      assembler_.emplace(method.item_depth(),
                         [this](const mi::Ancestors& ancestors, const mi::Node& item) {
                           AddItemLocked(ancestors, item);
                         });
    }
    exchange_ = service_.management().dispatcher().Start(
        GrpcCallContext(ctx_), std::move(request),
        streaming_ ? mi::Delivery::kPull : mi::Delivery::kTree, nullptr,
        [anchor = anchor_] { anchor->Run([](TypedCall& call) { call.OnReadyLocked(); }); });
    OnReadyLocked();
  }

  void OnReadyLocked() {
    if (finishing_ || cut_ || exchange_ == nullptr || !exchange_->ready()) return;
    if (streaming_) {
      PumpLocked();
    } else {
      AnswerLocked();
    }
  }

  // The status of a finished exchange whose reply is not a success (nullopt: success).
  std::optional<grpc::Status> ErrorOf(mi::Exchange& exchange) const {
    const grpc::StatusCode code = OutcomeStatusCode(exchange.outcome(), exchange.reply());
    if (code == grpc::StatusCode::OK) return std::nullopt;
    return MiErrorStatus(code, exchange.reply(), OutcomeName(exchange.outcome()));
  }

  // --- unary -----------------------------------------------------------------------

  void AnswerLocked() {
    if (std::optional<grpc::Status> error = ErrorOf(*exchange_)) {
      FinishLocked(std::move(*error));
      return;
    }
    const mi::TypedMethod& method = *binding_.method;
    std::unique_ptr<google::protobuf::Message> response = method.NewResponse();
    if (absl::Status converted = method.FromReply(*request_, exchange_->reply(), *response);
        !converted.ok()) {
      FinishLocked(ConversionFailed(method, converted));
      return;
    }
    if (!SerializeLocked(*response)) return;
    StartWriteAndFinishLocked(out_, grpc::Status::OK);
    if (out_.Length() >= kLargeReplyBytes) {
      // A large reply may wait for a client that does not read: bound that wait.
      send_started_ = Clock::now();
      ArmLocked(send_started_ + options_.stream_write_timeout);
    }
  }

  // Serializes into out_; on failure finishes the call and returns false.
  bool SerializeLocked(const google::protobuf::Message& message) {
    const size_t bytes = message.ByteSizeLong();
    if (bytes > options_.max_message_size) {
      if (exchange_ != nullptr) exchange_->Cancel();
      FinishLocked(TransportError(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("response of ", bytes, " bytes exceeds max_message_size (",
                       options_.max_message_size, ")",
                       streaming_ ? "" : ": use the streaming method or smaller pages"),
          kReasonReplyTooLarge));
      return false;
    }
    out_.Clear();  // gRPC holds its own reference to the bytes of the previous write
    bool own_buffer = false;
    grpc::Status serialized = grpc::SerializationTraits<google::protobuf::Message>::Serialize(
        message, &out_, &own_buffer);
    if (!serialized.ok()) {
      if (exchange_ != nullptr) exchange_->Cancel();
      FinishLocked(WithErrorDetails(serialized, kReasonConversion));
      return false;
    }
    return true;
  }

  // --- server streaming ------------------------------------------------------------

  void AddItemLocked(const mi::Ancestors& ancestors, const mi::Node& item) {
    if (!conversion_error_.ok()) return;
    if (current_ == nullptr) current_ = binding_.method->NewResponse();
    conversion_error_ = binding_.method->AddItem(*request_, ancestors, item, *current_);
  }

  // Sends the next message, pulling the next part of the reply when none is queued.
  void PumpLocked() {
    if (writing_ || finishing_ || cut_) return;
    while (pending_.empty() && !produced_all_) {
      produced_all_ = exchange_->WriteNext(*assembler_);
      if (!conversion_error_.ok()) {
        exchange_->Cancel();
        FinishLocked(ConversionFailed(*binding_.method, conversion_error_));
        return;
      }
      // A part whose items were all filtered out sends nothing.
      if (current_ != nullptr && current_->ByteSizeLong() > 0) {
        pending_.push_back(std::move(current_));
      }
      current_.reset();
    }
    if (pending_.empty()) {
      FinishLocked(ErrorOf(*exchange_).value_or(grpc::Status::OK));
      return;
    }
    std::unique_ptr<google::protobuf::Message> message = std::move(pending_.front());
    pending_.pop_front();
    if (!SerializeLocked(*message)) return;
    send_started_ = Clock::now();
    if (pending_.empty() && produced_all_) {
      // The last message and the status in one batch.
      StartWriteAndFinishLocked(out_,
                                WithErrorDetails(ErrorOf(*exchange_).value_or(grpc::Status::OK)));
    } else {
      StartWriteLocked(out_);
    }
  }

  void OnWriteDoneLocked(bool ok) {
    if (!ok || cut_) {  // the stream is gone (client cancelled, or we cut it)
      if (exchange_ != nullptr) exchange_->Cancel();
      FinishLocked(
          TransportError(grpc::StatusCode::CANCELLED, "stream cancelled", kReasonCancelled));
    } else {
      PumpLocked();
    }
  }

  // --- end ---------------------------------------------------------------------------

  void OnDoneLocked() {
    if (ctx_.IsCancelled()) {
      if (exchange_ != nullptr) exchange_->Cancel();
      if (!writing_ && !reading_) {
        FinishLocked(
            TransportError(grpc::StatusCode::CANCELLED, "call cancelled", kReasonCancelled));
      }
    }
  }

  // Armed while a stream runs or a large reply is sent: the next moment a limit could be
  // passed (stall of the write in progress, the total deadline, one stall period on).
  void ArmLocked(Clock::time_point when) { SetAlarmLocked(std::min(when, deadline_)); }

  void OnAlarmLocked(bool fired) {
    if (fired && !finish_done_ && !done_ && !cut_) {
      const Clock::time_point now = Clock::now();
      if (now >= deadline_) {
        CutLocked(
            absl::StrCat("not over after reply_timeout (", options_.reply_timeout.count(), " ms)"));
      } else if (writing_ && now - send_started_ >= options_.stream_write_timeout) {
        CutLocked(absl::StrCat("the client took no data for ",
                               options_.stream_write_timeout.count(), " ms"));
      } else if (streaming_ || writing_) {
        ArmLocked(writing_ ? send_started_ + options_.stream_write_timeout
                           : now + options_.stream_write_timeout);
      }
    }
  }

  void CutLocked(const std::string& why) {
    spdlog::warn("mi_grpc: {} from {} cut: {}", ctx_.method(), ctx_.peer(), why);
    cut_ = true;
    service_.management().CountCut();
    if (exchange_ != nullptr) exchange_->Cancel();
    pending_.clear();
    ctx_.TryCancel();
    if (!writing_) {
      FinishLocked(TransportError(grpc::StatusCode::CANCELLED, "call cut: " + why, kReasonCallCut));
    }
  }

  TypedService& service_;
  const ServiceOptions& options_;
  MemberTag<TypedCall, &TypedCall::OnRead> read_tag_{this};

  // Guarded by anchor_->mu once the call arrived. Besides the base's references, the
  // request's read holds one.
  mi::TypedBinding binding_{nullptr, nullptr};
  grpc::ByteBuffer in_;
  grpc::ByteBuffer out_;
  std::unique_ptr<google::protobuf::Message> request_;
  std::unique_ptr<mi::Exchange> exchange_;
  bool streaming_ = false;
  // Streaming: items of the part being pulled go into current_; finished messages wait
  // in pending_ (one part's worth at most).
  std::optional<mi::ItemAssembler> assembler_;
  std::unique_ptr<google::protobuf::Message> current_;
  absl::Status conversion_error_;
  std::deque<std::unique_ptr<google::protobuf::Message>> pending_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point send_started_;
  bool produced_all_ = false;
  bool reading_ = false;
  bool cut_ = false;
};

}  // namespace

void TypedService::Serve(grpc::ServerCompletionQueue* cq) {
  for (int i = 0; i < kPendingTypedPerQueue; ++i) new TypedCall(*this, cq);
}

}  // namespace sipd::service
