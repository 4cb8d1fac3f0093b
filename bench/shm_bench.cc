// Shared-memory allocation: SharedMemory::Allocate/Deallocate (the block cache in front
// of the heap) against the Boost.Interprocess heap alone, which is what sipd used before
// the cache. Results: bench/RESULTS.md, section "Shared memory: the block cache".
//
//   shm_bench [--benchmark_repetitions=N] [--benchmark_filter=...]
//
// The workload is a call's worth of blocks as tm makes them (a transaction cell, its
// branches, key, Call-ID, tags, the request and the replies; sizes below) allocated as
// one call starts and freed as the call 1,000 calls older ends, so 1,000 calls stay
// live. One time unit is one call: 9 allocations and 9 frees. With /processes:2 a
// forked process runs the same loop on the same heap for the whole measurement, as the
// second SIP worker (or the timer process, which frees what the workers made) does.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <cstddef>
#include <deque>
#include <memory>

#include "benchmark/benchmark.h"
#include "sipd/core/shm.h"

namespace {

namespace bip = boost::interprocess;

constexpr size_t kHeapBytes = 64u * 1024 * 1024;  // sipd's default shm_size
constexpr std::array<size_t, 9> kCallBlocks = {600, 560, 64, 40, 24, 900, 420, 380, 920};
constexpr size_t kLiveCalls = 1000;

// The heap before the cache: Boost's allocator, process-shared mutex, in shared memory.
class BoostHeap {
 public:
  BoostHeap()
      : region_(bip::anonymous_shared_memory(kHeapBytes)),
        heap_(bip::create_only, region_.get_address(), region_.get_size()) {}
  void* Allocate(size_t bytes) { return heap_.allocate(bytes, std::nothrow); }
  void Deallocate(void* p) { heap_.deallocate(p); }

 private:
  bip::mapped_region region_;
  sipd::ShmHeap heap_;
};

class CachedHeap {
 public:
  CachedHeap() : shm_(std::move(*sipd::SharedMemory::Create(kHeapBytes))) {}
  void* Allocate(size_t bytes) { return shm_->Allocate(bytes); }
  void Deallocate(void* p) { shm_->Deallocate(p); }

 private:
  std::unique_ptr<sipd::SharedMemory> shm_;
};

template <typename Heap>
class Calls {
 public:
  explicit Calls(Heap& heap) : heap_(heap) {}
  ~Calls() {
    while (!live_.empty()) End();
  }
  bool Step() {
    std::array<void*, kCallBlocks.size()> call{};
    for (size_t i = 0; i < kCallBlocks.size(); ++i) {
      call[i] = heap_.Allocate(kCallBlocks[i]);
      if (call[i] == nullptr) return false;
      static_cast<char*>(call[i])[0] = 1;
    }
    live_.push_back(call);
    if (live_.size() > kLiveCalls) End();
    return true;
  }

 private:
  void End() {
    for (void* p : live_.front()) heap_.Deallocate(p);
    live_.pop_front();
  }
  Heap& heap_;
  std::deque<std::array<void*, kCallBlocks.size()>> live_;
};

template <typename Heap>
void BM_CallChurn(benchmark::State& state) {
  Heap heap;
  pid_t other = -1;
  if (state.range(0) > 1) {
    other = fork();
    if (other == 0) {
      Calls<Heap> calls(heap);
      while (calls.Step()) {
      }
      _exit(1);
    }
  }
  {
    Calls<Heap> calls(heap);
    for (int i = 0; i < 2000; ++i) calls.Step();  // warm: the window is full
    for (auto _ : state) {
      if (!calls.Step()) {
        state.SkipWithError("heap full");
        break;
      }
    }
  }
  if (other > 0) {
    kill(other, SIGKILL);
    waitpid(other, nullptr, 0);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_CallChurn<BoostHeap>)->ArgName("processes")->Arg(1)->Arg(2);
BENCHMARK(BM_CallChurn<CachedHeap>)->ArgName("processes")->Arg(1)->Arg(2);

}  // namespace

BENCHMARK_MAIN();
