// How many call objects of a gRPC service exist: requests posted and waiting for a
// call, and calls in progress.
//
// Why: gRPC aborts the process when an operation starts on a completion queue that was
// shut down, and our calls start operations from their tags (a Finish after a failed
// write, the successor's request when a request arrives) and from other threads (the
// dispatcher's completion thread, the event delivery thread). So MiGrpcServer shuts its
// queues down only once no call object is left: Server::Shutdown cancels every call
// and fails every posted request, each call then ends through its tags while the queue
// threads still run, and the count falls to 0 (see MiGrpcServer::Shutdown).
//
// Each call object holds a Token for its whole life. The token is the first member of
// the call (or of its base), so it is destroyed last: when the count reaches 0, every
// ServerContext has already released its gRPC call.
//
// Thread-safety: every member is thread-safe. A token costs one atomic add and one
// atomic subtract; the mutex is only taken when a waiter is there.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace sipd::service {

class LiveCalls {
 public:
  class Token {
   public:
    explicit Token(LiveCalls& calls) : calls_(calls) { calls_.count_.fetch_add(1); }
    ~Token() { calls_.Remove(); }
    Token(const Token&) = delete;
    Token& operator=(const Token&) = delete;

   private:
    LiveCalls& calls_;
  };

  LiveCalls() = default;
  LiveCalls(const LiveCalls&) = delete;
  LiveCalls& operator=(const LiveCalls&) = delete;

  int count() const { return count_.load(); }

  // Waits until no call object is left or `deadline` passes; true when none is left.
  bool WaitForNone(std::chrono::steady_clock::time_point deadline) {
    waiting_.store(true);
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [this] { return count_.load() == 0; });
  }

 private:
  void Remove() {
    // seq_cst on both sides: either this sees the waiter's flag, or the waiter's check
    // (after its flag) sees the count at 0.
    if (count_.fetch_sub(1) == 1 && waiting_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
  }

  std::atomic<int> count_{0};
  std::atomic<bool> waiting_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace sipd::service
