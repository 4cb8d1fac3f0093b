#include "sipd/modules/httpd/rpc_job.h"

#include "absl/strings/str_cat.h"

namespace sipd::httpd {

RpcJob::RpcJob(mi::Dispatcher& dispatcher, RpcBody body, mi::CallContext context,
               std::function<void()> on_ready)
    : dispatcher_(dispatcher),
      body_(std::move(body)),
      context_(std::move(context)),
      on_ready_(std::move(on_ready)) {}

RpcJob::~RpcJob() {
  if (current_) current_->Cancel();
}

void RpcJob::Separator(std::string& out) {
  silent_ = false;
  if (body_.batch && wrote_any_) out.push_back(',');
  wrote_any_ = true;
}

void RpcJob::StartNext(std::string& out) {
  RpcCall& call = body_.calls[next_];
  if (!call.invalid_response.empty()) {
    Separator(out);
    out.append(call.invalid_response);
    ++next_;
    return;
  }
  mi::CallContext context = context_;
  context.cancel = mi::CancellationToken();
  current_silent_ = call.notification;
  writer_ = std::make_unique<JsonRpcReplyWriter>(call.id_json);
  current_ = dispatcher_.Start(std::move(context), std::move(call.request), mi::Delivery::kPull,
                               nullptr, on_ready_);
}

bool RpcJob::Continue(std::string& out, bool& broken) {
  std::string& target = current_silent_ ? discard_ : out;
  if (!current_silent_ && !writer_->started()) Separator(out);
  writer_->set_output(&target);
  const mi::Outcome outcome = current_->outcome();
  if (outcome != mi::Outcome::kReply) {
    const mi::Reply& reply = current_->reply();
    target.append(JsonRpcError(body_.calls[next_].id_json, reply.code, reply.reason));
  } else {
    const bool last = current_->WriteNext(*writer_);
    if (!last) {
      discard_.clear();
      return false;
    }
    if (current_->outcome() == mi::Outcome::kFailed) {
      // The stream failed midway: the part already written cannot be taken back.
      broken = !current_silent_;
    } else if (!writer_->finished()) {
      writer_->EndReply();
    }
  }
  discard_.clear();
  current_.reset();
  writer_.reset();
  ++next_;
  return true;
}

RpcJob::State RpcJob::Run(std::string& out, size_t limit) {
  if (!body_.error_response.empty()) {
    if (next_ == 0) {
      silent_ = false;
      out.append(body_.error_response);
      next_ = 1;
    }
    return State::kDone;
  }
  if (!opened_) {
    opened_ = true;
    if (body_.batch) out.push_back('[');
  }
  while (true) {
    if (current_) {
      if (!current_->ready()) return State::kWaiting;
      bool broken = false;
      const bool over = Continue(out, broken);
      if (broken) return State::kBroken;
      if (!over) {
        if (out.size() >= limit) return State::kMore;
        continue;
      }
    }
    if (next_ >= body_.calls.size()) {
      if (body_.batch) {
        if (silent_) {
          out.clear();  // only notifications: nothing at all (JSON-RPC 2.0, 6)
        } else {
          out.push_back(']');
        }
      }
      return State::kDone;
    }
    if (out.size() >= limit) return State::kMore;
    StartNext(out);
  }
}

}  // namespace sipd::httpd
