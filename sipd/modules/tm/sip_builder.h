// Builds the messages tm sends, mostly by copying the bytes of a received message with
// a few edits (OpenSIPS "lumps"): a relayed request, a forwarded reply, a local reply,
// the hop-by-hop ACK for a non-2xx final reply, CANCEL, and requests sipd originates.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/modules/tm/sip_message.h"

namespace sipd::tm {

// What the proxy changes in a request it relays (RFC 3261 16.6).
struct RelayEdits {
  // The new Request-URI (the target); empty = keep.
  std::string_view request_uri;
  // sipd's Via value, e.g. "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK...": a header line
  // of its own above every other Via.
  std::string_view via;
  // Appended to the received top via-parm (";received=1.2.3.4;rport=5062"); empty = none.
  std::string_view top_via_params;
  // Remove this many Route entries from the top (they named sipd: loose routing, 16.4).
  int pop_routes = 0;
  // Record-Route values sipd inserts (above the received ones), e.g. "<sip:1.2.3.4;lr>".
  std::vector<std::string> record_routes;
  // Route values inserted in front of the (remaining) Route entries (Path, next hop).
  std::vector<std::string> routes;
  // Max-Forwards to write (the received value minus one, or 70 when absent).
  int max_forwards = 70;
};
std::string BuildRelayedRequest(const SipMessage& request, const RelayEdits& edits);

// The reply as received minus its top via-parm (sipd's), for relaying upstream.
std::string BuildForwardedReply(const SipMessage& reply);

// A reply sipd makes itself for `request` (8.2.6): Vias, From, Call-ID, CSeq copied, To
// with `to_tag` added when the request had none (and code > 100), then `extra_headers`
// (lines without CRLF), Server, Content-Length, body.
std::string BuildLocalReply(const SipMessage& request, int code, std::string_view reason,
                            std::string_view to_tag, const std::vector<std::string>& extra_headers,
                            std::string_view body, std::string_view server);

// ACK for a non-2xx final reply to `request` (as sent on that branch), 17.1.1.3.
std::string BuildAckForNon2xx(const SipMessage& request, const SipMessage& reply);
// CANCEL for `request` (as sent on a branch), 9.1.
std::string BuildCancel(const SipMessage& request);

// ACK for a 2xx reply to a request sipd sent itself (13.2.2.4): Request-URI = the
// reply's Contact, Route = the reply's Record-Route reversed (strict routers handled as
// 12.2.1.1). `via` is the new Via value. Also returns the next hop (first loose Route,
// else the Request-URI) in *next_hop.
absl::StatusOr<std::string> BuildAckFor2xx(const SipMessage& request, const SipMessage& reply,
                                           std::string_view via, std::string* next_hop);

// FNV-1a 32: the same in every process.
uint32_t Fnv1a32(std::string_view data, uint32_t hash = 2166136261u);

// The loop-detection hash of a request (16.6 step 8 without the top Via, so that a
// request that comes back unchanged hashes the same): Request-URI, From tag, To tag,
// Call-ID, CSeq number.
uint32_t LoopHash(const SipMessage& request);

// sipd's branch parameter: "z9hG4bK" + loop hash + "." + index + "." + label + "." +
// branch number (all lower-case hex).
std::string MakeBranch(uint32_t loop_hash, uint32_t index, uint32_t label, uint32_t branch);
struct BranchParts {
  uint32_t loop_hash = 0;
  uint32_t index = 0;
  uint32_t label = 0;
  uint32_t branch = 0;
};
// Parses a branch made by MakeBranch(); false for any other branch.
bool ParseBranch(std::string_view branch, BranchParts* parts);

}  // namespace sipd::tm
