#include "sipd/modules/mi_selftest/mi_selftest.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "sipd/core/clock.h"
#include "sipd/core/shm.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

using mi::Call;
using Arity = mi::ParamSpec::Arity;

constexpr size_t kMaxText = 128;

struct Job {
  mi::AsyncTicket ticket;
  int64_t due_ms = 0;
  bool fail = false;
  uint32_t text_size = 0;
  char text[kMaxText];
};

// In shared memory: a bounded array of jobs (unordered; the timer scans it).
struct JobQueue {
  RobustMutex mutex;
  size_t capacity = 0;
  size_t size = 0;
  Job jobs[1];  // really `capacity`
};

class MiSelftestModule final : public Module {
 public:
  std::string_view name() const override { return "mi_selftest"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    const int64_t* number = std::get_if<int64_t>(&value);
    if (param == "max_jobs" && number != nullptr && *number >= 1 && *number <= (1 << 20)) {
      max_jobs_ = static_cast<size_t>(*number);
      return absl::OkStatus();
    }
    if (param == "tick_ms" && number != nullptr && *number >= 1 && *number <= 1000) {
      tick_ms_ = static_cast<int>(*number);
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrCat("mi_selftest: unknown parameter or bad value '", std::string(param), "'"));
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    void* memory = core.shm().Allocate(sizeof(JobQueue) + sizeof(Job) * max_jobs_);
    if (memory == nullptr) return absl::ResourceExhaustedError("mi_selftest: no shared memory");
    queue_ = new (memory) JobQueue();
    queue_->capacity = max_jobs_;
    core.AddTimer("mi_selftest", std::chrono::milliseconds(tick_ms_), [this] { RunDue(); });

    const mi::ParamSpec delay{"delay_ms", Arity::kRequired, "milliseconds before the reply"};
    std::vector<mi::Command::Spec> specs = {
        {.name = "async_echo",
         .module = "mi_selftest",
         .help = "replies `echo:: <text>` after delay_ms, from the timer process",
         .params = {delay, {"text", Arity::kOptional, "the text to echo (default pong)"}},
         .flags = mi::kAsync,
         .handler = [this](Call& call) { return AddJob(call, /*fail=*/false); }},
        {.name = "async_fail",
         .module = "mi_selftest",
         .help = "completes with nothing after delay_ms (the transport's failure form)",
         .params = {delay},
         .flags = mi::kAsync,
         .handler = [this](Call& call) { return AddJob(call, /*fail=*/true); }},
        {.name = "async_never",
         .module = "mi_selftest",
         .help = "an async call that is never completed (deadline and cancellation tests)",
         .flags = mi::kAsync | mi::kNoInput,
         .handler =
             [](Call& call) {
               absl::StatusOr<mi::AsyncTicket> ticket = call.GoAsync();
               if (!ticket.ok() && !call.async_refused()) {
                 call.reply() = mi::Reply::Error(503, std::string(ticket.status().message()));
               }
               return absl::OkStatus();
             }},
        {.name = "async_pending",
         .module = "mi_selftest",
         .help = "async_echo/async_fail jobs not completed yet",
         .flags = mi::kNoInput,
         .handler =
             [this](Call& call) {
               std::lock_guard<RobustMutex> lock(queue_->mutex);
               call.reply().root.AddKid("pending", absl::StrCat(queue_->size));
               return absl::OkStatus();
             }},
    };
    for (auto& spec : specs) {
      if (absl::Status s = core.mi().Register(std::move(spec)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status AddJob(Call& call, bool fail) {
    int64_t delay = -1;
    const std::string& text = call.arg(0);
    if (std::from_chars(text.data(), text.data() + text.size(), delay).ptr !=
            text.data() + text.size() ||
        delay < 0 || delay > 600000) {
      call.reply() = mi::Reply::Error(400, "Bad delay_ms (0..600000)");
      return absl::OkStatus();
    }
    Job job;
    job.due_ms = MonotonicMs() + delay;
    job.fail = fail;
    const std::string echo = call.arg_count() > 1 ? call.arg(1) : "pong";
    job.text_size = static_cast<uint32_t>(std::min(echo.size(), kMaxText));
    std::memcpy(job.text, echo.data(), job.text_size);
    {
      std::lock_guard<RobustMutex> lock(queue_->mutex);
      if (queue_->size >= queue_->capacity) {
        call.reply() = mi::Reply::Error(503, "Too many async jobs");
        return absl::OkStatus();
      }
      absl::StatusOr<mi::AsyncTicket> ticket = call.GoAsync();
      if (!ticket.ok() && !call.async_refused()) {
        call.reply() = mi::Reply::Error(503, std::string(ticket.status().message()));
        return absl::OkStatus();
      }
      // Without a ticket (a transport that cannot wait: 202 Accepted) the job still
      // runs; its completion finds no caller.
      job.ticket = ticket.ok() ? *ticket : mi::AsyncTicket{};
      queue_->jobs[queue_->size++] = job;
    }
    return absl::OkStatus();
  }

  // Timer process: completes every due job. Replies are built outside the lock.
  void RunDue() {
    std::vector<Job> due;
    const int64_t now = MonotonicMs();
    {
      std::lock_guard<RobustMutex> lock(queue_->mutex);
      for (size_t i = 0; i < queue_->size;) {
        if (queue_->jobs[i].due_ms <= now) {
          due.push_back(queue_->jobs[i]);
          queue_->jobs[i] = queue_->jobs[--queue_->size];
        } else {
          ++i;
        }
      }
    }
    for (const Job& job : due) {
      if (!job.ticket.valid()) continue;
      bool delivered;
      if (job.fail) {
        delivered = core_->async().Complete(job.ticket, nullptr);
      } else {
        mi::Reply reply;
        reply.root.AddKid("echo", std::string(job.text, job.text_size));
        delivered = core_->async().Complete(job.ticket, &reply);
      }
      if (!delivered) spdlog::debug("mi_selftest: caller of {} is gone", job.ticket.ToString());
    }
  }

  Core* core_ = nullptr;
  size_t max_jobs_ = 4096;
  int tick_ms_ = 5;
  JobQueue* queue_ = nullptr;
};

}  // namespace

std::unique_ptr<Module> NewMiSelftestModule() { return std::make_unique<MiSelftestModule>(); }

}  // namespace sipd
