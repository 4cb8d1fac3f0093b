// Async replies (spec 1.6): a command answers "pending" and its reply arrives later,
// from any process (t_uac_dlg: the SIP worker that receives the final SIP reply).
//
//   MI process (owner)                       any process (completer)
//   handler: ticket = call.GoAsync()  ──►    keeps the ticket with its work
//   transport keeps the caller               ...
//   wake_fd readable  ◄── Complete(ticket, reply): reply stored, owner woken
//   Dispatcher::RunCompletions(): TryTake(ticket) -> reply -> transport writes it
//
// The backend is the meeting point: in sipd it is a table in shared memory with one
// eventfd per MI process (sipd/core/async_table.h); LocalAsyncBackend below serves a
// single process (unit tests, in-process servers). Completion never blocks and never
// polls: the completer stores the reply and writes the owner's eventfd.
//
// A ticket is valid until it is taken or released: Complete() on a ticket that was
// released (caller cancelled or timed out) is refused and the reply dropped, so a late
// SIP reply can never reach the wrong caller (slots carry a generation).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "registry/tree.h"

namespace sipd::mi {

struct AsyncTicket {
  uint32_t slot = 0;
  // 0 = no ticket.
  uint32_t generation = 0;

  bool valid() const { return generation != 0; }
  // "slot.generation", for logs and for carrying a ticket in text.
  std::string ToString() const;
  static std::optional<AsyncTicket> Parse(std::string_view text);
  friend bool operator==(const AsyncTicket&, const AsyncTicket&) = default;
};

// What a completed ticket yields: the reply, or nothing ("the command failed", spec 1.6
// `reply = NULL, done = 1`).
using AsyncResult = std::optional<Reply>;

class AsyncBackend {
 public:
  virtual ~AsyncBackend() = default;

  // --- owner side: the process that holds the caller ---

  // Reserves a pending slot owned by the calling process. ResourceExhausted when every
  // slot is in use.
  virtual absl::StatusOr<AsyncTicket> Reserve() = 0;
  // The caller no longer waits (cancelled, timed out): frees the slot and whatever reply
  // is stored in it. A later Complete() is refused.
  virtual void Release(AsyncTicket ticket) = 0;
  // Takes the result of a completed ticket and frees the slot; nullopt while it is still
  // pending (or if the ticket is not this process's).
  virtual std::optional<AsyncResult> TryTake(AsyncTicket ticket) = 0;
  // Readable when a ticket of this process completed (or WakeSelf() was called). The
  // owner calls ClearWake() before looking at its tickets.
  virtual int wake_fd() const = 0;
  virtual void ClearWake() = 0;
  // Makes wake_fd() readable (in-process hand-offs, e.g. from worker threads).
  virtual void WakeSelf() = 0;

  // --- completer side: any process, any thread ---

  // Stores the final reply (nullptr = completed with nothing) and wakes the owner.
  // False (and nothing stored) if the ticket is no longer pending. Never blocks.
  virtual bool Complete(AsyncTicket ticket, const Reply* reply) = 0;
};

// An AsyncBackend for one process: tickets live in a map guarded by a mutex, the wake
// descriptor is an eventfd. Complete() may be called from any thread of the process.
class LocalAsyncBackend final : public AsyncBackend {
 public:
  // `capacity` bounds the pending tickets.
  explicit LocalAsyncBackend(size_t capacity = 4096);
  ~LocalAsyncBackend() override;
  LocalAsyncBackend(const LocalAsyncBackend&) = delete;
  LocalAsyncBackend& operator=(const LocalAsyncBackend&) = delete;

  absl::StatusOr<AsyncTicket> Reserve() override;
  void Release(AsyncTicket ticket) override;
  std::optional<AsyncResult> TryTake(AsyncTicket ticket) override;
  int wake_fd() const override { return wake_fd_; }
  void ClearWake() override;
  void WakeSelf() override;
  bool Complete(AsyncTicket ticket, const Reply* reply) override;

  size_t pending() const;

 private:
  struct Slot {
    uint32_t generation = 0;
    bool done = false;
    AsyncResult result;
  };

  const size_t capacity_;
  const int wake_fd_;
  mutable std::mutex mu_;
  uint32_t next_slot_ = 0;
  uint32_t next_generation_ = 1;
  std::map<uint32_t, Slot> slots_;
};

}  // namespace sipd::mi
