#include "sipd/core/tcp_framer.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace sipd {
namespace {

bool IsLineBreak(char c) { return c == '\r' || c == '\n'; }

}  // namespace

void SipStreamFramer::Append(std::string_view bytes) {
  if (failed_) return;
  if (start_ == buffer_.size()) {  // everything consumed: start over at the beginning
    buffer_.clear();
    start_ = 0;
    scanned_ = 0;
  }
  // Compact once the consumed prefix dominates, so the buffer does not grow forever.
  if (start_ > 0 && start_ >= buffer_.size() / 2) {
    buffer_.erase(0, start_);
    scanned_ -= std::min(scanned_, start_);
    if (header_end_ != 0) header_end_ -= start_;
    start_ = 0;
  }
  buffer_.append(bytes.data(), bytes.size());
}

size_t SipStreamFramer::partial_bytes() const {
  size_t at = start_;
  while (at < buffer_.size() && IsLineBreak(buffer_[at])) ++at;
  return buffer_.size() - at;
}

long long SipStreamFramer::ContentLength(std::string_view headers) const {
  long long found = -2;  // -2: no header seen
  size_t line_start = headers.find("\r\n");
  while (line_start != std::string_view::npos) {
    line_start += 2;
    size_t line_end = headers.find("\r\n", line_start);
    if (line_end == std::string_view::npos) line_end = headers.size();
    std::string_view line = headers.substr(line_start, line_end - line_start);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      absl::string_view name =
          absl::StripTrailingAsciiWhitespace(absl::string_view(line.data(), colon));
      if (absl::EqualsIgnoreCase(name, "Content-Length") || absl::EqualsIgnoreCase(name, "l")) {
        absl::string_view value = absl::StripAsciiWhitespace(
            absl::string_view(line.data() + colon + 1, line.size() - colon - 1));
        uint64_t number = 0;
        if (value.empty() || value.size() > 18 ||
            value.find_first_not_of("0123456789") != absl::string_view::npos ||
            !absl::SimpleAtoi(value, &number)) {
          return -1;
        }
        if (found >= 0 && found != static_cast<long long>(number)) return -1;
        found = static_cast<long long>(number);
      }
    }
    if (line_end >= headers.size()) break;
    line_start = line_end;
  }
  return found == -2 ? 0 : found;
}

SipStreamFramer::Result SipStreamFramer::Next(std::string_view* message) {
  *message = {};
  if (failed_) return failure_;
  if (header_end_ == 0) {
    // Between messages: skip keep-alive line breaks; report each CRLFCRLF ping (one
    // event per ping, consumed up to its end, however the bytes arrived).
    size_t at = start_;
    while (at < buffer_.size() && IsLineBreak(buffer_[at])) ++at;
    if (at > start_) {
      const size_t ping = std::string_view(buffer_).substr(start_, at - start_).find("\r\n\r\n");
      if (ping != std::string_view::npos) {
        start_ += ping + 4;
        scanned_ = std::max(scanned_, start_);
        return Result::kPing;
      }
      if (at == buffer_.size()) return Result::kNeedMore;  // maybe more CRLF follow
      start_ = at;
      scanned_ = std::max(scanned_, start_);
    }
    if (start_ == buffer_.size()) return Result::kNeedMore;
    // Find the end of the header block, resuming (3 bytes back for a split CRLFCRLF).
    const size_t from = std::max(start_, scanned_ >= 3 ? scanned_ - 3 : 0);
    const size_t end = buffer_.find("\r\n\r\n", from);
    if (end == std::string::npos) {
      scanned_ = buffer_.size();
      if (buffer_.size() - start_ > max_message_size_) {
        failed_ = true;
        failure_ = Result::kTooLarge;
        return failure_;
      }
      return Result::kNeedMore;
    }
    header_end_ = end + 4;
    if (header_end_ - start_ > max_message_size_) {
      // Too large whatever its Content-Length says: the same answer as when the limit
      // is passed before the header block is complete.
      failed_ = true;
      failure_ = Result::kTooLarge;
      *message = std::string_view(buffer_).substr(start_, header_end_ - start_);
      return failure_;
    }
    const std::string_view headers =
        std::string_view(buffer_).substr(start_, header_end_ - start_ - 2);
    body_length_ = ContentLength(headers);
    if (body_length_ < 0) {
      failed_ = true;
      failure_ = Result::kBadFraming;
      *message = std::string_view(buffer_).substr(start_, header_end_ - start_);
      return failure_;
    }
    if (header_end_ - start_ + static_cast<size_t>(body_length_) > max_message_size_) {
      failed_ = true;
      failure_ = Result::kTooLarge;
      *message = std::string_view(buffer_).substr(start_, header_end_ - start_);
      return failure_;
    }
  }
  const size_t total = header_end_ + static_cast<size_t>(body_length_);
  if (buffer_.size() < total) return Result::kNeedMore;
  *message = std::string_view(buffer_).substr(start_, total - start_);
  start_ = total;
  scanned_ = total;
  header_end_ = 0;
  body_length_ = -1;
  return Result::kMessage;
}

}  // namespace sipd
