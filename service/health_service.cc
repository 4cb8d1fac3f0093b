#include "service/health_service.h"

#include "service/cq_tag.h"
#include "service/unary_call.h"

namespace sipd::service {

namespace health = ::grpc::health::v1;

// One Watch: sends the status now and on every change, one write in flight at a time.
// Deleted when the call is done (client gone or finished) and no operation is pending.
// Thread-safety: mu_ guards the write state; Notify() comes from any thread.
class HealthService::WatchCall final {
 public:
  using Status = HealthService::Status;

  WatchCall(HealthService* health, grpc::ServerCompletionQueue* cq)
      : live_(health->live_calls()), health_(health), cq_(cq), writer_(&ctx_) {
    ctx_.AsyncNotifyWhenDone(&done_tag_);
    health_->service_.RequestWatch(&ctx_, &request_, &writer_, cq_, cq_, &request_tag_);
  }

  // The status changed (or the service shuts down): send it. Called with the health
  // service's mutex held (lock order: service, then watch).
  void Notify(Status status, bool shut_down) {
    std::lock_guard<std::mutex> lock(mu_);
    latest_ = status;
    shut_down_ = shut_down;
    SendLatestLocked();
  }

  const std::string& name() const { return request_.service(); }

 private:
  void OnRequest(bool ok) {
    if (!ok) {  // server shutting down before a call arrived; no done tag will come
      delete this;
      return;
    }
    new WatchCall(health_, cq_);
    started_ = true;
    health_->Register(this);  // sends the current status
  }

  void OnWriteDone(bool ok) {
    bool erase;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (ok && resend_) SendLatestLocked();
      erase = ReadyToDeleteLocked();
    }
    if (erase) delete this;
  }

  void OnFinishDone(bool) {
    bool erase;
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish_done_ = true;
      erase = ReadyToDeleteLocked();
    }
    if (erase) delete this;
  }

  void OnDone(bool) {
    health_->Unregister(this);  // before our lock (lock order); no Notify() after this
    bool erase;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      erase = ReadyToDeleteLocked();
    }
    if (erase) delete this;
  }

  // REQUIRES: mu_ held.
  void SendLatestLocked() {
    if (done_ || finish_called_) return;
    if (write_in_flight_) {
      resend_ = true;
      return;
    }
    resend_ = false;
    if (shut_down_ && sent_after_shutdown_) {
      finish_called_ = true;
      writer_.Finish(grpc::Status::OK, &finish_tag_);
      return;
    }
    response_.set_status(latest_);
    sent_after_shutdown_ = shut_down_;
    if (shut_down_) resend_ = true;  // after this NOT_SERVING write, finish
    write_in_flight_ = true;
    writer_.Write(response_, &write_tag_);
  }

  bool ReadyToDeleteLocked() const {
    return started_ && done_ && !write_in_flight_ && (!finish_called_ || finish_done_);
  }

  LiveCalls::Token live_;  // first, so that it goes last (service/live_calls.h)
  HealthService* const health_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  health::HealthCheckRequest request_;
  health::HealthCheckResponse response_;
  grpc::ServerAsyncWriter<health::HealthCheckResponse> writer_;
  MemberTag<WatchCall, &WatchCall::OnRequest> request_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnWriteDone> write_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnFinishDone> finish_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnDone> done_tag_{this};

  std::mutex mu_;
  Status latest_ = health::HealthCheckResponse::SERVICE_UNKNOWN;
  bool shut_down_ = false;
  bool started_ = false;
  bool write_in_flight_ = false;
  bool resend_ = false;
  bool finish_called_ = false;
  bool finish_done_ = false;
  bool done_ = false;
  bool sent_after_shutdown_ = false;
};

HealthService::Status HealthService::StatusLocked(const std::string& name) const {
  auto it = statuses_.find(name);
  return it == statuses_.end() ? health::HealthCheckResponse::SERVICE_UNKNOWN : it->second;
}

grpc::Status HealthService::Check(const health::HealthCheckRequest& request,
                                  health::HealthCheckResponse* response) const {
  Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status = StatusLocked(request.service());
  }
  if (status == health::HealthCheckResponse::SERVICE_UNKNOWN) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
  }
  response->set_status(status);
  return grpc::Status::OK;
}

void HealthService::Serve(grpc::ServerCompletionQueue* cq) {
  new UnaryCall<HealthService, health::Health::AsyncService, health::HealthCheckRequest,
                health::HealthCheckResponse>(
      this, &service_, cq, &health::Health::AsyncService::RequestCheck, &HealthService::Check);
  new WatchCall(this, cq);
}

void HealthService::SetServingStatus(const std::string& name, bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  const Status status =
      serving ? health::HealthCheckResponse::SERVING : health::HealthCheckResponse::NOT_SERVING;
  auto [it, inserted] = statuses_.emplace(name, status);
  if (!inserted && it->second == status) return;  // watchers hear of changes only
  it->second = status;
  for (WatchCall* call : watchers_) {
    if (call->name() == name) call->Notify(statuses_[name], false);
  }
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) return;
  shut_down_ = true;
  for (auto& [name, status] : statuses_) status = health::HealthCheckResponse::NOT_SERVING;
  for (WatchCall* call : watchers_) call->Notify(StatusLocked(call->name()), true);
}

void HealthService::Register(WatchCall* call) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.insert(call);
  call->Notify(StatusLocked(call->name()), shut_down_);
}

void HealthService::Unregister(WatchCall* call) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(call);
}

}  // namespace sipd::service
