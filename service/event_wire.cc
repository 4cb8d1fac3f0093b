#include "service/event_wire.h"

#include <algorithm>

#include "service/utf8.h"

namespace sipd::service {
namespace {

// Wire types.
constexpr uint32_t kVarint = 0;
constexpr uint32_t kLengthDelimited = 2;

constexpr uint8_t Tag(uint32_t field, uint32_t wire_type) {
  return static_cast<uint8_t>((field << 3) | wire_type);
}

size_t VarintSize(uint64_t value) {
  size_t size = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++size;
  }
  return size;
}

char* AppendVarint(char* out, uint64_t value) {
  while (value >= 0x80) {
    *out++ = static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  *out++ = static_cast<char>(value);
  return out;
}

void AppendVarint(std::string& out, uint64_t value) {
  char buffer[10];
  out.append(buffer, AppendVarint(buffer, value) - buffer);
}

// A length-delimited field whose contents are `bytes`.
void AppendBytesField(std::string& out, uint32_t field, std::string_view bytes) {
  out.push_back(static_cast<char>(Tag(field, kLengthDelimited)));
  AppendVarint(out, bytes.size());
  out.append(bytes);
}

// A string field, made valid UTF-8 first if it is not.
void AppendStringField(std::string& out, uint32_t field, std::string_view text) {
  if (IsValidUtf8(text)) return AppendBytesField(out, field, text);
  std::string clean(text);
  SanitizeUtf8(&clean);
  AppendBytesField(out, field, clean);
}

}  // namespace

std::string EncodeEventBody(
    std::string_view name, int64_t time_ns,
    const std::vector<std::pair<std::string_view, std::string_view>>& params) {
  std::string out;
  out.reserve(32 + name.size() + params.size() * 32);
  if (!name.empty()) AppendStringField(out, 1, name);
  // Timestamp: seconds (1) and non-negative nanos (2), zeros left out.
  int64_t seconds = time_ns / 1000000000;
  int64_t nanos = time_ns % 1000000000;
  if (nanos < 0) {
    nanos += 1000000000;
    --seconds;
  }
  std::string time;
  if (seconds != 0) {
    time.push_back(static_cast<char>(Tag(1, kVarint)));
    AppendVarint(time, static_cast<uint64_t>(seconds));
  }
  if (nanos != 0) {
    time.push_back(static_cast<char>(Tag(2, kVarint)));
    AppendVarint(time, static_cast<uint64_t>(nanos));
  }
  AppendBytesField(out, 2, time);
  std::string entry;
  for (const auto& [key, value] : params) {
    entry.clear();
    AppendStringField(entry, 1, key);
    AppendStringField(entry, 2, value);
    AppendBytesField(out, 4, entry);
  }
  return out;
}

size_t EventEntrySize(size_t body_size, uint64_t seq) {
  const size_t event = body_size + 1 + VarintSize(seq);
  return 1 + VarintSize(event) + event;
}

char* AppendEventEntry(char* out, std::string_view body, uint64_t seq) {
  *out++ = static_cast<char>(Tag(1, kLengthDelimited));
  out = AppendVarint(out, body.size() + 1 + VarintSize(seq));
  std::copy(body.begin(), body.end(), out);
  out += body.size();
  *out++ = static_cast<char>(Tag(3, kVarint));
  return AppendVarint(out, seq);
}

size_t CountersSize(uint64_t dropped, uint64_t total_dropped) {
  return (dropped != 0 ? 1 + VarintSize(dropped) : 0) +
         (total_dropped != 0 ? 1 + VarintSize(total_dropped) : 0);
}

char* AppendCounters(char* out, uint64_t dropped, uint64_t total_dropped) {
  if (dropped != 0) {
    *out++ = static_cast<char>(Tag(2, kVarint));
    out = AppendVarint(out, dropped);
  }
  if (total_dropped != 0) {
    *out++ = static_cast<char>(Tag(3, kVarint));
    out = AppendVarint(out, total_dropped);
  }
  return out;
}

std::string EncodeSubscribeResponse(const std::vector<WireEvent>& events, uint64_t dropped,
                                    uint64_t total_dropped) {
  size_t size = CountersSize(dropped, total_dropped);
  for (const WireEvent& e : events) size += EventEntrySize(e.body.size(), e.seq);
  std::string out(size, '\0');
  char* at = out.data();
  for (const WireEvent& e : events) at = AppendEventEntry(at, e.body, e.seq);
  AppendCounters(at, dropped, total_dropped);
  return out;
}

}  // namespace sipd::service
