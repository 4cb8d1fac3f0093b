// Splits a TCP byte stream into SIP messages (RFC 3261 18.3): a message is its header
// block up to the first empty line, then Content-Length bytes of body.
//
//   - Content-Length (or its compact form `l`) is read from the header block, case
//     insensitively; a message without one has no body (sipd is lenient where RFC 3261
//     says MUST); a value that is not a plain decimal number, or two different values,
//     make the stream unusable (kBadFraming).
//   - CR/LF bytes between messages are keep-alives (RFC 5626 3.5.1): skipped; a CRLFCRLF
//     "ping" is reported (kPing) so the connection can answer with a CRLF "pong".
//   - A message whose header block or whole size exceeds `max_message_size` is reported
//     as kTooLarge (with the header block when it is complete, so a 513 can be sent);
//     the stream cannot be resynchronised after that.
// Searches resume where they stopped, so a message arriving one byte at a time costs
// linear time.
//
// Thread-safety: none; one framer per connection, used by its owning process.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sipd {

class SipStreamFramer {
 public:
  enum class Result {
    kNeedMore,    // no complete message buffered
    kMessage,     // *message holds one complete message
    kPing,        // a CRLFCRLF keep-alive was consumed; answer "\r\n"
    kTooLarge,    // *message holds the header block if complete, else is empty
    kBadFraming,  // bad Content-Length: *message holds the header block
  };

  explicit SipStreamFramer(size_t max_message_size) : max_message_size_(max_message_size) {}

  // Adds received bytes.
  void Append(std::string_view bytes);
  // The next event. A kMessage/kTooLarge/kBadFraming view stays valid until the next
  // Append() or Next(). After kTooLarge or kBadFraming the framer stays in that state.
  Result Next(std::string_view* message);

  // Bytes buffered that belong to a message not complete yet (0 between messages).
  size_t partial_bytes() const;
  // Bytes held in the buffer in total.
  size_t buffered() const { return buffer_.size() - start_; }

 private:
  // Parses Content-Length from the header block [start_, header_end_); -1 when bad.
  long long ContentLength(std::string_view headers) const;

  size_t max_message_size_;
  std::string buffer_;
  size_t start_ = 0;       // first byte not consumed yet
  size_t scanned_ = 0;     // header-end search resumes here (absolute offset)
  size_t header_end_ = 0;  // absolute offset after CRLFCRLF; 0 = not found yet
  long long body_length_ = -1;
  bool failed_ = false;
  Result failure_ = Result::kNeedMore;
};

}  // namespace sipd
