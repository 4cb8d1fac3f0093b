// UTF-8 hygiene for protobuf `string` fields.
//
// MI values are raw bytes (a SIP User-Agent may be Latin-1), but proto3 `string` fields
// must hold valid UTF-8: a peer's parser rejects the whole message otherwise, so one
// stray byte in a dump would turn a reply into a client-side INTERNAL error. Before a
// reply leaves the gRPC transport, every invalid byte sequence is replaced by U+FFFD.
// Valid input (the normal case) is left untouched after one linear scan.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "sipd/mi/v1/mi.pb.h"

namespace sipd::service {

namespace v1 = ::sipd::mi::v1;

// True if `text` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Replaces each maximal invalid subsequence with U+FFFD. Returns whether it changed.
bool SanitizeUtf8(std::string* text);

// Applies SanitizeUtf8 to every string of the message (reason, names, values,
// attributes, kids).
void SanitizeUtf8(v1::Reply* reply);
void SanitizeUtf8(v1::ReplyChunk* chunk);

}  // namespace sipd::service
