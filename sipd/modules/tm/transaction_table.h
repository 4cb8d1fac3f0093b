// The transaction table of tm: 65536 buckets of transaction cells and a timer wheel, all
// in the sipd shared-memory heap (created in the attendant before the fork, so raw
// pointers are valid in every process). Internal to tm: other modules use tm_api.h.
//
// A cell is one transaction as OpenSIPS keeps it: the server side (the request sipd
// received, its reply state) and one client side per branch sipd relayed it to; a
// request sipd sends itself (t_uac_dlg) has no server side. Cells of received requests
// live in the bucket of their RFC 3261 17.2.3 key (top Via branch + sent-by), so a
// retransmission, the ACK for a non-2xx reply and a CANCEL all meet the cell in one
// bucket; replies find their cell from sipd's own branch parameter, which carries the
// bucket index and the cell's label (sip_builder.h MakeBranch). Cells of local requests
// live in the bucket of their Call-ID (t_uac_cancel finds them there).
//
// Locks. Each bucket has a RobustMutex guarding its cell list, every byte of its cells
// and their buffers; nobody touches a cell without its bucket lock, and nobody keeps a
// pointer to a cell after unlocking (the timer process and the MI find cells again by
// (index, label)). Whoever holds a bucket lock only reads, copies and relinks: messages
// to send and callbacks to run are collected and done after the unlock. The timer wheel
// has one RobustMutex of its own, always taken after (inside) a bucket lock, never the
// other way round: the timer process copies due timers out under the wheel lock, drops
// it, then locks buckets.
//
// What survives a process that dies while holding a lock:
//   - a bucket lock: the cell list is singly linked and a cell is linked (release store)
//     only once complete, so the list stays walkable (a cell being unlinked may leak).
//     Cell contents may be half-updated, so the next locker (EOWNERDEAD) ends every
//     transaction of that bucket: they get their wait timer and are deleted by the
//     timer process; callers of those transactions see no more answers. The bucket's
//     Current count is recounted.
//   - the wheel lock: a slot list may be half-relinked. The next locker empties the
//     wheel and starts a new epoch; links armed in an older epoch are never followed
//     again, and the timer process re-arms every cell's timers from the table (all
//     buckets, each under its lock) on its next run. Timers fire late, none is lost.
//   - the heap's own mutex is not robust (sipd/core/shm.h): a process killed inside an
//     allocation still wedges the heap.
//
// Thread/process-safety: every method may be called from any sipd process; the
// caller follows the lock rules above (REQUIRES comments).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/statistics.h"
#include "sipd/core/shm.h"
#include "sipd/modules/tm/sip_message.h"
#include "sipd/modules/tm/tm_api.h"

namespace sipd::tm {

inline constexpr uint32_t kBuckets = 65536;
inline constexpr uint32_t kMaxBranches = 12;

// An IPv4 or IPv6 socket address, small enough to keep in every branch.
union SocketAddress {
  sockaddr generic;
  sockaddr_in v4;
  sockaddr_in6 v6;
};

// Where a message goes: protocol, local socket, remote address, and for TCP the
// connection to reuse (0 = any / open one).
struct Destination {
  Proto proto = Proto::kUdp;
  uint16_t socket = 0;  // index in the transport's socket list
  uint64_t connection = 0;
  SocketAddress address{};

  socklen_t length() const {
    return address.generic.sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  }
  std::string ip() const;
  uint16_t port() const;
  // "udp:1.2.3.4:5060"
  std::string ToString() const;
  // Same protocol and remote address (connection and socket ignored).
  bool SameAddress(const Destination& other) const;
};
// Builds a destination from a numeric IP and a port; false if `ip` is not numeric.
bool MakeDestination(Proto proto, std::string_view ip, uint16_t port, Destination* out);

// Bytes in the shared heap.
struct ShmBuffer {
  char* data = nullptr;
  uint32_t size = 0;
  std::string_view view() const { return std::string_view(data, size); }
  bool empty() const { return size == 0; }
};

enum class TimerKind : uint8_t {
  kBranchRetransmit,  // A (INVITE) / E (non-INVITE), UDP only
  kBranchTimeout,     // B / F, then C (INVITE after a provisional reply)
  kCancelRetransmit,  // E of the CANCEL sipd sent on a branch
  kCancelTimeout,     // F of that CANCEL
  kServerRetransmit,  // G: the non-2xx final reply to an INVITE, UDP only
  kWait,              // H (no ACK yet) / wt_timer: the cell is deleted when it fires
};

// A timer of a cell; lives inside the cell. Linked into a wheel slot when armed.
struct TimerLink {
  TimerLink* prev = nullptr;
  TimerLink* next = nullptr;
  int64_t due_ms = 0;
  uint32_t generation = 0;  // changes at every arm and disarm
  uint32_t epoch = 0;       // the wheel epoch it was linked in
  bool armed = false;
  // Identity, so that the timer process finds the cell again.
  TimerKind kind = TimerKind::kWait;
  uint8_t branch = 0;
  uint32_t index = 0;
  uint32_t label = 0;
};

enum class ServerState : uint8_t {
  kNone,        // a local (UAC) cell
  kTrying,      // no reply sent yet
  kProceeding,  // a provisional reply sent
  kCompleted,   // a final reply sent (INVITE: non-2xx, waiting for the ACK)
  kConfirmed,   // INVITE: the ACK came
  kAccepted,    // INVITE: a 2xx sent (RFC 6026)
  kTerminated,  // waiting for deletion
};

enum class BranchState : uint8_t {
  kCalling,     // sent, no reply yet (Calling / Trying)
  kProceeding,  // a provisional reply came
  kCompleted,   // a final reply came (or the branch timed out / failed)
};

struct Branch {
  BranchState state = BranchState::kCalling;
  bool cancel_sent = false;
  bool failed_to_send = false;
  int16_t code = 0;  // last reply code (final once kCompleted); 408 on timeout
  uint32_t retransmit_ms = 0;
  uint32_t cancel_retransmit_ms = 0;
  Destination destination;
  ShmBuffer request;  // as sent
  ShmBuffer reply;    // the final reply as received, kept until the best one is chosen
  ShmBuffer cancel;   // the CANCEL as sent
  ShmBuffer ack;      // the ACK sipd sent for the final reply (resent on retransmissions)
  TimerLink retransmit;
  TimerLink timeout;
  TimerLink cancel_retransmit;
  TimerLink cancel_timeout;
};

struct Cell {
  std::atomic<Cell*> next{nullptr};  // bucket list
  uint32_t index = 0;
  uint32_t label = 0;
  Method method = Method::kOther;
  bool local = false;            // sipd sent the request itself
  bool canceled = false;         // a CANCEL came (or t_uac_cancel): a made-up final is 487
  bool cancel_branches = false;  // CANCEL every branch as soon as it may be (9.1)
  bool final_sent = false;       // server: a final reply went upstream; local: completion ran
  bool ended = false;            // waiting for deletion
  int16_t final_code = 0;
  uint32_t cseq = 0;
  uint32_t loop_hash = 0;
  uint64_t cookie = 0;
  uint32_t completion = 0;  // local cells: the completion id
  int64_t created_ms = 0;
  // Identity: the 17.2.3 key (server cells), Call-ID, From tag, completion data.
  ShmBuffer key;
  ShmBuffer call_id;
  ShmBuffer from_tag;
  ShmBuffer completion_data;
  // Server side.
  ServerState server_state = ServerState::kNone;
  Destination source;    // where replies go
  ShmBuffer request;     // as received (local cells: as sent on branch 0)
  ShmBuffer last_reply;  // the last reply sent upstream
  uint32_t server_retransmit_ms = 0;
  TimerLink server_retransmit;
  TimerLink wait;
  // Client side.
  uint8_t branch_count = 0;
  Branch* branches = nullptr;  // branch_count of them
};

struct Bucket {
  RobustMutex mutex;
  std::atomic<Cell*> first{nullptr};
  uint32_t next_label = 1;
  // Written under the lock, read without it by t_hash.
  std::atomic<uint32_t> current{0};  // cells in this bucket (t_hash Current)
  std::atomic<uint64_t> total{0};    // cells ever created here (t_hash Total)
};

// A timer copied out of the wheel by CollectDue().
struct DueTimer {
  uint32_t index = 0;
  uint32_t label = 0;
  TimerKind kind = TimerKind::kWait;
  uint8_t branch = 0;
  uint32_t generation = 0;
};

class TransactionTable {
 public:
  // Wheel resolution.
  static constexpr int64_t kTickMs = 10;
  static constexpr uint32_t kSlots = 4096;

  // Creates the buckets and the wheel in `shm` (about 5 MB). REQUIRES: attendant, before
  // the fork. `inuse` counts the live cells (tm:inuse_transactions).
  static absl::StatusOr<std::unique_ptr<TransactionTable>> Create(SharedMemory& shm,
                                                                  mi::Counter inuse,
                                                                  int64_t now_ms);
  ~TransactionTable();

  SharedMemory& shm() { return shm_; }

  // Locks bucket `index`, repairing it if its last holder died (see file comment).
  // Returns the bucket. Unlock with UnlockBucket().
  Bucket& LockBucket(uint32_t index, int64_t now_ms);
  void UnlockBucket(Bucket& bucket) { bucket.mutex.Unlock(); }
  // Unlocked reads for t_hash (a snapshot, not exact under load).
  uint32_t current(uint32_t index) const;
  uint64_t total(uint32_t index) const;

  // REQUIRES: the bucket is locked. A new cell with `branches` branches, linked into the
  // bucket with a fresh label; nullptr when shared memory is full.
  Cell* NewCell(Bucket& bucket, uint32_t index, uint32_t branches);
  // REQUIRES: the bucket is locked. Grows the branch array to `count` (new branches
  // default-initialised). False when memory is full.
  bool SetBranchCount(Cell& cell, uint32_t count);
  // REQUIRES: the bucket is locked. Unlinks the cell, disarms its timers, frees it.
  void DeleteCell(Bucket& bucket, Cell* cell);
  // REQUIRES: the bucket is locked.
  Cell* FindByLabel(Bucket& bucket, uint32_t label);

  // Buffers (REQUIRES: the bucket of the cell that owns them is locked). False when
  // memory is full (the buffer is then empty).
  bool Assign(ShmBuffer& buffer, std::string_view bytes);
  void Release(ShmBuffer& buffer);

  // Timers (REQUIRES: the bucket of the cell is locked). Arm re-arms an armed link.
  void Arm(TimerLink& link, int64_t due_ms);
  void Disarm(TimerLink& link);
  // Timer process: removes and returns every timer due at `now_ms`.
  void CollectDue(int64_t now_ms, std::vector<DueTimer>& out);
  // Timer process, after the wheel was reset (a process died holding its lock): re-arms
  // every armed timer of every cell. Returns the number re-armed. Cheap no-op otherwise.
  size_t RebuildIfNeeded(int64_t now_ms);

  // Tests: takes the timer lock and keeps it (to die holding it).
  void LockTimersForTesting() { LockWheel(); }
  // Tests: how many bucket locks are held (by anyone, the caller included).
  size_t LockedBucketsForTesting();

  // Every timer link of a cell, for iteration.
  template <typename Fn>
  static void ForEachLink(Cell& cell, Fn fn) {
    fn(cell.server_retransmit);
    fn(cell.wait);
    for (uint32_t i = 0; i < cell.branch_count; ++i) {
      Branch& b = cell.branches[i];
      fn(b.retransmit);
      fn(b.timeout);
      fn(b.cancel_retransmit);
      fn(b.cancel_timeout);
    }
  }

  // INVITE server transactions ended recently (RFC 3261 Timer L / RFC 6026: a late
  // retransmission of an INVITE must not start a second transaction). The cell is gone
  // after wt_timer; its key's 64-bit fingerprint stays here until `until_ms`. A
  // lock-free open-addressing array (a few MB): Remember() takes an empty or expired
  // slot among 8 (none free: forgotten, the oldest-first guarantee is not kept); a
  // process that dies mid-write leaves at worst one slot that expires.
  void RememberEnded(uint64_t fingerprint, int64_t now_ms, int64_t until_ms);
  bool RecentlyEnded(uint64_t fingerprint, int64_t now_ms) const;
  static uint64_t Fingerprint(std::string_view key);

  struct Wheel;
  struct Recent;

 private:
  TransactionTable(SharedMemory& shm, Bucket* buckets, Wheel* wheel, Recent* recent,
                   mi::Counter inuse);
  void LockWheel();
  void RepairBucket(Bucket& bucket, int64_t now_ms);
  void FreeCellMemory(Cell* cell);

  SharedMemory& shm_;
  Bucket* buckets_;
  Wheel* wheel_;
  Recent* recent_;
  mi::Counter inuse_;
};

}  // namespace sipd::tm
