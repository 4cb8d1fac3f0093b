// A small fixed pool of threads on which the Dispatcher runs MI calls that may block:
// commands flagged kBlocking, and streaming commands whose transport wants the whole
// reply at once. Every other call runs inline on the transport's own thread.
//
// The queue is bounded: TrySubmit() refuses work when `max_queued` tasks are already
// waiting, so a burst of slow calls is answered "busy" instead of growing without
// limit.
//
// Thread-safety: TrySubmit() may be called from any thread. The destructor (or Stop())
// runs the tasks already queued, then joins the threads; it must not be called from a
// pool thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sipd::mi {

class WorkerPool {
 public:
  WorkerPool(size_t threads, size_t max_queued);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`. False (task not taken) when the queue is full or the pool stopped.
  bool TrySubmit(std::function<void()> task);

  // Finishes queued tasks and joins the threads. Idempotent.
  void Stop();

 private:
  void Run();

  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace sipd::mi
