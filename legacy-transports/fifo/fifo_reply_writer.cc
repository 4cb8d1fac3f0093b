#include "legacy-transports/fifo/fifo_reply_writer.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "registry/text_format.h"
#include "spdlog/spdlog.h"

namespace sipd::legacy {

FifoReplyWriter::FifoReplyWriter(std::string indent, std::chrono::milliseconds stall_timeout)
    : indent_(std::move(indent)), stall_timeout_(stall_timeout) {
  buffer_.reserve(2 * kBufferSize);
}

void FifoReplyWriter::Begin(int fd) {
  fd_ = fd;
  failed_ = false;
  buffer_.clear();
}

void FifoReplyWriter::WriteStatus(const mi::Reply& reply) {
  if (failed_) return;
  mi::AppendStatusLine(buffer_, reply.code, reply.text_reason());
  if (buffer_.size() >= kBufferSize) WriteOut();
}

void FifoReplyWriter::WriteNode(const mi::Node& node, int depth) {
  if (failed_) return;
  mi::AppendNodeLine(buffer_, node, depth, indent_);
  if (buffer_.size() >= kBufferSize) WriteOut();
}

void FifoReplyWriter::EndFlush() {
  if (failed_) return;
  buffer_.push_back('\n');
  WriteOut();
}

void FifoReplyWriter::EndReply() { EndFlush(); }

void FifoReplyWriter::WriteErrorLine(uint32_t code, std::string_view reason) {
  if (failed_) return;
  mi::AppendStatusLine(buffer_, code, reason);
  WriteOut();
}

void FifoReplyWriter::Abandon(std::string_view why) {
  spdlog::warn("reply abandoned: {}", why);
  failed_ = true;
}

void FifoReplyWriter::WriteOut() {
  const char* data = buffer_.data();
  size_t left = buffer_.size();
  // Set on the first EAGAIN, cleared by progress: only a stall needs the clock.
  std::chrono::steady_clock::time_point stall_deadline{};
  while (left > 0 && !failed_) {
    const ssize_t n = write(fd_, data, left);
    if (n > 0) {
      data += n;
      left -= static_cast<size_t>(n);
      stall_deadline = {};
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      const auto now = std::chrono::steady_clock::now();
      if (stall_deadline == std::chrono::steady_clock::time_point{}) {
        stall_deadline = now + stall_timeout_;
      }
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(stall_deadline - now).count();
      if (wait <= 0) {
        Abandon("the client did not read for " + std::to_string(stall_timeout_.count()) + " ms");
        break;
      }
      pollfd pfd{fd_, POLLOUT, 0};
      if (poll(&pfd, 1, static_cast<int>(wait)) < 0 && errno != EINTR) {
        Abandon(std::string("poll: ") + std::strerror(errno));
      } else if ((pfd.revents & POLLERR) != 0) {
        Abandon("the client closed its reply FIFO");
      }
      continue;
    }
    Abandon(errno == EPIPE ? std::string("the client closed its reply FIFO")
                           : std::string("write: ") + std::strerror(errno));
  }
  buffer_.clear();
  // A single huge line grew the buffer: give the memory back.
  if (buffer_.capacity() > 16 * kBufferSize) {
    buffer_.shrink_to_fit();
    buffer_.reserve(2 * kBufferSize);
  }
}

}  // namespace sipd::legacy
