// A tm double for the dialog module's unit tests: the real callback lists
// (sipd/modules/tm/tm_api.h) driven with real parsed SIP messages, and SendRequest()
// recording the requests instead of sending them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sipd/api/module.h"
#include "sipd/modules/tm/sip_message.h"
#include "sipd/modules/tm/tm_api.h"

namespace sipd::testing {

class FakeTm final : public Module, public tm::TmApi {
 public:
  std::string_view name() const override { return "tm"; }
  absl::Status SetParam(std::string_view, const ParamValue&) override { return absl::OkStatus(); }
  absl::Status Init(Core&) override { return absl::OkStatus(); }

  tm::Callbacks& callbacks() override { return callbacks_; }
  uint32_t RegisterCompletion(std::string, tm::Completion fn) override {
    completions_.push_back(std::move(fn));
    return static_cast<uint32_t>(completions_.size());
  }
  absl::StatusOr<tm::TransactionId> SendRequest(const tm::UacRequest& request) override {
    if (!send_status.ok()) return send_status;
    sent.push_back(request);
    return tm::TransactionId{1, static_cast<uint32_t>(sent.size())};
  }
  absl::Status Reply(tm::TransactionId, int, std::string_view, const std::vector<std::string>&,
                     std::string_view) override {
    return absl::UnimplementedError("the fake tm answers no transaction");
  }
  void SetTracer(tm::Tracer*) override {}

  // What a relay of `request` (SIP text) does: runs the relay callbacks and returns the
  // event (cookie, Record-Route params, refusal).
  struct Relayed {
    uint64_t cookie = 0;
    std::vector<std::string> rr_params;
  };
  Relayed Relay(std::string_view text, const tm::Peer& source, tm::TransactionId id = {7, 1}) {
    auto message = tm::SipMessage::Parse(text);
    if (!message.ok()) return {};
    tm::RequestEvent event(*message, source, id, {"sip:target@192.0.2.9:5060"});
    callbacks_.RunRelay(event);
    return Relayed{event.cookie(), event.record_route_params()};
  }
  // A reply to the INVITE transaction with `cookie`, as it goes upstream.
  void Reply(std::string_view text, uint64_t cookie, bool forwarded = true) {
    auto message = tm::SipMessage::Parse(text);
    if (!message.ok()) return;
    tm::ReplyEvent e;
    e.transaction = tm::TransactionId{7, 1};
    e.cookie = cookie;
    e.method = tm::Method::kInvite;
    e.call_id = message->call_id();
    e.from_tag = message->from_tag();
    e.code = message->status();
    e.reason = message->reason();
    e.reply = &*message;
    e.branch = 0;
    e.forwarded = forwarded;
    callbacks_.RunReply(e);
  }
  // A reply sipd made up (408 on timeout, 487 ...).
  void LocalReply(int code, uint64_t cookie) {
    tm::ReplyEvent e;
    e.transaction = tm::TransactionId{7, 1};
    e.cookie = cookie;
    e.method = tm::Method::kInvite;
    e.code = code;
    e.reason = "Request Timeout";
    e.forwarded = true;
    callbacks_.RunReply(e);
  }
  void End(uint64_t cookie, int final_code) {
    tm::EndEvent e;
    e.transaction = tm::TransactionId{7, 1};
    e.cookie = cookie;
    e.method = tm::Method::kInvite;
    e.final_code = final_code;
    callbacks_.RunEnd(e);
  }

  std::vector<tm::UacRequest> sent;
  absl::Status send_status;

 private:
  tm::Callbacks callbacks_;
  std::vector<tm::Completion> completions_;
};

// SIP text of one call between alice (caller, UDP 192.0.2.1:5070) and bob.
struct CallText {
  std::string callid = "call-1@192.0.2.1";
  std::string from_tag = "alice-tag";
  std::string to_tag = "bob-tag";
  std::string from_user = "alice";
  std::string ruri_user = "bob";
  // Record-Route entries of the INVITE as sipd receives it (proxies on the caller side).
  std::vector<std::string> invite_rr;

  std::string Invite(uint32_t cseq = 1, const std::vector<std::string>& extra = {}) const {
    std::string rr;
    for (const auto& r : invite_rr) absl::StrAppend(&rr, "Record-Route: ", r, "\r\n");
    std::string more;
    for (const auto& h : extra) absl::StrAppend(&more, h, "\r\n");
    return absl::StrCat("INVITE sip:", ruri_user,
                        "@sipd.example.com SIP/2.0\r\n"
                        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-inv\r\n",
                        rr, "From: \"Alice\" <sip:", from_user, "@example.com>;tag=", from_tag,
                        "\r\nTo: <sip:", ruri_user,
                        "@sipd.example.com>\r\n"
                        "Call-ID: ",
                        callid, "\r\nCSeq: ", cseq,
                        " INVITE\r\n"
                        "Contact: <sip:alice@192.0.2.1:5070>\r\n",
                        more, "Content-Length: 0\r\n\r\n");
  }
  // A reply to the INVITE; `rr` = the Record-Route the UAS copied.
  std::string Reply(int code, std::string_view reason, bool with_tag,
                    const std::vector<std::string>& rr = {}) const {
    std::string rrs;
    for (const auto& r : rr) absl::StrAppend(&rrs, "Record-Route: ", r, "\r\n");
    return absl::StrCat("SIP/2.0 ", code, " ", std::string(reason),
                        "\r\n"
                        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-inv\r\n",
                        rrs, "From: \"Alice\" <sip:", from_user, "@example.com>;tag=", from_tag,
                        "\r\nTo: <sip:", ruri_user, "@sipd.example.com>",
                        with_tag ? absl::StrCat(";tag=", to_tag) : std::string(),
                        "\r\nCall-ID: ", callid,
                        "\r\nCSeq: 1 INVITE\r\n"
                        "Contact: <sip:bob@192.0.2.9:5060>\r\n"
                        "Content-Length: 0\r\n\r\n");
  }
  // An in-dialog request from the caller (or, with from_callee, from the callee).
  std::string InDialog(std::string_view method, uint32_t cseq, bool from_callee = false) const {
    const std::string caller = absl::StrCat("<sip:", from_user, "@example.com>;tag=", from_tag);
    const std::string callee = absl::StrCat("<sip:", ruri_user, "@sipd.example.com>;tag=", to_tag);
    return absl::StrCat(std::string(method), " sip:x@192.0.2.50 SIP/2.0\r\n",
                        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-", std::string(method),
                        cseq, "\r\nFrom: ", from_callee ? callee : caller,
                        "\r\nTo: ", from_callee ? caller : callee, "\r\nCall-ID: ", callid,
                        "\r\nCSeq: ", cseq, " ", std::string(method),
                        "\r\nContent-Length: 0\r\n\r\n");
  }
};

inline tm::Peer CallerPeer() {
  return tm::Peer{.proto = tm::Proto::kUdp,
                  .ip = "192.0.2.1",
                  .port = 5070,
                  .socket = "udp:192.0.2.50:5060",
                  .connection = 0};
}

}  // namespace sipd::testing
