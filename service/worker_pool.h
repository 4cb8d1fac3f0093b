// A small fixed pool of threads for MI calls that may block: ExecuteStream (its writes
// wait for the client) and commands flagged async or streaming. Fast commands run
// inline on the completion-queue threads and never come here.
//
// The queue is bounded: TrySubmit() refuses work when `max_queued` tasks are already
// waiting, so a burst of slow calls is answered with RESOURCE_EXHAUSTED instead of
// growing without limit.
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

namespace sipd::service {

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

}  // namespace sipd::service
