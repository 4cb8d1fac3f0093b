#include "registry/async.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sipd::mi {

std::string AsyncTicket::ToString() const { return absl::StrCat(slot, ".", generation); }

std::optional<AsyncTicket> AsyncTicket::Parse(std::string_view text) {
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  AsyncTicket ticket;
  const char* end = text.data() + dot;
  if (std::from_chars(text.data(), end, ticket.slot).ptr != end) return std::nullopt;
  end = text.data() + text.size();
  if (std::from_chars(text.data() + dot + 1, end, ticket.generation).ptr != end) {
    return std::nullopt;
  }
  if (!ticket.valid()) return std::nullopt;
  return ticket;
}

LocalAsyncBackend::LocalAsyncBackend(size_t capacity)
    : capacity_(capacity), wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

LocalAsyncBackend::~LocalAsyncBackend() {
  if (wake_fd_ >= 0) close(wake_fd_);
}

absl::StatusOr<AsyncTicket> LocalAsyncBackend::Reserve() {
  std::lock_guard<std::mutex> lock(mu_);
  if (slots_.size() >= capacity_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", capacity_, " async reply slots are in use"));
  }
  while (slots_.contains(next_slot_)) ++next_slot_;
  AsyncTicket ticket{next_slot_++, next_generation_++};
  if (next_generation_ == 0) next_generation_ = 1;
  slots_[ticket.slot].generation = ticket.generation;
  return ticket;
}

void LocalAsyncBackend::Release(AsyncTicket ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(ticket.slot);
  if (it != slots_.end() && it->second.generation == ticket.generation) slots_.erase(it);
}

std::optional<AsyncResult> LocalAsyncBackend::TryTake(AsyncTicket ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(ticket.slot);
  if (it == slots_.end() || it->second.generation != ticket.generation || !it->second.done) {
    return std::nullopt;
  }
  AsyncResult result = std::move(it->second.result);
  slots_.erase(it);
  return result;
}

void LocalAsyncBackend::ClearWake() {
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = read(wake_fd_, &count, sizeof(count));
}

void LocalAsyncBackend::WakeSelf() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

bool LocalAsyncBackend::Complete(AsyncTicket ticket, const Reply* reply) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(ticket.slot);
    if (it == slots_.end() || it->second.generation != ticket.generation || it->second.done) {
      return false;
    }
    it->second.done = true;
    if (reply != nullptr) it->second.result = reply->Clone();
  }
  WakeSelf();
  return true;
}

size_t LocalAsyncBackend::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_.size();
}

}  // namespace sipd::mi
