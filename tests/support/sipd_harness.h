// Integration-test harness: starts a real `sipd` (the binary given by SIPD_BINARY_PATH)
// with a generated config in a temp dir, and stops it without leaving any process
// behind.
//
//   sipd::testing::SipdInstance sipd({.grpc = false});
//   ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
//   auto reply = sipd::testing::SipExchange(sipd.sip_port(),
//                                           sipd::testing::MakeSipRequest("OPTIONS", ...));
//
// sipd runs in its own session/process group (setsid) with PR_SET_PDEATHSIG, so the
// whole group is killed in teardown, and even a crashed test binary takes it along.
//
// Ports: the generated config asks for port 0 (SIP, mi_grpc) and the harness reads the
// ports sipd got from RUN_DIR/listeners (sipd/core/daemon.h), so parallel tests never
// race for a port. Modules in extra_config may do the same (port 0, or a path under
// {RUN_DIR}) and be found with listener_address() / listener_port().
//
// Thread-safety: one SipdInstance per test; not for concurrent use.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/support/wait_until.h"

namespace sipd::testing {

// One line of RUN_DIR/listeners.
struct ListenerEntry {
  std::string module;    // "sip", "mi_grpc", ...
  std::string protocol;  // udp, grpc, http, fifo, unix, sqlite, ...
  std::string address;   // HOST:PORT, http://HOST:PORT/PATH, or a path
};

// The port of "HOST:PORT", "[v6]:PORT" or "http://HOST:PORT/PATH"; 0 if none.
int PortOf(std::string_view address);

// The whole file ("" if it cannot be read).
std::string ReadFile(const std::string& path);
// Writes `text` to `path` (truncating) and sets its mode.
void WriteFile(const std::string& path, const std::string& text, mode_t mode);
// Runs `command` with /bin/sh; its exit status (-1 if it did not exit) and stdout+stderr.
std::pair<int, std::string> RunShell(const std::string& command);

class SipdInstance {
 public:
  struct Options {
    bool grpc = true;  // loadmodule "mi_grpc" on 127.0.0.1 port 0
    bool tcp = false;  // also listen = tcp:127.0.0.1:0 (SIP over TCP; see tcp_port())
    int children = 2;
    int log_level = 3;
    std::string extra_config;  // appended verbatim (loadmodule/modparam lines);
                               // may use the placeholders {RUN_DIR} and {TMP_DIR}
    // false: local callers without credentials are admin (modparam("mi", "local_role",
    // "admin")), so tests of other things run every command without tokens. true: the
    // product's defaults (read only without credentials), for the security tests.
    bool default_security = false;
  };

  // (Two constructors rather than `Options options = {}`: a nested struct with default
  // member initializers cannot be a default argument inside its enclosing class.)
  SipdInstance();
  explicit SipdInstance(Options options);
  ~SipdInstance();  // Stop() + remove temp dir
  SipdInstance(const SipdInstance&) = delete;
  SipdInstance& operator=(const SipdInstance&) = delete;

  // Writes the config in a temp dir, starts `sipd -f CFG` (cwd = the temp dir, stdout
  // and stderr to TMP_DIR/sipd.log), waits (<= 15 s) for RUN_DIR/sipd.pid (sipd writes
  // it once every process is up and listening) and reads RUN_DIR/listeners. On failure
  // the error includes the log.
  absl::Status Start();
  // The same with a config file of the caller's whose run_dir is `run_dir`, and extra
  // environment variables ("NAME=value") for sipd. tmp_dir() exists before the call
  // when the caller asked for it (it is made on first use).
  absl::Status StartWithConfig(const std::string& config_path, const std::string& run_dir,
                               const std::vector<std::string>& environment = {});
  // The private temp dir (created now if needed; removed by the destructor).
  absl::StatusOr<std::string> MakeTmpDir();
  // SIGTERM, wait <= 10 s, then SIGKILL the group. OK if sipd exited with status 0.
  // Idempotent.
  absl::Status Stop();
  // Waits for the attendant to exit by itself (e.g. after a signal the test sent) and
  // returns its wait status (as waitpid); DeadlineExceeded if it is still running.
  // Other members of the group are left alone (tests may check them) until Stop() or
  // the destructor.
  absl::StatusOr<int> WaitForExit(std::chrono::milliseconds timeout);

  pid_t pid() const { return pid_; }  // the attendant; 0 when not running
  int sip_port() const { return sip_port_; }
  // The SIP TCP port (Options::tcp, or a tcp listen line of the caller's); 0 if none.
  int tcp_port() const { return listener_port("sip", "tcp"); }
  std::string sip_address() const { return "127.0.0.1"; }
  // Read from RUN_DIR/listeners at each call: a restarted mi_grpc on port 0 reports a
  // new port (the last known one is kept once sipd has stopped).
  int grpc_port() const;
  std::string grpc_target() const;  // "127.0.0.1:PORT"

  // RUN_DIR/listeners as it is now (empty when sipd is not running).
  std::vector<ListenerEntry> listeners() const;
  // The address of the first listener of `module` (and `protocol`, if not empty); ""
  // if there is none.
  std::string listener_address(std::string_view module, std::string_view protocol = "") const;
  // PortOf(listener_address(...)).
  int listener_port(std::string_view module, std::string_view protocol = "") const;
  const std::string& run_dir() const { return run_dir_; }
  // The admin token sipd keeps in run_dir (empty if it cannot be read).
  std::string admin_token() const;
  const std::string& tmp_dir() const { return tmp_dir_; }
  const std::string& config_path() const { return config_path_; }
  std::string log() const;  // sipd's stderr so far

 private:
  Options options_;
  std::string tmp_dir_;
  std::string run_dir_;
  std::string config_path_;
  std::string log_path_;
  int sip_port_ = 0;
  mutable int grpc_port_ = 0;
  pid_t pid_ = 0;
  pid_t group_ = 0;  // sipd's process group, until every member is gone for sure
};

// --- process helpers ---

// Children of `parent` (from /proc/*/stat).
std::vector<pid_t> ChildPids(pid_t parent);
// Live processes whose process group is `pgid` (zombies excluded).
std::vector<pid_t> ProcessGroupPids(pid_t pgid);
// Whether `pid` exists and is not a zombie.
bool ProcessAlive(pid_t pid);

// --- SIP helpers ---

// A request with Via/From/To/Call-ID/CSeq/Max-Forwards/Content-Length for
// sip:127.0.0.1:PORT; `extra_headers` are lines without CRLF.
std::string MakeSipRequest(std::string_view method, int port, std::string_view call_id,
                           const std::vector<std::string>& extra_headers = {});
// Sends `datagram` from a fresh UDP socket to 127.0.0.1:port and returns the first
// datagram received back within `timeout` (DeadlineExceeded if none).
absl::StatusOr<std::string> SipExchange(
    int port, std::string_view datagram,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
// Sends without waiting for an answer.
absl::Status SendDatagram(int port, std::string_view datagram);
// The status code of a SIP reply ("SIP/2.0 200 OK..." -> 200), or -1.
int SipStatusCode(std::string_view reply);

// A blocking TCP client for SIP tests: connect to 127.0.0.1:port, write bytes, read
// Content-Length-framed messages with a timeout.
class SipTcpClient {
 public:
  // Connects (TCP_NODELAY on). Errors say why.
  static absl::StatusOr<std::unique_ptr<SipTcpClient>> Connect(int port);
  ~SipTcpClient();
  SipTcpClient(const SipTcpClient&) = delete;
  SipTcpClient& operator=(const SipTcpClient&) = delete;

  int fd() const { return fd_; }
  // The local port (what sipd sees as the source).
  int local_port() const { return local_port_; }
  absl::Status Write(std::string_view bytes);
  // The next complete SIP message (headers + Content-Length body); DeadlineExceeded when
  // none within `timeout`, Unavailable when the peer closed first.
  absl::StatusOr<std::string> ReadMessage(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));
  // Raw bytes already received or arriving within `timeout`, up to `max` (for pongs).
  absl::StatusOr<std::string> ReadSome(size_t max, std::chrono::milliseconds timeout);
  // Whether sipd closed the connection within `timeout` (bytes before EOF are dropped).
  bool WaitForClose(std::chrono::milliseconds timeout);

 private:
  SipTcpClient(int fd, int local_port) : fd_(fd), local_port_(local_port) {}
  // Reads once into buffer_; false on EOF/error/timeout (sets *eof on EOF).
  bool Fill(std::chrono::steady_clock::time_point deadline, bool* eof);
  int fd_;
  int local_port_;
  std::string buffer_;
};

}  // namespace sipd::testing
