// Completion-queue tags of the MI gRPC server.
//
// The server is an asynchronous (completion-queue) gRPC server: every tag handed to
// gRPC is a CqTag*, and the thread that owns the queue calls Complete(ok) when the
// operation finishes. Call objects embed one MemberTag per kind of operation.
//
// Why not gRPC's callback API: in gRPC 1.51 callback methods are run by two internal
// "nexting" threads that take turns with everybody else at polling, so most calls hop
// between threads (futex wake-ups, context switches). Measured on the 2-core target,
// that doubled the server CPU per Execute; with our own queue thread doing the polling
// and the MI dispatch inline, a call is read, run and answered on one thread.
//
// Thread-safety: Complete() runs on the queue's thread; what it touches is the owning
// call's business (each call documents its own locking).
#pragma once

namespace sipd::service {

class CqTag {
 public:
  virtual void Complete(bool ok) = 0;

 protected:
  ~CqTag() = default;
};

// A tag that calls `(owner->*Method)(ok)`.
template <typename Owner, void (Owner::*Method)(bool)>
class MemberTag final : public CqTag {
 public:
  explicit MemberTag(Owner* owner) : owner_(owner) {}
  void Complete(bool ok) override { (owner_->*Method)(ok); }

 private:
  Owner* const owner_;
};

}  // namespace sipd::service
