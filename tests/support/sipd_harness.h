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
// Thread-safety: one SipdInstance per test; not for concurrent use.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sipd::testing {

// A port that was free on 127.0.0.1 a moment ago (bind to 0, read, close).
int FreeTcpPort();
int FreeUdpPort();

class SipdInstance {
 public:
  struct Options {
    bool grpc = true;  // loadmodule "mi_grpc" on a free 127.0.0.1 port
    int children = 2;
    int log_level = 3;
    std::string extra_config;  // appended verbatim (loadmodule/modparam lines);
                               // may use the placeholders {RUN_DIR} and {TMP_DIR}
  };

  // (Two constructors rather than `Options options = {}`: a nested struct with default
  // member initializers cannot be a default argument inside its enclosing class.)
  SipdInstance();
  explicit SipdInstance(Options options);
  ~SipdInstance();  // Stop() + remove temp dir
  SipdInstance(const SipdInstance&) = delete;
  SipdInstance& operator=(const SipdInstance&) = delete;

  // Writes the config in a temp dir, starts `sipd -f CFG` (cwd = the temp dir, stdout
  // and stderr to TMP_DIR/sipd.log), waits (<= 15 s) for RUN_DIR/sipd.pid and, with
  // grpc, for the gRPC port to accept connections. On failure the error includes the log.
  absl::Status Start();
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
  std::string sip_address() const { return "127.0.0.1"; }
  int grpc_port() const { return grpc_port_; }
  std::string grpc_target() const;  // "127.0.0.1:PORT"
  const std::string& run_dir() const { return run_dir_; }
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
  int grpc_port_ = 0;
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
// Polls `predicate` every 20 ms until it is true or `timeout` passes.
template <typename Predicate>
bool WaitUntil(Predicate predicate, std::chrono::milliseconds timeout);

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

template <typename Predicate>
bool WaitUntil(Predicate predicate, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (predicate()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    struct timespec ts {
      0, 20 * 1000 * 1000
    };
    nanosleep(&ts, nullptr);
  }
}

}  // namespace sipd::testing
