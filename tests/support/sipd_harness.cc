#include "tests/support/sipd_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

#ifndef SIPD_BINARY_PATH
#error "SIPD_BINARY_PATH must be defined by the build (target sipd_test_harness)"
#endif

namespace sipd::testing {
namespace {

#define SIPD_HARNESS_RETURN_IF_ERROR(expr) \
  do {                                     \
    const absl::Status status_ = (expr);   \
    if (!status_.ok()) return status_;     \
  } while (false)

std::vector<ListenerEntry> ParseListeners(const std::string& text) {
  std::vector<ListenerEntry> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t first = line.find(' ');
    const size_t second = first == std::string::npos ? first : line.find(' ', first + 1);
    if (second == std::string::npos) continue;
    out.push_back(ListenerEntry{line.substr(0, first), line.substr(first + 1, second - first - 1),
                                line.substr(second + 1)});
  }
  return out;
}

// Fields of /proc/PID/stat after the command name: state, ppid, pgrp.
bool ReadStat(pid_t pid, char* state, pid_t* ppid, pid_t* pgrp) {
  const std::string text = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close_paren = text.rfind(')');
  if (close_paren == std::string::npos) return false;
  int parent = 0;
  int group = 0;
  if (std::sscanf(text.c_str() + close_paren + 1, " %c %d %d", state, &parent, &group) != 3) {
    return false;
  }
  *ppid = parent;
  *pgrp = group;
  return true;
}

template <typename Filter>
std::vector<pid_t> ScanProc(Filter filter) {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0') continue;
    char state = 0;
    pid_t ppid = 0;
    pid_t pgrp = 0;
    if (!ReadStat(static_cast<pid_t>(pid), &state, &ppid, &pgrp)) continue;
    if (filter(state, ppid, pgrp)) out.push_back(static_cast<pid_t>(pid));
  }
  closedir(dir);
  return out;
}

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  chmod(path.c_str(), mode);
}

std::pair<int, std::string> RunShell(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

int PortOf(std::string_view address) {
  if (const size_t scheme = address.find("://"); scheme != std::string_view::npos) {
    address.remove_prefix(scheme + 3);
    address = address.substr(0, address.find('/'));
  }
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return 0;
  int port = 0;
  for (char c : address.substr(colon + 1)) {
    if (c < '0' || c > '9') return 0;
    port = port * 10 + (c - '0');
  }
  return port;
}

std::vector<pid_t> ChildPids(pid_t parent) {
  return ScanProc(
      [parent](char state, pid_t ppid, pid_t) { return ppid == parent && state != 'Z'; });
}

std::vector<pid_t> ProcessGroupPids(pid_t pgid) {
  return ScanProc([pgid](char state, pid_t, pid_t pgrp) { return pgrp == pgid && state != 'Z'; });
}

bool ProcessAlive(pid_t pid) {
  char state = 0;
  pid_t ppid = 0;
  pid_t pgrp = 0;
  return pid > 0 && ReadStat(pid, &state, &ppid, &pgrp) && state != 'Z' && state != 'X';
}

SipdInstance::SipdInstance() : SipdInstance(Options()) {}
SipdInstance::SipdInstance(Options options) : options_(std::move(options)) {}

SipdInstance::~SipdInstance() {
  (void)Stop();
  if (!tmp_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(tmp_dir_, ignored);
  }
}

std::vector<ListenerEntry> SipdInstance::listeners() const {
  if (run_dir_.empty()) return {};
  return ParseListeners(ReadFile(run_dir_ + "/listeners"));
}

std::string SipdInstance::listener_address(std::string_view module,
                                           std::string_view protocol) const {
  for (const ListenerEntry& l : listeners()) {
    if (l.module == module && (protocol.empty() || l.protocol == protocol)) return l.address;
  }
  return "";
}

int SipdInstance::listener_port(std::string_view module, std::string_view protocol) const {
  return PortOf(listener_address(module, protocol));
}

int SipdInstance::grpc_port() const {
  if (const int port = listener_port("mi_grpc"); port != 0) grpc_port_ = port;
  return grpc_port_;
}

std::string SipdInstance::grpc_target() const { return absl::StrCat("127.0.0.1:", grpc_port()); }

std::string SipdInstance::log() const { return log_path_.empty() ? "" : ReadFile(log_path_); }

std::string SipdInstance::admin_token() const {
  std::ifstream in(run_dir_ + "/admin.token");
  std::string token;
  std::getline(in, token);
  return token;
}

absl::Status SipdInstance::Start() {
  if (pid_ != 0) return absl::FailedPreconditionError("sipd already started");
  absl::StatusOr<std::string> tmp = MakeTmpDir();
  if (!tmp.ok()) return tmp.status();
  const std::string run_dir = tmp_dir_ + "/run";
  const std::string config_path = tmp_dir_ + "/sipd.cfg";

  std::string config = absl::StrCat(
      "# generated by the sipd test harness\n", "listen = udp:127.0.0.1:0\n",
      options_.tcp ? "listen = tcp:127.0.0.1:0\n" : "", "children = ", options_.children, "\n",
      "log_level = ", options_.log_level, "\n", "run_dir = \"", run_dir, "\"\n");
  if (!options_.default_security) {
    absl::StrAppend(&config, "modparam(\"mi\", \"local_role\", \"admin\")\n");
  }
  if (options_.grpc) {
    absl::StrAppend(&config, "loadmodule \"mi_grpc\"\n",
                    "modparam(\"mi_grpc\", \"listen\", \"127.0.0.1:0\")\n");
  }
  absl::StrAppend(
      &config,
      absl::StrReplaceAll(options_.extra_config, {{"{RUN_DIR}", run_dir}, {"{TMP_DIR}", tmp_dir_}}),
      "\n");
  {
    std::ofstream out(config_path, std::ios::trunc);
    out << config;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", config_path));
  }
  SIPD_HARNESS_RETURN_IF_ERROR(StartWithConfig(config_path, run_dir));
  if (options_.grpc && grpc_port() == 0) {
    (void)Stop();
    return absl::InternalError(absl::StrCat("no mi_grpc in ", run_dir_, "/listeners"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SipdInstance::MakeTmpDir() {
  if (tmp_dir_.empty()) {
    char pattern[] = "/tmp/sipd-test-XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
    }
    tmp_dir_ = pattern;
  }
  return tmp_dir_;
}

absl::Status SipdInstance::StartWithConfig(const std::string& config_path,
                                           const std::string& run_dir,
                                           const std::vector<std::string>& environment) {
  if (pid_ != 0) return absl::FailedPreconditionError("sipd already started");
  absl::StatusOr<std::string> tmp = MakeTmpDir();
  if (!tmp.ok()) return tmp.status();
  run_dir_ = run_dir;
  config_path_ = config_path;
  log_path_ = tmp_dir_ + "/sipd.log";
  sip_port_ = 0;
  grpc_port_ = 0;

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    setsid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (log_fd < 0 || null_fd < 0) _exit(127);
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    if (chdir(tmp_dir_.c_str()) != 0) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (const std::string& variable : environment) putenv(const_cast<char*>(variable.c_str()));
    execl(SIPD_BINARY_PATH, SIPD_BINARY_PATH, "-f", config_path_.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  group_ = pid;  // setsid() made it a group leader

  const std::string pid_file = run_dir_ + "/sipd.pid";
  bool exited = false;
  int status = 0;
  const bool ready = WaitUntil(
      [&] {
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          exited = true;
          return true;
        }
        const std::string content = ReadFile(pid_file);
        return !content.empty() && std::atoi(content.c_str()) == pid_;
      },
      std::chrono::seconds(15));
  if (exited) {
    pid_ = 0;
    kill(-group_, SIGKILL);
    group_ = 0;
    return absl::FailedPreconditionError(
        absl::StrCat("sipd exited during start-up (wait status ", status, "); log:\n", log()));
  }
  if (!ready) {
    (void)Stop();
    return absl::DeadlineExceededError(
        absl::StrCat("sipd did not become ready in 15 s; log:\n", log()));
  }
  // sipd wrote RUN_DIR/listeners before the pid file.
  sip_port_ = listener_port("sip", "udp");
  if (sip_port_ == 0) {
    (void)Stop();
    return absl::InternalError(
        absl::StrCat("no SIP port in ", run_dir_, "/listeners; log:\n", log()));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> SipdInstance::WaitForExit(std::chrono::milliseconds timeout) {
  if (pid_ == 0) return absl::FailedPreconditionError("sipd is not running");
  int status = 0;
  const bool done = WaitUntil([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
  if (!done) return absl::DeadlineExceededError("sipd is still running");
  pid_ = 0;  // group_ stays: Stop() or the destructor kill any straggler of the group
  return status;
}

absl::Status SipdInstance::Stop() {
  if (pid_ == 0) {
    if (group_ != 0) kill(-group_, SIGKILL);
    group_ = 0;
    return absl::OkStatus();
  }
  const pid_t group = group_;
  kill(pid_, SIGTERM);
  int status = 0;
  bool exited =
      WaitUntil([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, std::chrono::seconds(10));
  if (!exited) {
    kill(-group, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  pid_ = 0;
  group_ = 0;
  // Whatever is left of the group goes too (a clean stop leaves nothing).
  kill(-group, SIGKILL);
  if (!exited) return absl::DeadlineExceededError("sipd did not stop within 10 s");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("sipd ended with wait status ", status));
  }
  return absl::OkStatus();
}

std::string MakeSipRequest(std::string_view method, int port, std::string_view call_id,
                           const std::vector<std::string>& extra_headers) {
  const std::string m(method);
  std::string request = absl::StrCat(
      m, " sip:127.0.0.1:", port, " SIP/2.0\r\n", "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-",
      std::string(call_id), "\r\n", "Max-Forwards: 70\r\n", "From: <sip:tester@127.0.0.1>;tag=t-",
      std::string(call_id), "\r\n", "To: <sip:127.0.0.1:", port, ">\r\n",
      "Call-ID: ", std::string(call_id), "\r\n", "CSeq: 1 ", m, "\r\n");
  for (const auto& h : extra_headers) absl::StrAppend(&request, h, "\r\n");
  absl::StrAppend(&request, "Content-Length: 0\r\n\r\n");
  return request;
}

absl::Status SendDatagram(int port, std::string_view datagram) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const ssize_t sent = sendto(fd, datagram.data(), datagram.size(), 0,
                              reinterpret_cast<sockaddr*>(&address), sizeof(address));
  const int error = errno;
  close(fd);
  if (sent < 0) return absl::InternalError(absl::StrCat("sendto: ", std::strerror(error)));
  return absl::OkStatus();
}

absl::StatusOr<std::string> SipExchange(int port, std::string_view datagram,
                                        std::chrono::milliseconds timeout) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&address),
             sizeof(address)) < 0) {
    const int error = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("sendto: ", std::strerror(error)));
  }
  pollfd pfd{fd, POLLIN, 0};
  if (poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) {
    close(fd);
    return absl::DeadlineExceededError(
        absl::StrCat("no answer from 127.0.0.1:", port, " within ", timeout.count(), " ms"));
  }
  std::string reply(65536, '\0');
  const ssize_t n = recv(fd, reply.data(), reply.size(), 0);
  const int error = errno;
  close(fd);
  if (n < 0) return absl::InternalError(absl::StrCat("recv: ", std::strerror(error)));
  reply.resize(static_cast<size_t>(n));
  return reply;
}

int SipStatusCode(std::string_view reply) {
  if (reply.substr(0, 8) != "SIP/2.0 " || reply.size() < 11) return -1;
  int code = 0;
  for (size_t i = 8; i < 11; ++i) {
    if (reply[i] < '0' || reply[i] > '9') return -1;
    code = code * 10 + (reply[i] - '0');
  }
  return code;
}

absl::StatusOr<std::unique_ptr<SipTcpClient>> SipTcpClient::Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect 127.0.0.1:", port, ": ", std::strerror(error)));
  }
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  return std::unique_ptr<SipTcpClient>(new SipTcpClient(fd, ntohs(local.sin_port)));
}

SipTcpClient::~SipTcpClient() { close(fd_); }

absl::Status SipTcpClient::Write(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

bool SipTcpClient::Fill(std::chrono::steady_clock::time_point deadline, bool* eof) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  pollfd pfd{fd_, POLLIN, 0};
  if (poll(&pfd, 1, static_cast<int>(std::max<int64_t>(left.count(), 0))) != 1) return false;
  char chunk[65536];
  const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
  if (n <= 0) {
    *eof = true;
    return false;
  }
  buffer_.append(chunk, static_cast<size_t>(n));
  return true;
}

absl::StatusOr<std::string> SipTcpClient::ReadMessage(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    // Skip keep-alive CRLFs between messages.
    const size_t start = buffer_.find_first_not_of("\r\n");
    if (start != std::string::npos && start > 0) buffer_.erase(0, start);
    const size_t end = buffer_.find("\r\n\r\n");
    if (start != std::string::npos && end != std::string::npos) {
      size_t body = 0;
      std::string lower = buffer_.substr(0, end);
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const size_t at = lower.find("\r\ncontent-length:");
      if (at != std::string::npos) body = std::strtoul(lower.c_str() + at + 17, nullptr, 10);
      if (buffer_.size() >= end + 4 + body) {
        std::string message = buffer_.substr(0, end + 4 + body);
        buffer_.erase(0, end + 4 + body);
        return message;
      }
    }
    bool eof = false;
    if (!Fill(deadline, &eof)) {
      if (eof) return absl::UnavailableError("connection closed by sipd");
      return absl::DeadlineExceededError(
          absl::StrCat("no complete SIP message within ", timeout.count(), " ms"));
    }
  }
}

absl::StatusOr<std::string> SipTcpClient::ReadSome(size_t max, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool eof = false;
  while (buffer_.size() < max && Fill(deadline, &eof)) {
  }
  if (buffer_.empty() && eof) return absl::UnavailableError("connection closed by sipd");
  std::string out = buffer_.substr(0, max);
  buffer_.erase(0, out.size());
  return out;
}

bool SipTcpClient::WaitForClose(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    bool eof = false;
    if (Fill(deadline, &eof)) {
      buffer_.clear();
      continue;
    }
    return eof;
  }
}

}  // namespace sipd::testing
