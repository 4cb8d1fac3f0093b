#include "service/utf8.h"

#include <cstdint>
#include <cstring>

namespace sipd::service {
namespace {

// Length of the valid UTF-8 sequence starting at `i`, or 0 if it is invalid.
size_t ValidSequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  const auto cont = [&](size_t k, uint8_t lo = 0x80, uint8_t hi = 0xBF) {
    return k < s.size() && byte(k) >= lo && byte(k) <= hi;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    // E0: no overlongs (A0..BF); ED: no surrogates (80..9F).
    const uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80;
    const uint8_t hi = b0 == 0xED ? 0x9F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    // F0: no overlongs (90..BF); F4: <= U+10FFFF (80..8F).
    const uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80;
    const uint8_t hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

// Length of the maximal invalid subsequence at `i` (Unicode "substitution of maximal
// subparts"): a lead byte followed by as many valid continuation bytes as it allows.
size_t InvalidSequenceLength(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  size_t expected = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    expected = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    expected = 3;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    expected = 4;
  } else {
    return 1;
  }
  size_t n = 1;
  while (n < expected && i + n < s.size()) {
    const auto b = static_cast<uint8_t>(s[i + n]);
    uint8_t lo = 0x80, hi = 0xBF;
    if (n == 1 && b0 == 0xE0) lo = 0xA0;
    if (n == 1 && b0 == 0xED) hi = 0x9F;
    if (n == 1 && b0 == 0xF0) lo = 0x90;
    if (n == 1 && b0 == 0xF4) hi = 0x8F;
    if (b < lo || b > hi) break;
    ++n;
  }
  return n;
}

void SanitizeNode(v1::Node* node) {
  SanitizeUtf8(node->mutable_name());
  SanitizeUtf8(node->mutable_value());
  for (auto& attr : *node->mutable_attributes()) {
    SanitizeUtf8(attr.mutable_name());
    SanitizeUtf8(attr.mutable_value());
  }
  for (auto& kid : *node->mutable_kids()) SanitizeNode(&kid);
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    // Eight ASCII bytes at a time: what MI replies are made of.
    uint64_t word = 0;
    if (i + sizeof(word) <= text.size()) {
      std::memcpy(&word, text.data() + i, sizeof(word));
      if ((word & 0x8080808080808080ull) == 0) {
        i += sizeof(word);
        continue;
      }
    }
    if (static_cast<uint8_t>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = ValidSequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

bool SanitizeUtf8(std::string* text) {
  if (IsValidUtf8(*text)) return false;
  const std::string_view in = *text;
  std::string out;
  out.reserve(in.size() + 8);
  size_t i = 0;
  while (i < in.size()) {
    const size_t n = ValidSequenceLength(in, i);
    if (n > 0) {
      out.append(in.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += InvalidSequenceLength(in, i);
    }
  }
  *text = std::move(out);
  return true;
}

void SanitizeUtf8(v1::Reply* reply) {
  SanitizeUtf8(reply->mutable_reason());
  for (auto& node : *reply->mutable_nodes()) SanitizeNode(&node);
}

void SanitizeUtf8(v1::ReplyChunk* chunk) {
  SanitizeUtf8(chunk->mutable_reason());
  for (auto& node : *chunk->mutable_nodes()) {
    SanitizeUtf8(node.mutable_name());
    SanitizeUtf8(node.mutable_value());
    for (auto& attr : *node.mutable_attributes()) {
      SanitizeUtf8(attr.mutable_name());
      SanitizeUtf8(attr.mutable_value());
    }
  }
}

}  // namespace sipd::service
