#include "tests/legacy-transports/misbehaving_clients.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "tests/support/sipd_harness.h"

namespace sipd::legacy::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string Errno() { return std::strerror(errno); }

// Writes one request into the request FIFO (one write: atomic up to PIPE_BUF), waiting
// for room while `stop` is false.
bool WriteRequest(int fd, const std::string& request, const std::atomic<bool>& stop) {
  size_t done = 0;
  while (done < request.size() && !stop.load()) {
    const ssize_t n = write(fd, request.data() + done, request.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      pollfd pfd{fd, POLLOUT, 0};
      poll(&pfd, 1, 100);
    } else if (n < 0 && errno != EINTR) {
      return false;
    }
  }
  return done == request.size();
}

int UnreadBytes(int fd) {
  int unread = 0;
  return ioctl(fd, FIONREAD, &unread) == 0 ? unread : -1;
}

}  // namespace

MisbehavingMix MisbehavingMix::Spread(int n, bool fifo) {
  MisbehavingMix mix;
  const int kinds = fifo ? 5 : 4;
  int* slots[] = {&mix.never_read, &mix.slow_read, &mix.idle, &mix.half_send, &mix.never_open};
  for (int i = 0; i < n; ++i) ++*slots[i % kinds];
  return mix;
}

absl::StatusOr<std::unique_ptr<MisbehavingClients>> MisbehavingClients::StartFifo(
    FifoOptions options) {
  std::unique_ptr<MisbehavingClients> self(new MisbehavingClients());
  self->fifo_ = true;
  self->fifo_options_ = std::move(options);
  const FifoOptions& o = self->fifo_options_;
  self->request_fd_ = open(o.fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (self->request_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("open ", o.fifo, ": ", Errno()));
  }
  const std::pair<Kind, int> kinds[] = {{Kind::kNeverRead, o.mix.never_read},
                                        {Kind::kSlowRead, o.mix.slow_read},
                                        {Kind::kIdle, o.mix.idle},
                                        {Kind::kNeverOpen, o.mix.never_open},
                                        {Kind::kHalfSend, o.mix.half_send}};
  int half = 0;
  for (const auto& [kind, count] : kinds) {
    for (int i = 0; i < count; ++i) {
      Client client;
      client.kind = kind;
      client.name = absl::StrCat("misbehaving_", getpid(), "_", self->clients_.size());
      client.path = o.reply_dir + (o.reply_dir.ends_with('/') ? "" : "/") + client.name;
      unlink(client.path.c_str());
      if (mkfifo(client.path.c_str(), 0600) != 0) {
        return absl::InternalError(absl::StrCat("mkfifo ", client.path, ": ", Errno()));
      }
      if (kind != Kind::kNeverOpen) {
        client.fd = open(client.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (client.fd < 0) return absl::InternalError(absl::StrCat("open: ", Errno()));
      }
      client.next = Clock::now() + milliseconds(1000);
      self->clients_.push_back(std::move(client));
      Client& added = self->clients_.back();
      switch (kind) {
        case Kind::kNeverRead:
        case Kind::kSlowRead:
        case Kind::kNeverOpen:
          if (!self->SendFifo(added)) return absl::UnavailableError("cannot write the FIFO");
          break;
        case Kind::kIdle:
          added.write_fd = open(o.fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
          break;
        case Kind::kHalfSend: {
          // Half stop at a line end (inside the arguments), half in the middle of a line.
          const std::string partial = ++half % 2 == 0
                                          ? absl::StrCat(":get_statistics:", added.name, "\nall\n")
                                          : absl::StrCat(":get_statistics:", added.name, "\nal");
          if (!WriteRequest(self->request_fd_, partial, self->stop_)) {
            return absl::UnavailableError("cannot write the FIFO");
          }
          ++self->requests_;
          // The server reads it before the next one is written (a pause between them).
          ::sipd::testing::WaitUntil([&] { return UnreadBytes(self->request_fd_) == 0; },
                                     milliseconds(5000));
          break;
        }
      }
    }
  }
  self->thread_ = std::thread([raw = self.get()] { raw->DriveFifo(); });
  return self;
}

bool MisbehavingClients::SendFifo(Client& client) {
  std::string request;
  if (client.kind == Kind::kNeverOpen) {
    request = absl::StrCat(":version:", client.name, "\n\n");
  } else {
    const auto& lines = fifo_options_.big_request;
    request = absl::StrCat(":", lines.empty() ? "version" : lines[0], ":", client.name, "\n");
    for (size_t i = 1; i < lines.size(); ++i) absl::StrAppend(&request, lines[i], "\n");
    request.push_back('\n');
  }
  ++requests_;
  return WriteRequest(request_fd_, request, stop_);
}

void MisbehavingClients::DriveFifo() {
  std::vector<pollfd> set;
  std::vector<size_t> owner;
  std::vector<char> buffer(std::max<size_t>(fifo_options_.slow_read_bytes, 1));
  while (!stop_.load()) {
    set.clear();
    owner.clear();
    for (size_t i = 0; i < clients_.size(); ++i) {
      const Client& c = clients_[i];
      if ((c.kind == Kind::kNeverRead || c.kind == Kind::kSlowRead) && c.fd >= 0) {
        set.push_back(pollfd{c.fd, 0, 0});
        owner.push_back(i);
      }
    }
    poll(set.data(), set.size(), 50);
    const auto now = Clock::now();
    for (size_t k = 0; k < set.size(); ++k) {
      Client& c = clients_[owner[k]];
      bool ended = (set[k].revents & POLLHUP) != 0;
      if (!ended && c.kind == Kind::kSlowRead && now >= c.next) {
        c.next = now + milliseconds(1000);
        const ssize_t n = read(c.fd, buffer.data(), buffer.size());
        if (n > 0) bytes_read_ += static_cast<uint64_t>(n);
        ended = n == 0;
      }
      if (!ended) continue;
      // The server finished or gave up: the same again, from a fresh read end (a FIFO
      // read end reports POLLHUP only after a writer came and went since its open).
      ++replies_ended_;
      close(c.fd);
      c.fd = open(c.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (c.fd >= 0) SendFifo(c);
    }
    for (Client& c : clients_) {
      if (c.kind == Kind::kNeverOpen && now >= c.next) {
        c.next = now + milliseconds(1000);
        SendFifo(c);
      }
    }
  }
}

absl::StatusOr<std::unique_ptr<MisbehavingClients>> MisbehavingClients::StartDatagram(
    DatagramOptions options) {
  std::unique_ptr<MisbehavingClients> self(new MisbehavingClients());
  self->fifo_ = false;
  self->datagram_options_ = std::move(options);
  const DatagramOptions& o = self->datagram_options_;
  const bool is_unix = !o.unix_path.empty();
  const std::pair<Kind, int> kinds[] = {{Kind::kNeverRead, o.mix.never_read + o.mix.never_open},
                                        {Kind::kSlowRead, o.mix.slow_read},
                                        {Kind::kIdle, o.mix.idle},
                                        {Kind::kHalfSend, o.mix.half_send}};
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(1.0 / std::max(o.requests_per_second, 0.01)));
  int burst = o.never_read_burst;
  if (burst < 0) {
    int qlen = 10;
    if (FILE* f = std::fopen("/proc/sys/net/unix/max_dgram_qlen", "r")) {
      if (std::fscanf(f, "%d", &qlen) != 1) qlen = 10;
      std::fclose(f);
    }
    burst = std::min(qlen + 6, 600);
  }
  for (const auto& [kind, count] : kinds) {
    for (int i = 0; i < count; ++i) {
      Client client;
      client.kind = kind;
      client.fd = socket(is_unix ? AF_UNIX : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (client.fd < 0) return absl::InternalError(absl::StrCat("socket: ", Errno()));
      if (is_unix) {
        client.path = absl::StrCat(o.client_dir, "/misbehaving_", getpid(), "_",
                                   self->clients_.size(), ".sock");
        unlink(client.path.c_str());
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, client.path.c_str(), sizeof(addr.sun_path) - 1);
        if (bind(client.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
          return absl::InternalError(absl::StrCat("bind ", client.path, ": ", Errno()));
        }
      } else {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(client.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
          return absl::InternalError(absl::StrCat("bind: ", Errno()));
        }
      }
      if (kind == Kind::kSlowRead) {
        const int smallest = 1;
        setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &smallest, sizeof(smallest));
      }
      // Spread the clients' sends over one period.
      client.next = Clock::now() + period * self->clients_.size() / std::max(1, o.mix.total());
      client.next_read = client.next;
      self->clients_.push_back(std::move(client));
      if (kind == Kind::kNeverRead && is_unix) {
        for (int sent = 0; sent < burst; ++sent) {
          self->SendDatagram(self->clients_.back());
        }
      }
    }
  }
  self->thread_ = std::thread([raw = self.get()] { raw->DriveDatagram(); });
  return self;
}

void MisbehavingClients::SendDatagram(Client& client) {
  const DatagramOptions& o = datagram_options_;
  sockaddr_storage to{};
  socklen_t to_len;
  if (!o.unix_path.empty()) {
    auto* addr = reinterpret_cast<sockaddr_un*>(&to);
    addr->sun_family = AF_UNIX;
    std::strncpy(addr->sun_path, o.unix_path.c_str(), sizeof(addr->sun_path) - 1);
    to_len = sizeof(sockaddr_un);
  } else {
    auto* addr = reinterpret_cast<sockaddr_in*>(&to);
    addr->sin_family = AF_INET;
    addr->sin_port = htons(static_cast<uint16_t>(o.udp_port));
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to_len = sizeof(sockaddr_in);
  }
  std::string_view request = o.big_request;
  if (client.kind == Kind::kHalfSend) {
    request = (requests_.load() % 2 == 0) ? std::string_view(":get_statistics:")
                                          : std::string_view(":help:\n\"unterminated");
  }
  if (sendto(client.fd, request.data(), request.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
             reinterpret_cast<sockaddr*>(&to), to_len) >= 0) {
    ++requests_;
  }
}

void MisbehavingClients::DriveDatagram() {
  const DatagramOptions& o = datagram_options_;
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(1.0 / std::max(o.requests_per_second, 0.01)));
  std::vector<char> small(std::max<size_t>(o.slow_read_bytes, 1));
  std::vector<char> whole(65536);
  while (!stop_signal_.WaitFor(std::chrono::milliseconds(10))) {  // the clients' pace
    const auto now = Clock::now();
    for (Client& c : clients_) {
      if (c.kind == Kind::kIdle) continue;
      if (c.kind == Kind::kHalfSend) {
        while (true) {
          const ssize_t n = recv(c.fd, whole.data(), whole.size(), MSG_DONTWAIT);
          if (n < 0) break;
          ++replies_ended_;
          bytes_read_ += static_cast<uint64_t>(n);
        }
      }
      if (c.kind == Kind::kSlowRead && now >= c.next_read) {
        // One datagram a second, at most slow_read_bytes of it.
        c.next_read = now + std::chrono::seconds(1);
        const ssize_t n = recv(c.fd, small.data(), small.size(), MSG_DONTWAIT | MSG_TRUNC);
        if (n >= 0) {
          ++replies_ended_;
          bytes_read_ += std::min(static_cast<uint64_t>(n), uint64_t{small.size()});
        }
      }
      if (now < c.next) continue;
      c.next += period;
      if (c.next < now) c.next = now + period;
      SendDatagram(c);
    }
  }
}

MisbehavingClients::~MisbehavingClients() {
  stop_ = true;
  stop_signal_.Stop();
  if (thread_.joinable()) thread_.join();
  for (Client& c : clients_) {
    if (c.fd >= 0) close(c.fd);
    if (c.write_fd >= 0) close(c.write_fd);
    if (!c.path.empty()) unlink(c.path.c_str());
  }
  if (request_fd_ >= 0) close(request_fd_);
}

MisbehavingFigures MisbehavingClients::figures() const {
  return {requests_.load(), replies_ended_.load(), bytes_read_.load()};
}

}  // namespace sipd::legacy::testing
