// The lock of a gRPC call object that the dispatcher may call back into.
//
// A call's state is touched by its completion-queue thread (tags) and by the thread that
// runs Dispatcher::RunCompletions() (an exchange's on_ready). registry/dispatcher.h
// warns that on_ready can race with Exchange::Cancel(): it may run after the transport
// cancelled the exchange and even after the call object is gone. So on_ready never
// holds the call itself: it holds this anchor (shared), locks it and finds the call, or
// nullptr once the call was deleted. The anchor's mutex is the call's own lock.
//
//   auto anchor = std::make_shared<CallAnchor<MyCall>>(this);
//   dispatcher.Start(..., [anchor] { anchor->Run([](MyCall& call) { call.OnReady(); }); });
//   // in the call, when it decides to delete itself, under anchor->mu:
//   anchor->call = nullptr;   // then unlock, then delete
//
// Thread-safety: `call` is guarded by `mu`.
#pragma once

#include <mutex>

namespace sipd::service {

template <typename Call>
struct CallAnchor {
  explicit CallAnchor(Call* c) : call(c) {}

  // Runs fn(*call) under the lock unless the call is gone.
  template <typename Fn>
  void Run(Fn&& fn) {
    std::lock_guard<std::mutex> lock(mu);
    if (call != nullptr) fn(*call);
  }

  std::mutex mu;
  Call* call;
};

}  // namespace sipd::service
