// The TCP connection table: every open (or opening) TCP connection of sipd, in shared
// memory, so any process can route a Send() to the connection's owner and `MI
// list_tcp_conns` / net:waiting_tcp can see them all.
//
// Layout (one block of the sipd shared-memory heap, created in the attendant before the
// fork; raw pointers are valid in every process):
//   - `capacity` slots (= tcp_max_connections). A slot in use has a non-zero id; ids are
//     generation * capacity + index + 1, so an id names its slot and is never reused
//     while sipd runs (a stale id simply finds a slot whose id differs);
//   - a free list of slots and an address index (hash of the peer's IP:port -> chain of
//     slots), so Send() finds "the open connection to this address" (RFC 3261 18.1.1)
//     without a scan;
//   - per slot an inbox: a linked list of messages (one heap block each) that other
//     processes queued for the owner, bounded by the caller's limit together with the
//     owner's own pending bytes (`owner_queued`);
//   - per owner (TCP receiver) a work list of slots whose inbox the owner has not taken
//     yet, and the owner's connection count (for choosing the least loaded receiver).
//
// Who writes what: TCP main adds accepted connections (state kInit) and picks their
// owner; any process adds outbound connections (kConnecting) while queueing their first
// message; only the owner changes a slot's state, local address, activity time and
// owner_queued, and only the owner removes it. Readers (MI) take snapshots.
//
// Process-safety: one RobustMutex guards the table (allocation, index, inboxes, work
// lists); it is held only to relink records and copy a few fields, never during I/O or
// allocation from the shared heap (message blocks are allocated before it is taken and
// freed after it is released). Slot fields that the owner updates often (activity time,
// owner_queued) are atomics written without the lock. A process that dies while holding
// the lock leaves, at worst, a slot half-linked into the index, a message linked behind
// a stale tail pointer, or a stale count: the next locker gets EOWNERDEAD and rebuilds
// the free list, the index, the inbox tails and byte counts, the work lists and the
// per-owner counts from the slots themselves (a message block being linked at that
// moment may leak). A TCP receiver that dies takes its connections' descriptors with it;
// the attendant restarts it and its successor calls ReclaimOwner() first, which frees
// every slot it had adopted (a descriptor passed by TCP main and received, but not yet
// adopted, when the receiver died is lost with it: that one slot stays in kInit until
// sipd restarts; the window is a few instructions wide).
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip_transport.h"

namespace sipd {

// Connection states as list_tcp_conns prints them (OpenSIPS values).
enum class TcpState : int {
  kOk = 0,          // established, owned by a receiver
  kInit = 1,        // accepted by TCP main, not adopted by its receiver yet
  kEof = 2,         // closing
  kConnecting = 5,  // outbound, connect() in progress (or not started yet)
};

// A copy of one slot.
struct TcpConnInfo {
  uint64_t id = 0;
  TcpState state = TcpState::kInit;
  int owner = 0;    // TCP receiver index
  int socket = -1;  // listen socket index (its local IP for outbound connections)
  bool outbound = false;
  SipAddress peer;
  SipAddress local;
  int64_t last_activity_ms = 0;  // wall clock (ms since the epoch)
  uint64_t queued_bytes = 0;     // inbox + owner's pending
};

class TcpConnTable {
 public:
  struct Limits {
    size_t capacity = 2048;  // tcp_max_connections
    int owners = 1;          // TCP receivers
  };

  // Builds the table in `shm`. ResourceExhausted when it does not fit.
  static absl::StatusOr<TcpConnTable*> Create(SharedMemory& shm, Limits limits);

  size_t capacity() const { return capacity_; }
  int owners() const { return owners_; }

  // TCP main: records an accepted connection (kInit) owned by the least loaded receiver.
  // Returns its id and owner, or ResourceExhausted when the table is full.
  struct Added {
    uint64_t id = 0;
    int owner = 0;
  };
  absl::StatusOr<Added> AddAccepted(const SipAddress& peer, const SipAddress& local, int socket);

  // Send(): queues `message` for the connection `connection` if it is open, else for an
  // open connection to `peer`, else (if `connect_socket` >= 0) for a
  // new outbound connection to `peer` from that listen socket (kConnecting, least
  // loaded owner). Refuses when the connection's queued bytes would exceed `max_queued`
  // (ResourceExhausted), when nothing matches and connect_socket < 0 (Unavailable), or
  // when the table is full (ResourceExhausted). On success tells which connection and
  // owner got it, and whether the owner must be woken (its work list was empty).
  struct Queued {
    uint64_t id = 0;
    int owner = 0;
    bool wake = false;
    bool created = false;
  };
  absl::StatusOr<Queued> Enqueue(uint64_t connection, const SipAddress& peer, int connect_socket,
                                 std::string_view message, uint64_t max_queued);

  // The owner and state of `id`, if it is in the table (lock-free; may be stale).
  bool Lookup(uint64_t id, int* owner, TcpState* state) const;
  // A copy of slot `id`; false if it is not in the table.
  bool Info(uint64_t id, TcpConnInfo* out) const;
  // The id of an open (kOk/kInit/kConnecting) connection to `peer`, or 0.
  uint64_t FindByPeer(const SipAddress& peer) const;

  // --- owner only ---
  // Takes the work list of `owner`: ids of its slots that have queued messages (or are
  // new outbound connections to open).
  std::vector<uint64_t> TakeWork(int owner);
  // Moves the inbox of `id` to the end of *out (one message after the other). Returns the
  // number of bytes moved (0 if none or `id` is gone).
  size_t TakeInbox(uint64_t id, std::string* out);
  void SetState(uint64_t id, TcpState state);
  void SetLocal(uint64_t id, const SipAddress& local);
  void Touch(uint64_t id, int64_t now_ms);
  void SetOwnerQueued(uint64_t id, uint64_t bytes);
  // The owner has taken connection `id` into its process (it holds its descriptor now):
  // an accepted connection it received, or an outbound one it started to connect.
  void Adopt(uint64_t id);
  // Frees the slot (dropping queued messages). No-op for an unknown id.
  void Remove(uint64_t id);
  // A new process for receiver `owner` starts: frees every slot its predecessor had
  // adopted (their descriptors died with it) and returns how many. Slots not adopted yet
  // stay: accepted connections whose descriptor is still in the hand-off channel, and
  // outbound connections nobody started; the ids of the latter go to *to_connect.
  size_t ReclaimOwner(int owner, std::vector<uint64_t>* to_connect = nullptr);

  // --- readers ---
  std::vector<TcpConnInfo> Snapshot() const;
  size_t size() const;
  // Sum of queued_bytes over all connections (net:waiting_tcp's outbound part).
  uint64_t QueuedBytes() const;

  // Tests only: takes the table lock and never releases it (the calling process is
  // about to die), to exercise the repair done by the next locker.
  void LockAndAbandonForTesting() { LockTable(); }

 private:
  struct Message;
  struct Slot;
  struct Header;

  TcpConnTable() = default;
  void LockTable() const;
  void Repair() const;
  Slot* SlotOf(uint64_t id) const;
  size_t Bucket(const SipAddress& peer) const;
  // REQUIRES: lock held.
  Slot* AllocateSlot(int owner);
  void FreeSlot(Slot& s, std::vector<Message*>* garbage);
  void IndexInsert(Slot& s);
  void IndexRemove(Slot& s);
  int LeastLoadedOwner() const;
  Slot* FindOpenLocked(const SipAddress& peer) const;
  void FreeMessages(const std::vector<Message*>& garbage);

  SharedMemory* shm_ = nullptr;
  Header* header_ = nullptr;
  Slot* slots_ = nullptr;
  int32_t* buckets_ = nullptr;
  int32_t* work_heads_ = nullptr;    // per owner
  int32_t* owner_counts_ = nullptr;  // per owner
  size_t capacity_ = 0;
  size_t bucket_count_ = 0;
  int owners_ = 0;
};

// Wall clock in ms since the epoch (the table's time base).
int64_t WallClockMs();

}  // namespace sipd
