// Session: many tagged MI requests on one bidirectional stream (see mi.proto).
//
//   started -> Read -> request: run it (Start), answered at once or kept in flight by
//   id -> Read -> ...            results gather in batches (SessionReply messages)
//   on_ready(id) -> result       -> one Write per batch, at the end of the thread's
//   write done -> next batch        batch of events (service/flush_list.h)
//   client closes its side + nothing in flight + all written -> Finish(OK)
//
// Cheap per command: requests parse into one reused message; results are built in the
// batch's arena (one Reset per write, no per-result allocation there); an inline command
// (the common case) is answered without any per-request bookkeeping; results that are
// ready together leave in one message.
//
// Bounds: at most session_max_inflight requests in flight (one more is answered
// RESOURCE_EXHAUSTED); the session reads no request while session_buffer_bytes of
// results wait for the client; a streamed reply produces its next part only when no
// write is in flight; one alarm cuts a session whose write is not taken within
// stream_write_timeout and ends requests not answered within reply_timeout (or their
// own timeout_ms).
//
// Thread-safety: tags complete on the call's queue thread, on_ready on the dispatcher's
// completion thread, Flush() on either; the anchor's mutex guards the state.
#include <algorithm>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "google/protobuf/arena.h"
#include "registry/proto_convert.h"
#include "service/async_call.h"
#include "service/call_anchor.h"
#include "service/call_support.h"
#include "service/cq_tag.h"
#include "service/flush_list.h"
#include "service/rich_status.h"
#include "service/status_mapping.h"
#include "service/utf8.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

using Clock = std::chrono::steady_clock;
using Result = v1::SessionResult;

Result::Status ResultStatus(grpc::StatusCode code) { return static_cast<Result::Status>(code); }

// Results that leave in one SessionReply. Built in its own arena, which is reset (not
// freed) once the batch was serialized, so a busy session reuses the same memory.
struct Batch {
  Batch() { Reset(); }
  void Reset() {
    arena.Reset();
    reply = google::protobuf::Arena::CreateMessage<v1::SessionReply>(&arena);
    bytes = 0;
  }
  google::protobuf::Arena arena;
  v1::SessionReply* reply = nullptr;
  size_t bytes = 0;
};

class SessionCall final
    : public AsyncCall<SessionCall,
                       grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>,
      public Flushable {
 public:
  SessionCall(ManagementService& service, grpc::ServerCompletionQueue* cq)
      : AsyncCall(this, cq, service.live_calls()), service_(service), options_(service.options()) {
    service_.async_service().RequestSession(&ctx_, &stream_, cq_, cq_, &request_tag_);
  }

  void Flush() override {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    flush_listed_ = false;
    WriteLocked();
    MaybeFinishLocked();
    Unref(lock);
  }

 private:
  friend Base;

  // A request still in flight: its exchange was not ready when it started, or its reply
  // is streamed.
  struct Entry {
    std::unique_ptr<mi::Exchange> exchange;
    // Streamed replies only: the chunks of the part being pulled.
    std::unique_ptr<ChunkQueue> chunks;
    // reply_timeout, or the request's own timeout_ms.
    Clock::time_point deadline;
    bool timeout_is_the_requests = false;
    // Waiting in pull_ for its next part.
    bool queued_for_pull = false;
  };

  void OnRequest() {
    PostSessionCall(service_, cq_);
    std::lock_guard<std::mutex> lock(anchor_->mu);
    context_ = GrpcCallContext(ctx_);
    peer_ = context_.peer.address;
    batches_.push_back(NewBatch());
    PostReadLocked();
  }

  // --- reading ---------------------------------------------------------------------

  void PostReadLocked() {
    if (reading_ || read_closed_ || ending_ || done_ || finishing_) return;
    if (pending_bytes_ >= options_.session_buffer_bytes) return;  // resumed by OnWriteDoneLocked
    reading_ = true;
    AddRefLocked();
    stream_.Read(&in_, &read_tag_);
  }

  void OnRead(bool ok) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    reading_ = false;
    if (!ok) {
      read_closed_ = true;  // the client closed its side (or the call is gone)
      MaybeFinishLocked();
    } else if (!ending_ && !done_ && !finishing_) {
      HandleLocked();
      ScheduleFlushLocked();
      PostReadLocked();
    }
    Unref(lock);
  }

  void HandleLocked() {
    if (grpc::Status framing = CheckMessageFraming(ctx_); !framing.ok()) {
      EndLocked(std::move(framing));
      return;
    }
    if (!grpc::SerializationTraits<v1::SessionRequest>::Deserialize(&in_, &request_).ok()) {
      EndLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                               "message is not a valid sipd.mi.v1.SessionRequest (string fields "
                               "must be UTF-8)",
                               kReasonInvalidRequest));
      return;
    }
    const uint32_t id = request_.id();
    auto it = entries_.find(id);
    if (request_.cancel()) {
      if (it != entries_.end())
        EndEntryLocked(it, grpc::StatusCode::CANCELLED, "cancelled by the client");
      return;
    }
    if (it != entries_.end()) {
      EndLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                               absl::StrCat("request id ", id, " reused while in flight"),
                               kReasonInvalidRequest, "id"));
      return;
    }
    if (entries_.size() >= options_.session_max_inflight) {
      AddFinalLocked(id, grpc::StatusCode::RESOURCE_EXHAUSTED,
                     absl::StrCat("too many requests in flight in this session (at most ",
                                  options_.session_max_inflight, ")"));
      return;
    }
    grpc::Status valid = ValidateRequest(request_, options_, &mi_request_);
    if (valid.ok() && context_.deadline <= Clock::now()) valid = DeadlineExpiredStatus();
    if (!valid.ok()) {
      AddFinalLocked(id, valid.error_code(), valid.error_message());
      return;
    }
    mi::CallContext context = context_;
    context.cancel = mi::CancellationToken();  // each request has its own
    const bool stream = request_.stream();
    std::unique_ptr<mi::Exchange> exchange = service_.dispatcher().Start(
        std::move(context), std::move(mi_request_),
        stream ? mi::Delivery::kPull : mi::Delivery::kTree, nullptr, [anchor = anchor_, id] {
          anchor->Run([id](SessionCall& call) { call.OnReadyLocked(id); });
        });
    if (!stream && exchange->ready()) {  // the common case: answered inline
      AddReplyLocked(id, *exchange);
      return;
    }
    Entry& entry = entries_[id];
    entry.exchange = std::move(exchange);
    const Clock::time_point now = Clock::now();
    entry.deadline = now + options_.reply_timeout;
    if (request_.timeout_ms() > 0) {
      const Clock::time_point own = now + std::chrono::milliseconds(request_.timeout_ms());
      if (own < entry.deadline) {
        entry.deadline = own;
        entry.timeout_is_the_requests = true;
      }
    }
    if (stream) entry.chunks = std::make_unique<ChunkQueue>(StreamChunkLimits(options_));
    ArmLocked(entry.deadline);
    if (entry.exchange->ready()) OnReadyLocked(id);
  }

  // --- results ---------------------------------------------------------------------

  Batch* NewBatch() {
    if (spare_ != nullptr) return spare_.release();
    return new Batch();
  }

  // A result in the batch being filled (a new batch once it holds stream_chunk_bytes).
  Result* AddResultLocked(uint32_t id) {
    if (batches_.back()->bytes >= options_.stream_chunk_bytes) batches_.push_back(NewBatch());
    Result* result = batches_.back()->reply->add_results();
    result->set_id(id);
    return result;
  }

  void CountLocked(const Result& result) { CountLocked(result.ByteSizeLong()); }
  void CountLocked(size_t bytes) {
    bytes += 16;  // the result's own fields and tags, about
    batches_.back()->bytes += bytes;
    pending_bytes_ += bytes;
  }

  void AddFinalLocked(uint32_t id, grpc::StatusCode code, std::string_view message) {
    Result* result = AddResultLocked(id);
    result->set_done(true);
    result->set_status(ResultStatus(code));
    result->set_message(std::string(message));
    CountLocked(*result);
  }

  // The final result of a whole (kTree) reply.
  void AddReplyLocked(uint32_t id, mi::Exchange& exchange) {
    const mi::Reply& reply = exchange.reply();
    const grpc::StatusCode code = OutcomeStatusCode(exchange.outcome(), reply);
    Result* result = AddResultLocked(id);
    result->set_done(true);
    result->set_status(ResultStatus(code));
    if (code != grpc::StatusCode::OK) result->set_message(StatusMessage(reply.reason));
    result->set_outcome(std::string(OutcomeName(exchange.outcome())));
    v1::Reply* out = result->mutable_reply();
    out->set_code(reply.code);
    out->set_reason(reply.reason);
    out->set_is_array(reply.root.is_array);
    for (const auto& kid : reply.root.kids) mi::ToProto(*kid, out->add_nodes());
    SanitizeUtf8(out);
    const size_t bytes = out->ByteSizeLong();
    if (bytes + 64 > options_.max_message_size) {
      result->clear_reply();
      result->clear_outcome();
      result->set_status(ResultStatus(grpc::StatusCode::RESOURCE_EXHAUSTED));
      result->set_message(absl::StrCat("reply of ", bytes, " bytes exceeds max_message_size (",
                                       options_.max_message_size, "): use stream"));
      CountLocked(*result);
      return;
    }
    CountLocked(bytes + result->message().size() + result->outcome().size());
  }

  void OnReadyLocked(uint32_t id) {
    auto it = entries_.find(id);
    if (it == entries_.end() || !it->second.exchange->ready()) return;
    Entry& entry = it->second;
    if (entry.chunks == nullptr) {
      AddReplyLocked(id, *entry.exchange);
      entries_.erase(it);
    } else if (!entry.queued_for_pull) {
      entry.queued_for_pull = true;
      pull_.push_back(id);
      PullLocked();
    }
    ScheduleFlushLocked();
    MaybeFinishLocked();
  }

  // Pulls one part of each streamed reply waiting for it, when no write is in flight
  // and the results waiting for the client are below the buffer bound.
  void PullLocked() {
    for (size_t n = pull_.size(); n > 0; --n) {
      if (writing_ || pending_bytes_ >= options_.session_buffer_bytes) return;
      const uint32_t id = pull_.front();
      pull_.pop_front();
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;  // ended meanwhile
      Entry& entry = it->second;
      const bool last = entry.exchange->WriteNext(entry.chunks->writer());
      while (!entry.chunks->empty()) {
        Result* result = AddResultLocked(id);
        result->mutable_chunk()->Swap(&entry.chunks->front());
        entry.chunks->pop_front();
        CountLocked(*result);
      }
      if (last) {
        const mi::Reply& reply = entry.exchange->reply();
        const grpc::StatusCode code = OutcomeStatusCode(entry.exchange->outcome(), reply);
        Result* result = AddResultLocked(id);
        result->set_done(true);
        result->set_status(ResultStatus(code));
        if (code != grpc::StatusCode::OK) result->set_message(StatusMessage(reply.reason));
        result->set_outcome(std::string(OutcomeName(entry.exchange->outcome())));
        CountLocked(*result);
        entries_.erase(it);
      } else {
        pull_.push_back(id);
      }
    }
  }

  // Ends one request in flight before its reply: its exchange is cancelled (an async
  // slot released, a stream's producer dropped) and its final result says why.
  void EndEntryLocked(std::unordered_map<uint32_t, Entry>::iterator it, grpc::StatusCode code,
                      std::string_view message) {
    it->second.exchange->Cancel();
    const uint32_t id = it->first;
    entries_.erase(it);
    AddFinalLocked(id, code, message);
  }

  // --- writing ---------------------------------------------------------------------

  bool HaveOutputLocked() const {
    return batches_.size() > 1 || batches_.front()->reply->results_size() > 0;
  }

  // Writes at the end of this thread's batch of events (or at once without a list).
  void ScheduleFlushLocked() {
    if (flush_listed_ || writing_ || !HaveOutputLocked()) return;
    FlushList* list = FlushList::Current();
    if (list == nullptr) {
      WriteLocked();
      return;
    }
    flush_listed_ = true;
    AddRefLocked();
    list->Add(this);
  }

  void WriteLocked() {
    if (writing_ || done_ || finishing_ || ending_ || !HaveOutputLocked()) return;
    std::unique_ptr<Batch> batch(batches_.front());
    batches_.pop_front();
    if (batches_.empty()) batches_.push_back(NewBatch());
    out_.Clear();  // gRPC holds its own reference to the bytes of the previous write
    bool own_buffer = false;
    grpc::Status serialized =
        grpc::SerializationTraits<v1::SessionReply>::Serialize(*batch->reply, &out_, &own_buffer);
    pending_bytes_ -= std::min(pending_bytes_, batch->bytes);
    batch->Reset();
    if (spare_ == nullptr) spare_ = std::move(batch);
    if (!serialized.ok()) {
      EndLocked(serialized);
      return;
    }
    write_started_ = Clock::now();
    StartWriteLocked(out_);
    ArmLocked(write_started_ + options_.stream_write_timeout);
  }

  void OnWriteDoneLocked(bool ok) {
    if (!ok) {  // the stream is gone
      CancelAllLocked();
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "session cancelled"));
    } else if (ending_) {
      FinishEndedLocked();
    } else {
      PullLocked();
      if (HaveOutputLocked() && batches_.size() > 1) {
        WriteLocked();  // a full batch is waiting: no reason to wait for more
      } else {
        ScheduleFlushLocked();
      }
      PostReadLocked();
      MaybeFinishLocked();
    }
  }

  // --- ending ----------------------------------------------------------------------

  void CancelAllLocked() {
    for (auto& [id, entry] : entries_) entry.exchange->Cancel();
    entries_.clear();
    pull_.clear();
  }

  void MaybeFinishLocked() {
    if (read_closed_ && entries_.empty() && !writing_ && !flush_listed_ && !HaveOutputLocked() &&
        !ending_) {
      FinishLocked(grpc::Status::OK);
    }
  }

  // Ends the session with `status` (a protocol error: the client sees it), or cuts it
  // (`cancel`: a client that makes no progress cannot be told anything).
  void EndLocked(grpc::Status status, bool cancel = false) {
    if (ending_ || finishing_) return;
    CancelAllLocked();
    if (cancel) ctx_.TryCancel();
    Base::EndLocked(std::move(status));
  }

  void OnDoneLocked() {
    if (ctx_.IsCancelled()) {
      CancelAllLocked();
      if (!writing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "session cancelled"));
    }
  }

  // --- limits ----------------------------------------------------------------------

  // Makes sure the alarm fires no later than `when`.
  void ArmLocked(Clock::time_point when) {
    if (done_ || finish_done_) return;
    if (alarm_pending_) {
      if (alarm_at_ <= when) return;
      alarm_->Cancel();  // OnAlarm(false) re-arms at the earliest limit
      rearm_ = true;
      return;
    }
    alarm_pending_ = true;
    alarm_at_ = when;
    SetAlarmLocked(when);
  }

  void OnAlarmLocked(bool fired) {
    alarm_pending_ = false;
    const bool rearm = rearm_;
    rearm_ = false;
    if ((fired || rearm) && !done_ && !finish_done_ && !ending_) CheckLimitsLocked();
  }

  void CheckLimitsLocked() {
    const Clock::time_point now = Clock::now();
    if (writing_ && now - write_started_ >= options_.stream_write_timeout) {
      spdlog::warn("mi_grpc: Session from {} cut: the client took no result for {} ms", peer_,
                   options_.stream_write_timeout.count());
      service_.CountCut();
      EndLocked(TransportError(grpc::StatusCode::CANCELLED, "session cut: results not read",
                               kReasonCallCut),
                /*cancel=*/true);
      return;
    }
    Clock::time_point next = Clock::time_point::max();
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto current = it++;
      if (current->second.deadline <= now) {
        const bool own = current->second.timeout_is_the_requests;
        EndEntryLocked(current, grpc::StatusCode::DEADLINE_EXCEEDED,
                       own ? "timeout_ms expired"
                           : absl::StrCat("not answered within reply_timeout (",
                                          options_.reply_timeout.count(), " ms)"));
      } else {
        next = std::min(next, current->second.deadline);
      }
    }
    if (writing_) next = std::min(next, write_started_ + options_.stream_write_timeout);
    if (next != Clock::time_point::max()) ArmLocked(next);
    ScheduleFlushLocked();
    MaybeFinishLocked();
  }

 public:
  ~SessionCall() {
    for (Batch* batch : batches_) delete batch;
  }

 private:
  ManagementService& service_;
  const ServiceOptions& options_;
  MemberTag<SessionCall, &SessionCall::OnRead> read_tag_{this};

  // Guarded by anchor_->mu once the call started. Besides the base's references, each
  // read and the flush list's entry hold one.
  mi::CallContext context_;
  std::string peer_;
  grpc::ByteBuffer in_;
  v1::SessionRequest request_;
  mi::Request mi_request_;
  std::unordered_map<uint32_t, Entry> entries_;
  // Streamed requests ready for their next part, in turn.
  std::deque<uint32_t> pull_;
  // Results not written yet; the back one is being filled. Never empty once started.
  std::deque<Batch*> batches_;
  std::unique_ptr<Batch> spare_;
  size_t pending_bytes_ = 0;
  grpc::ByteBuffer out_;
  Clock::time_point write_started_;
  Clock::time_point alarm_at_;
  bool alarm_pending_ = false;
  bool rearm_ = false;
  bool reading_ = false;
  bool read_closed_ = false;
  bool flush_listed_ = false;
};

}  // namespace

void PostSessionCall(ManagementService& service, grpc::ServerCompletionQueue* cq) {
  new SessionCall(service, cq);
}

}  // namespace sipd::service
