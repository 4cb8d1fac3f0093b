#include "legacy-transports/datagram/datagram_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "registry/dispatcher.h"
#include "registry/text_format.h"
#include "spdlog/spdlog.h"

namespace sipd::legacy {
namespace {

constexpr int kPollIntervalMs = 200;
constexpr std::string_view kUdpPrefix = "udp:";

std::string Errno() { return std::strerror(errno); }

absl::StatusOr<DatagramSockets> CreateUdpSocket(const std::string& name) {
  const std::string_view spec = std::string_view(name).substr(kUdpPrefix.size());
  const size_t colon = spec.rfind(':');
  int port = 0;
  if (colon == std::string_view::npos ||
      std::from_chars(spec.data() + colon + 1, spec.data() + spec.size(), port).ptr !=
          spec.data() + spec.size() ||
      port < 1024 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mi_datagram: socket_name '", name, "': expected udp:HOST:PORT with PORT 1024..65535"));
  }
  std::string host(spec.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_datagram: socket_name '", name, "': ", gai_strerror(rc)));
  }
  DatagramSockets sockets;
  sockets.rx = socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sockets.rx < 0 || bind(sockets.rx, found->ai_addr, found->ai_addrlen) != 0) {
    const std::string why = Errno();
    freeaddrinfo(found);
    sockets.Close();
    return absl::FailedPreconditionError(
        absl::StrCat("mi_datagram: cannot bind ", name, ": ", why));
  }
  const bool loopback =
      (found->ai_family == AF_INET &&
       (ntohl(reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
      (found->ai_family == AF_INET6 &&
       IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr));
  freeaddrinfo(found);
  if (!loopback) {
    spdlog::warn(
        "mi_datagram: {} is not a loopback address: anyone who can reach it can run "
        "MI commands",
        name);
  }
  sockets.tx = sockets.rx;
  return sockets;
}

absl::StatusOr<DatagramSockets> CreateUnixSockets(const std::string& path,
                                                  const FileAccess& unix_access) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_datagram: socket_name '", path, "' is too long for a UNIX socket"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mi_datagram: socket_name '", path,
          S_ISLNK(st.st_mode) ? "' is a symbolic link" : "' exists and is not a socket",
          ": refusing to replace it"));
    }
    unlink(path.c_str());  // stale socket of an earlier run
  }
  DatagramSockets sockets;
  sockets.rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sockets.rx < 0) return absl::InternalError(absl::StrCat("mi_datagram: socket: ", Errno()));
  // The socket file is created by bind() with the umask: keep it private until chmod.
  const mode_t old_umask = umask(0177);
  const int bound = bind(sockets.rx, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const std::string why = Errno();
  umask(old_umask);
  if (bound != 0) {
    sockets.Close();
    return absl::FailedPreconditionError(
        absl::StrCat("mi_datagram: cannot bind ", path, ": ", why));
  }
  sockets.unix_path = path;
  if (absl::Status status = ApplyAccessToPath(path, unix_access); !status.ok()) {
    sockets.Close();
    return status;
  }
  // Replies leave from a separate unbound socket (spec 4.1).
  sockets.tx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sockets.tx < 0) {
    sockets.Close();
    return absl::InternalError(absl::StrCat("mi_datagram: socket: ", Errno()));
  }
  return sockets;
}

}  // namespace

void DatagramSockets::Close() {
  if (tx >= 0 && tx != rx) close(tx);
  if (rx >= 0) close(rx);
  rx = tx = -1;
  if (!unix_path.empty()) {
    struct stat st;
    if (lstat(unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(unix_path.c_str());
    unix_path.clear();
  }
}

absl::StatusOr<DatagramSockets> CreateDatagramSockets(const std::string& socket_name,
                                                      const FileAccess& unix_access) {
  if (socket_name.empty()) {
    return absl::InvalidArgumentError("mi_datagram: parameter 'socket_name' is mandatory");
  }
  if (socket_name.compare(0, kUdpPrefix.size(), kUdpPrefix) == 0) {
    return CreateUdpSocket(socket_name);
  }
  return CreateUnixSockets(socket_name, unix_access);
}

absl::StatusOr<std::vector<DatagramSockets>> CreateDatagramSockets(const DatagramConfig& config) {
  std::vector<DatagramSockets> all;
  std::vector<std::string> names = {config.socket_name};
  names.insert(names.end(), config.extra_socket_names.begin(), config.extra_socket_names.end());
  for (const std::string& name : names) {
    absl::StatusOr<DatagramSockets> sockets = CreateDatagramSockets(name, config.unix_access);
    if (!sockets.ok()) {
      for (DatagramSockets& created : all) created.Close();
      return sockets.status();
    }
    all.push_back(std::move(*sockets));
  }
  return all;
}

DatagramReplyWriter::DatagramReplyWriter(std::string indent, size_t max_size)
    : indent_(std::move(indent)), max_size_(max_size) {
  buffer_.reserve(max_size_ + 1024);
}

void DatagramReplyWriter::Begin() {
  buffer_.clear();
  too_large_ = false;
}

void DatagramReplyWriter::WriteStatus(const mi::Reply& reply) {
  if (too_large_) return;
  mi::AppendStatusLine(buffer_, reply.code, reply.text_reason());
  CheckSize();
}

void DatagramReplyWriter::WriteNode(const mi::Node& node, int depth) {
  if (too_large_) return;
  mi::AppendNodeLine(buffer_, node, depth, indent_);
  CheckSize();
}

void DatagramReplyWriter::CheckSize() {
  if (buffer_.size() <= max_size_) return;
  too_large_ = true;
  buffer_.clear();
  if (buffer_.capacity() > 2 * max_size_) {
    buffer_.shrink_to_fit();
    buffer_.reserve(max_size_ + 1024);
  }
}

DatagramServer::DatagramServer(const DatagramConfig& config, mi::Dispatcher& dispatcher,
                               const std::vector<DatagramSockets>& sockets)
    : config_(config),
      dispatcher_(dispatcher),
      sockets_(sockets),
      writer_(config.reply_indent, kDatagramMaxSize) {
  input_.resize(kDatagramMaxSize);
  for (const DatagramSockets& socket : sockets_) poll_set_.push_back(pollfd{socket.rx, POLLIN, 0});
}

void DatagramServer::Run(const std::function<bool()>& stopping,
                         const std::function<void()>& on_wakeup) {
  while (!stopping()) {
    const int ready = poll(poll_set_.data(), poll_set_.size(), kPollIntervalMs);
    on_wakeup();
    if (ready < 0 && errno != EINTR) {
      spdlog::error("poll: {}", Errno());
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollIntervalMs));
      continue;
    }
    if (ready <= 0) continue;
    for (size_t i = 0; i < poll_set_.size(); ++i) {
      if (poll_set_[i].revents != 0) ReceiveOne(sockets_[i]);
    }
  }
}

void DatagramServer::ReceiveOne(const DatagramSockets& sockets) {
  sockaddr_storage from{};
  socklen_t from_len = sizeof(from);
  // MSG_TRUNC: the real size of a datagram larger than the buffer. Other children may
  // have taken the datagram already (EAGAIN).
  const ssize_t n = recvfrom(sockets.rx, input_.data(), input_.size(), MSG_DONTWAIT | MSG_TRUNC,
                             reinterpret_cast<sockaddr*>(&from), &from_len);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) spdlog::error("recvfrom: {}", Errno());
    return;
  }
  const size_t real_size = static_cast<size_t>(n);
  const std::string_view reply =
      Handle(std::string_view(input_.data(), std::min(real_size, input_.size())), real_size);
  if (!sockets.unix_path.empty() && from_len <= offsetof(sockaddr_un, sun_path)) {
    spdlog::warn("request from an unbound UNIX socket: no reply possible");
    return;
  }
  SendReply(sockets.tx, reply, from, from_len);
}

std::string_view DatagramServer::Handle(std::string_view datagram, size_t real_size) {
  if (real_size > datagram.size() || datagram.size() > kDatagramMaxSize) {
    spdlog::warn("request of {} bytes exceeds {} bytes", real_size, kDatagramMaxSize);
    return kDatagramParseError;
  }
  // First line: exactly `:command:` and LF (CRLF accepted).
  const size_t colon =
      datagram.size() > 2 && datagram[0] == ':' ? datagram.find(':', 1) : std::string_view::npos;
  if (colon == std::string_view::npos || colon == 1) return kDatagramNotAvailable;
  size_t body = colon + 1;
  if (body < datagram.size() && datagram[body] == '\r') ++body;
  if (body >= datagram.size() || datagram[body] != '\n') return kDatagramNotAvailable;
  request_ = mi::Request();
  request_.command.assign(datagram.substr(1, colon - 1));
  request_.args_error = parser_.ParseAll(datagram.substr(body + 1), &request_.args);
  mi::CallContext context;
  context.transport = mi::Transport::kDatagramUnix;
  writer_.Begin();
  const mi::DispatchResult result = dispatcher_.Run(context, std::move(request_), &writer_);
  switch (result.outcome) {
    case mi::Outcome::kNotAvailable:
      return kDatagramNotAvailable;
    case mi::Outcome::kParseError:
      return kDatagramParseError;
    case mi::Outcome::kFailed:
      return kDatagramFailed;
    case mi::Outcome::kReply:
      break;
  }
  if (writer_.too_large()) {
    spdlog::warn("reply of command '{}' exceeds {} bytes", datagram.substr(1, colon - 1),
                 kDatagramMaxSize);
    return kDatagramTooLarge;
  }
  return writer_.payload();
}

void DatagramServer::SendReply(int tx, std::string_view payload, const sockaddr_storage& to,
                               socklen_t to_len) {
  std::chrono::steady_clock::time_point deadline{};
  for (;;) {
    if (sendto(tx, payload.data(), payload.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&to), to_len) >= 0) {
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != ENOBUFS) {
      spdlog::warn("cannot send reply: {}", Errno());
      return;
    }
    // The client's receive queue is full: wait a little for it to drain.
    const auto now = std::chrono::steady_clock::now();
    if (deadline == std::chrono::steady_clock::time_point{}) {
      deadline = now + config_.socket_timeout;
    }
    if (now >= deadline) {
      spdlog::warn("reply dropped: the client did not read for {} ms",
                   config_.socket_timeout.count());
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace sipd::legacy
