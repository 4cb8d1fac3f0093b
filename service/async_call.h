// The lifecycle that the completion-queue calls of the MI gRPC server share (ExecuteCall,
// StreamCall, SessionCall, TypedCall, and EventService's SubscribeCall and WatchCall):
// the ServerContext and the call's stream object (or unary responder), the anchor (the
// call's lock), the count of operations still to come back, the done tag, one write in
// flight at a time, Finish, an optional alarm, and the last Unref that deletes the call.
//
// A call derives from AsyncCall<Call, Stream[, Context]> (CRTP) and keeps its own protocol (what it
// reads and writes, flow control, coalescing, error statuses). The base completes the
// tags and calls back into the call, under the anchor's lock, through these hooks (each
// has an empty default here, so a call defines only those it needs):
//
//   void OnRequest();                  request tag, ok: the call arrived (NO lock held;
//                                      post the successor, then take the lock yourself)
//   void OnWriteDoneLocked(bool ok);   a Write / SendInitialMetadata came back
//                                      (writing_ already false)
//   void OnFinishDoneLocked();         Finish / WriteAndFinish came back (finish_done_
//                                      set, writing_ false; the alarm is cancelled after)
//   void OnDoneLocked();               the done tag (done_ set; check ctx_.IsCancelled();
//                                      the alarm is cancelled after)
//   void OnAlarmLocked(bool fired);    the alarm fired (or was cancelled)
//   void ReleaseUnlocked();            the last reference went: the anchor no longer
//                                      finds the call, no lock is held; the call is
//                                      deleted right after (leave tables here)
//
// The call declares `friend Base;` so the base reaches its private hooks. A call may
// also hide FinishLocked (ExecuteCall: a unary responder finishes with its response
// message); it then sets finishing_ and takes the finish reference itself.
//
// Not on this base: health_service.cc's Watch (its lock is taken after the health
// service's, and it leaves the service's list BEFORE taking its own lock on the done
// tag, which the base's done handling cannot do) and unary_call.h (one thread, one
// operation, no lock and no done tag: the base would add both to every call).
//
// Reference counting: refs_ counts what is still to come back: 1 for the done tag from
// the start, +1 for each operation started through the base (StartWriteLocked,
// StartWriteAndFinishLocked, StartSendInitialMetadataLocked, FinishLocked,
// SetAlarmLocked) and for each the call starts itself (a Read, a flush-list entry: it
// calls AddRefLocked() and later Unref()). Each tag handler ends with Unref(); the last
// one deletes the call. A request tag that comes back !ok (the server shuts down before
// a call arrived) deletes the call at once: no done tag comes for a call never started.
//
// Each call object counts in its service's LiveCalls (live_) from its construction to
// the end of its deletion, so that the server stops its queues only once no call is
// left to start an operation on them (service/live_calls.h).
//
// Thread-safety: tags complete on the call's queue thread; a call may also be entered
// from other threads (the dispatcher's completion thread through the anchor, the event
// delivery thread, a FlushList's thread), always under anchor_->mu. anchor_->mu guards
// refs_, every flag below and all of the call's own state once the request arrived;
// ctx_, stream_ and cq_ are used under it too (except in the constructor and OnRequest
// before the call is shared). Lock order: a service's own locks (e.g. EventService's
// calls_mu) before the anchor's; no lock is held while the call is deleted.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <utility>

#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "service/call_anchor.h"
#include "service/cq_tag.h"
#include "service/live_calls.h"
#include "service/rich_status.h"

namespace sipd::service {

// A steady-clock time as the system-clock time gRPC alarms take (max stays max).
inline std::chrono::system_clock::time_point ToSystemTime(
    std::chrono::steady_clock::time_point when) {
  using std::chrono::steady_clock;
  using std::chrono::system_clock;
  if (when == steady_clock::time_point::max()) return system_clock::time_point::max();
  return system_clock::now() +
         std::chrono::duration_cast<system_clock::duration>(when - steady_clock::now());
}

template <typename Call, typename Stream, typename Context = grpc::ServerContext>
class AsyncCall {
 public:
  AsyncCall(const AsyncCall&) = delete;
  AsyncCall& operator=(const AsyncCall&) = delete;

 protected:
  using Base = AsyncCall;

  // `self` is the derived call under construction (only stored, not used, here). The
  // call then posts its request with &ctx_, &stream_, cq_ and &request_tag_. `calls`
  // counts the call from now until it is deleted (service/live_calls.h).
  AsyncCall(Call* self, grpc::ServerCompletionQueue* cq, LiveCalls& calls)
      : live_(calls), cq_(cq), stream_(&ctx_), anchor_(std::make_shared<CallAnchor<Call>>(self)) {
    ctx_.AsyncNotifyWhenDone(&done_tag_);
  }
  ~AsyncCall() = default;

  // Hooks (see the top comment); the call hides those it needs.
  void OnRequest() {}
  void OnWriteDoneLocked(bool /*ok*/) {}
  void OnFinishDoneLocked() {}
  void OnDoneLocked() {}
  void OnAlarmLocked(bool /*fired*/) {}
  void ReleaseUnlocked() {}

  // Writes `message` (REQUIRES: !writing_); OnWriteDoneLocked follows.
  template <typename Message>
  void StartWriteLocked(const Message& message) {
    writing_ = true;
    ++refs_;
    stream_.Write(message, &write_tag_);
  }

  // Sends the initial metadata now, as a write of its own; OnWriteDoneLocked follows.
  void StartSendInitialMetadataLocked() {
    writing_ = true;
    ++refs_;
    stream_.SendInitialMetadata(&write_tag_);
  }

  // The last message and `status` (sent as given) in one batch; OnFinishDoneLocked
  // follows. REQUIRES: !writing_ && !finishing_.
  template <typename Message>
  void StartWriteAndFinishLocked(const Message& message, const grpc::Status& status) {
    writing_ = true;
    finishing_ = true;
    ++refs_;
    stream_.WriteAndFinish(message, grpc::WriteOptions(), status, &finish_tag_);
  }

  // Finishes the call with `status` (with its rich error details), once: later calls do
  // nothing. REQUIRES: !writing_ (gRPC allows one operation of a kind at a time).
  void FinishLocked(const grpc::Status& status) {
    if (finishing_) return;
    finishing_ = true;
    ++refs_;
    stream_.Finish(WithErrorDetails(status), &finish_tag_);
  }

  // Ends the call with `status`: at once when no write is in flight, else the call
  // finishes with end_status_ when that write came back (FinishEndedLocked() in its
  // OnWriteDoneLocked). Does nothing once the call ends or finishes.
  void EndLocked(grpc::Status status) {
    if (ending_ || finishing_) return;
    ending_ = true;
    if (!writing_) {
      FinishLocked(status);
    } else {
      end_status_ = std::move(status);
    }
  }
  void FinishEndedLocked() { FinishLocked(end_status_); }

  // Arms the call's alarm for `when` (OnAlarmLocked follows, also when cancelled).
  // REQUIRES: no alarm pending.
  void SetAlarmLocked(std::chrono::steady_clock::time_point when) {
    SetAlarmLocked(ToSystemTime(when));
  }
  void SetAlarmLocked(std::chrono::system_clock::time_point when) {
    if (alarm_ == nullptr) alarm_ = std::make_unique<grpc::Alarm>();
    ++refs_;
    alarm_->Set(cq_, when, &alarm_tag_);
  }
  void CancelAlarmLocked() {
    if (alarm_ != nullptr) alarm_->Cancel();
  }

  // For an operation the call starts itself with a tag of its own.
  void AddRefLocked() { ++refs_; }

  // Drops one reference (a tag that came back); the last one deletes the call, after
  // the anchor forgot it and the lock was released.
  void Unref(std::unique_lock<std::mutex>& lock) {
    if (--refs_ > 0) return;
    anchor_->call = nullptr;
    lock.unlock();
    self().ReleaseUnlocked();
    delete &self();
  }

  // First, so that it goes last: the ServerContext is gone when the count drops.
  LiveCalls::Token live_;
  grpc::ServerCompletionQueue* const cq_;
  Context ctx_;
  Stream stream_;

 private:
  Call& self() { return static_cast<Call&>(*this); }

  void OnRequestTag(bool ok) {
    if (!ok) {  // the server shuts down; no done tag comes for a call never started
      delete &self();
      return;
    }
    self().OnRequest();
  }

  void OnWriteTag(bool ok) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    writing_ = false;
    self().OnWriteDoneLocked(ok);
    Unref(lock);
  }

  void OnFinishTag(bool) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    writing_ = false;
    finish_done_ = true;
    self().OnFinishDoneLocked();
    CancelAlarmLocked();
    Unref(lock);
  }

  void OnDoneTag(bool) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    done_ = true;
    self().OnDoneLocked();
    CancelAlarmLocked();
    Unref(lock);
  }

  void OnAlarmTag(bool fired) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    self().OnAlarmLocked(fired);
    Unref(lock);
  }

 protected:
  MemberTag<AsyncCall, &AsyncCall::OnRequestTag> request_tag_{this};
  MemberTag<AsyncCall, &AsyncCall::OnWriteTag> write_tag_{this};
  MemberTag<AsyncCall, &AsyncCall::OnFinishTag> finish_tag_{this};
  MemberTag<AsyncCall, &AsyncCall::OnDoneTag> done_tag_{this};
  MemberTag<AsyncCall, &AsyncCall::OnAlarmTag> alarm_tag_{this};
  const std::shared_ptr<CallAnchor<Call>> anchor_;

  // Guarded by anchor_->mu once the request arrived.
  // Tags still to come back: the done tag, and each operation started.
  int refs_ = 1;
  std::unique_ptr<grpc::Alarm> alarm_;
  grpc::Status end_status_;  // EndLocked() during a write: the status to finish with
  bool writing_ = false;     // a Write, SendInitialMetadata or WriteAndFinish in flight
  bool ending_ = false;      // EndLocked() was called
  bool finishing_ = false;   // Finish or WriteAndFinish started
  bool finish_done_ = false;
  bool done_ = false;  // the done tag came back
};

}  // namespace sipd::service
