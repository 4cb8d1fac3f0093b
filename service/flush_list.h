// Writes deferred to the end of a batch of events, so that results that become ready
// together leave in one message (Session replies; see service/session_call.h).
//
// Each thread that completes gRPC tags or dispatcher callbacks (the completion-queue
// threads, the dispatcher's completion thread) owns a FlushList and makes it current.
// A call with output to send and no write in flight adds itself (once) instead of
// writing at once; the thread calls FlushAll() when it has no event left to handle (its
// queue is empty for now) or after kMaxDeferredEvents events, and each listed call then
// writes everything it gathered in one message. Under load many results share a write;
// an idle server writes at once (the queue is empty right after the event).
//
// The list holds a reference on each call (Flushable::Flush releases it), so a listed
// call is never deleted before it was flushed.
//
// Thread-safety: a FlushList belongs to one thread. Flush() runs on that thread and
// takes the call's own lock.
#pragma once

#include <vector>

namespace sipd::service {

class Flushable {
 public:
  // Writes what was gathered (if the call can still write) and drops the reference the
  // list held.
  virtual void Flush() = 0;

 protected:
  ~Flushable() = default;
};

class FlushList {
 public:
  // Events a queue thread handles before it flushes even though more are waiting.
  static constexpr int kMaxDeferredEvents = 64;

  FlushList() = default;
  FlushList(const FlushList&) = delete;
  FlushList& operator=(const FlushList&) = delete;

  // The calling thread's list, or nullptr (then write at once).
  static FlushList* Current();
  // Makes `list` the calling thread's (nullptr: none).
  static void SetCurrent(FlushList* list);

  // REQUIRES: the caller took the reference that Flush() releases.
  void Add(Flushable* call) { calls_.push_back(call); }
  bool empty() const { return calls_.empty(); }
  // Flushes every listed call (calls added meanwhile wait for the next FlushAll()).
  void FlushAll();

 private:
  std::vector<Flushable*> calls_;
  std::vector<Flushable*> flushing_;
};

}  // namespace sipd::service
