#include "sipd/modules/usrloc/contact.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace sipd::usrloc {

std::optional<int32_t> ParseQ(std::string_view text) {
  // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
  if (text.empty() || (text[0] != '0' && text[0] != '1')) return std::nullopt;
  const bool one = text[0] == '1';
  int32_t q = one ? kQMax : 0;
  if (text.size() == 1) return q;
  if (text[1] != '.' || text.size() > 5) return std::nullopt;
  int32_t scale = 100;
  for (size_t i = 2; i < text.size(); ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return std::nullopt;
    if (one && c != '0') return std::nullopt;
    q += (c - '0') * scale;
    scale /= 10;
  }
  return q;
}

std::string FormatQ(int32_t q) {
  if (q == kQUnspecified) return "";
  if (q >= kQMax) return "1";
  if (q <= 0) return "0";
  std::string out = "0.";
  out.push_back(static_cast<char>('0' + q / 100));
  q %= 100;
  if (q != 0) {
    out.push_back(static_cast<char>('0' + q / 10));
    q %= 10;
    if (q != 0) out.push_back(static_cast<char>('0' + q));
  }
  return out;
}

std::optional<uint32_t> ParseUint32(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > 0xFFFFFFFFull) return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

std::string_view StateName(ContactState state) {
  switch (state) {
    case ContactState::kNew:
      return "CS_NEW";
    case ContactState::kSync:
      return "CS_SYNC";
    case ContactState::kDirty:
      return "CS_DIRTY";
  }
  return "CS_UNKNOWN";
}

std::string FormatBranchFlags(uint32_t cflags) {
  std::string out;
  for (int bit = 0; bit < 32; ++bit) {
    if ((cflags & (1u << bit)) == 0) continue;
    if (!out.empty()) out.push_back(' ');
    absl::StrAppend(&out, bit);
  }
  return out;
}

std::string Hex(uint32_t value) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%X", value);
  return buf;
}

}  // namespace sipd::usrloc
