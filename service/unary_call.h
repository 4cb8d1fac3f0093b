// One unary call of an asynchronous (completion-queue) gRPC method whose answer is
// cheap and never blocks: requested -> answered by `(owner->*answer)(request, &response)`
// on the queue thread -> deleted. Used for ListCommands, DescribeCommand and
// grpc.health.v1.Health/Check, which never go to the worker pool.
//
// Each call posts its successor as soon as its request arrives, so one call per method
// and queue is always waiting. A non-OK answer becomes the call's status, with no
// response message.
//
// The owner's live_calls() counts each call object (service/live_calls.h).
//
// Thread-safety: a call lives on the thread of its completion queue; `answer` must be
// safe to run there (it may lock the owner's own mutexes).
#pragma once

#include "grpcpp/grpcpp.h"
#include "service/cq_tag.h"
#include "service/live_calls.h"
#include "service/rich_status.h"

namespace sipd::service {

template <typename Owner, typename AsyncService, typename Request, typename Response>
class UnaryCall final : public CqTag {
 public:
  using RequestMethod = void (AsyncService::*)(grpc::ServerContext*, Request*,
                                               grpc::ServerAsyncResponseWriter<Response>*,
                                               grpc::CompletionQueue*, grpc::ServerCompletionQueue*,
                                               void*);
  using AnswerMethod = grpc::Status (Owner::*)(const Request&, Response*) const;

  // Posts the request on `cq`; the object deletes itself.
  UnaryCall(const Owner* owner, AsyncService* service, grpc::ServerCompletionQueue* cq,
            RequestMethod request, AnswerMethod answer)
      : live_(owner->live_calls()),
        owner_(owner),
        service_(service),
        cq_(cq),
        request_method_(request),
        answer_(answer),
        responder_(&ctx_) {
    (service_->*request_method_)(&ctx_, &request_, &responder_, cq_, cq_, this);
  }

  void Complete(bool ok) override {
    if (answered_ || !ok) {  // Finish done, or the server shuts down
      delete this;
      return;
    }
    new UnaryCall(owner_, service_, cq_, request_method_, answer_);
    answered_ = true;
    const grpc::Status status = (owner_->*answer_)(request_, &response_);
    if (status.ok()) {
      responder_.Finish(response_, status, this);
    } else {
      responder_.FinishWithError(WithErrorDetails(status), this);
    }
  }

 private:
  LiveCalls::Token live_;  // first, so that it goes last (service/live_calls.h)
  const Owner* const owner_;
  AsyncService* const service_;
  grpc::ServerCompletionQueue* const cq_;
  const RequestMethod request_method_;
  const AnswerMethod answer_;
  grpc::ServerContext ctx_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
  bool answered_ = false;
};

}  // namespace sipd::service
