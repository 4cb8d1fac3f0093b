// What the fuzz targets around tm share: the last request and reply sipd sent, so that
// an input can answer sipd's client transactions (it cannot guess their branches) or
// name them in MI arguments.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "sipd/modules/tm/sip_builder.h"
#include "sipd/modules/tm/sip_message.h"

namespace sipd::fuzz {

// A reply code (100-699) from the first two payload bytes (200 when there are fewer).
inline int ReplyCode(std::string_view payload) {
  if (payload.size() < 2) return 200;
  const int raw = static_cast<uint8_t>(payload[0]) | (static_cast<uint8_t>(payload[1]) << 8);
  return 100 + raw % 600;
}

class LastSent {
 public:
  // Everything sipd sends goes through here.
  void Keep(std::string_view bytes) {
    if (bytes.starts_with("SIP/2.0 ")) {
      reply_.assign(bytes);
    } else {
      request_.assign(bytes);
    }
  }

  // "$B", "$C", "$S", "$T", "$X" -> the top Via branch, the Call-ID and the CSeq number
  // of the last request sipd sent, the To-tag of the last reply it sent, and the
  // transaction of that request as t_reply names it ("index:label", from sipd's branch);
  // empty when sipd sent nothing of the kind.
  std::string Substitute(std::string_view payload) const {
    std::string branch, call_id, cseq, to_tag, transaction;
    if (auto request = tm::SipMessage::Parse(request_); request.ok()) {
      branch = std::string(request->top_via().branch);
      call_id = std::string(request->call_id());
      cseq = absl::StrCat(request->cseq());
      if (tm::BranchParts parts; tm::ParseBranch(branch, &parts)) {
        transaction = absl::StrCat(parts.index, ":", parts.label);
      }
    }
    if (auto reply = tm::SipMessage::Parse(reply_); reply.ok()) {
      to_tag = std::string(reply->to_tag());
    }
    return absl::StrReplaceAll(
        absl::string_view(payload.data(), payload.size()),
        {{"$B", branch}, {"$C", call_id}, {"$S", cseq}, {"$T", to_tag}, {"$X", transaction}});
  }

  // The callee's well-formed reply `code` to the last request sipd sent, if there is one.
  std::optional<std::string> AnswerToLastRequest(int code) const {
    auto request = tm::SipMessage::Parse(request_);
    if (!request.ok() || !request->is_request()) return std::nullopt;
    return tm::BuildLocalReply(*request, code, "Fuzz", "callee1", {}, {}, "");
  }

 private:
  std::string request_;
  std::string reply_;
};

}  // namespace sipd::fuzz
