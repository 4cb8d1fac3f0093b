// ExecuteStream: a completion-queue state machine that pulls its reply.
//
//   requested -> Start(kPull) -> [ready] -> WriteNext: one part of the reply, cut into
//   chunks -> Write(chunk) -> write done -> next chunk, or WriteNext again -> ...
//   -> last chunk: WriteAndFinish(status) -> finish done
//
// A streamed command (ul_dump) produces its next part only when the client took the
// previous one; in between the call holds the part's chunks not yet sent and no thread
// and no lock. One grpc::Alarm bounds the call: a write the client does not take within
// stream_write_timeout (stall) or a stream not over after reply_timeout cuts the call
// (TryCancel: the client sees CANCELLED); the done tag cancels the exchange when the
// client cancels or its deadline passes.
//
// Thread-safety: tags complete on the call's queue thread, on_ready on the dispatcher's
// completion thread; the anchor's mutex guards the state.
#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "service/async_call.h"
#include "service/call_anchor.h"
#include "service/call_support.h"
#include "service/cq_tag.h"
#include "service/rich_status.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

using Clock = std::chrono::steady_clock;

grpc::Status Cancelled() {
  return TransportError(grpc::StatusCode::CANCELLED, "stream cancelled", kReasonCancelled);
}

class StreamCall final : public AsyncCall<StreamCall, grpc::ServerAsyncWriter<grpc::ByteBuffer>> {
 public:
  StreamCall(ManagementService& service, grpc::ServerCompletionQueue* cq)
      : AsyncCall(this, cq, service.live_calls()),
        service_(service),
        options_(service.options()),
        chunks_(StreamChunkLimits(options_)) {
    service_.async_service().RequestExecuteStream(&ctx_, &request_, &stream_, cq_, cq_,
                                                  &request_tag_);
  }

 private:
  friend Base;

  void OnRequest() {
    PostStreamCall(service_, cq_);
    mi::Request request;
    grpc::Status status = AcceptRequest(request_, ctx_, options_, &request);
    request_.Clear();
    std::lock_guard<std::mutex> lock(anchor_->mu);
    if (!status.ok()) {
      FinishLocked(std::move(status));
      return;
    }
    command_ = request.command;
    deadline_ = Clock::now() + options_.reply_timeout;
    ArmLocked(Clock::now() + options_.stream_write_timeout);
    exchange_ = service_.dispatcher().Start(
        GrpcCallContext(ctx_), std::move(request), mi::Delivery::kPull, nullptr,
        [anchor = anchor_] { anchor->Run([](StreamCall& call) { call.PumpLocked(); }); });
    PumpLocked();
  }

  // Sends the next chunk, pulling the next part of the reply when none is left.
  void PumpLocked() {
    if (writing_ || finishing_ || cut_ || exchange_ == nullptr || !exchange_->ready()) return;
    if (chunks_.empty() && !produced_all_) produced_all_ = exchange_->WriteNext(chunks_.writer());
    if (chunks_.empty()) {
      if (produced_all_) FinishLocked(ExchangeStatus(&ctx_, *exchange_));
      return;
    }
    out_.Clear();  // gRPC holds its own reference to the bytes of the previous write
    bool own_buffer = false;
    grpc::Status serialized =
        grpc::SerializationTraits<v1::ReplyChunk>::Serialize(chunks_.front(), &out_, &own_buffer);
    chunks_.pop_front();
    if (!serialized.ok()) {
      exchange_->Cancel();
      FinishLocked(std::move(serialized));
      return;
    }
    send_started_ = Clock::now();
    if (chunks_.empty() && produced_all_) {
      // The last chunk and the status in one batch.
      StartWriteAndFinishLocked(out_, ExchangeStatus(&ctx_, *exchange_));
    } else {
      StartWriteLocked(out_);
    }
  }

  void OnWriteDoneLocked(bool ok) {
    if (!ok || cut_) {  // the stream is gone (client cancelled, or we cut it)
      if (exchange_ != nullptr) exchange_->Cancel();
      FinishLocked(Cancelled());
    } else {
      PumpLocked();
    }
  }

  void OnDoneLocked() {
    if (ctx_.IsCancelled()) {
      if (exchange_ != nullptr) exchange_->Cancel();
      if (!writing_) FinishLocked(Cancelled());
    }
  }

  // The alarm is always armed while the stream runs: at the next moment a limit could
  // be passed (stall of the write in progress, the total deadline, or one stall period
  // from now).
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
      } else {
        ArmLocked(writing_ ? send_started_ + options_.stream_write_timeout
                           : now + options_.stream_write_timeout);
      }
    }
  }

  // Ends a stream whose client makes no progress: the exchange goes (its producer and
  // the chunks not sent with it), the call is cancelled.
  void CutLocked(const std::string& why) {
    spdlog::warn("mi_grpc: ExecuteStream of '{}' from {} cut: {}", command_, ctx_.peer(), why);
    cut_ = true;
    service_.CountCut();
    if (exchange_ != nullptr) exchange_->Cancel();
    chunks_.clear();
    ctx_.TryCancel();
    if (!writing_) FinishLocked(Cancelled());
  }

  ManagementService& service_;
  const ServiceOptions& options_;
  grpc::ByteBuffer request_;

  // Guarded by anchor_->mu once the request arrived.
  std::string command_;
  std::unique_ptr<mi::Exchange> exchange_;
  ChunkQueue chunks_;
  grpc::ByteBuffer out_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point send_started_;
  // The exchange has written its last part into chunks_.
  bool produced_all_ = false;
  bool cut_ = false;
};

}  // namespace

void PostStreamCall(ManagementService& service, grpc::ServerCompletionQueue* cq) {
  new StreamCall(service, cq);
}

}  // namespace sipd::service
