// One POST /mi body being answered: its JSON-RPC calls run one after another through
// the Dispatcher (Delivery::kPull), their responses appended to the connection's output
// a part at a time, so a streamed reply (ul_dump) is never held whole and a slow client
// costs one part's buffer.
//
// The connection calls Run() whenever it can take more output: Run() appends at most
// about `limit` bytes (one stream part may go past it) and says whether more will come
// (kMore), whether it is waiting for a call still running (kWaiting: the call's on_ready
// comes later through Dispatcher::RunCompletions()), or done (kDone).
//
// Thread-safety: owned by one connection on the server's event-loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "registry/call_context.h"
#include "registry/dispatcher.h"
#include "sipd/modules/httpd/json_reply.h"
#include "sipd/modules/httpd/jsonrpc.h"

namespace sipd::httpd {

class RpcJob {
 public:
  enum class State { kMore, kWaiting, kDone, kBroken };

  // `context` is copied into every call (a fresh cancellation token each). `on_ready`
  // is called when a waiting call becomes ready.
  RpcJob(mi::Dispatcher& dispatcher, RpcBody body, mi::CallContext context,
         std::function<void()> on_ready);
  ~RpcJob();  // cancels a running call

  // kBroken: a stream failed after its first part was sent; the response cannot be
  // completed (the connection must be cut so the client sees a truncated body).
  State Run(std::string& out, size_t limit);
  // Whether the response is empty so far and will stay empty (notifications only).
  bool silent() const { return silent_; }

 private:
  void StartNext(std::string& out);
  // Writes more of the current call; true when it is over.
  bool Continue(std::string& out, bool& broken);
  void Separator(std::string& out);

  mi::Dispatcher& dispatcher_;
  RpcBody body_;
  mi::CallContext context_;
  std::function<void()> on_ready_;
  size_t next_ = 0;
  bool opened_ = false;
  bool wrote_any_ = false;
  bool silent_ = true;
  std::unique_ptr<mi::Exchange> current_;
  std::unique_ptr<JsonRpcReplyWriter> writer_;
  bool current_silent_ = false;
  std::string discard_;
};

}  // namespace sipd::httpd
