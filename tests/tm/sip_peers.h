// SIP peers for tm's integration tests: sipp processes in the background and raw UDP
// sockets that play a phone byte by byte (UdpPeer, tests/support/udp_peer.h).
//
// sipp is started WITHOUT -p: it binds 5060 or the next free port itself and keeps it
// (no bind-close-rebind race); the test reads the port back from /proc (the first of
// sipp's sockets that is a SIP socket on 127.0.0.1).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/udp_peer.h"

namespace sipd::testing {

inline std::string SipScenario(std::string_view file) {
  return absl::StrCat(SIPD_SIP_SCENARIO_DIR, "/", std::string(file));
}

// One sipp process. The destructor kills its process group.
class SippProcess {
 public:
  // Runs `sipp -sf SCENARIO -i 127.0.0.1 -nostdin ARGS...` in its own process group in
  // `work_dir`, stdout/stderr to a log there.
  static std::unique_ptr<SippProcess> Start(const std::string& scenario,
                                            std::vector<std::string> args,
                                            const std::string& work_dir, const std::string& tag) {
    auto p = std::unique_ptr<SippProcess>(new SippProcess());
    p->log_ = absl::StrCat(work_dir, "/sipp-", tag, ".log");
    p->errors_ = absl::StrCat(work_dir, "/sipp-", tag, "-errors.log");
    std::vector<std::string> argv = {"sipp",       "-sf",         SipScenario(scenario),
                                     "-i",         "127.0.0.1",   "-nostdin",
                                     "-trace_err", "-error_file", p->errors_};
    argv.insert(argv.end(), args.begin(), args.end());
    const pid_t pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = open(p->log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int null = open("/dev/null", O_RDONLY);
      dup2(null, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      if (chdir(work_dir.c_str()) != 0) _exit(126);
      std::vector<char*> c_argv;
      for (auto& a : argv) c_argv.push_back(a.data());
      c_argv.push_back(nullptr);
      execvp("sipp", c_argv.data());
      _exit(127);
    }
    setpgid(pid, pid);
    p->pid_ = pid;
    return p;
  }

  ~SippProcess() { Kill(); }

  pid_t pid() const { return pid_; }

  // The SIP port sipp bound (UDP socket, or TCP listen socket with `tcp`), once it exists.
  absl::StatusOr<int> SipPort(bool tcp,
                              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    int port = 0;
    WaitUntil(
        [&] {
          port = FindPort(tcp);
          return port > 0 || !Running();
        },
        timeout);
    if (port <= 0) return absl::UnavailableError("sipp did not bind a SIP port:\n" + output());
    return port;
  }

  bool Running() {
    if (exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      return false;
    }
    return true;
  }

  // Waits for sipp to end; -1 if it had to be killed (timeout) or died of a signal.
  int Wait(std::chrono::milliseconds timeout) {
    WaitUntil([&] { return !Running(); }, timeout);
    if (Running()) Kill();
    return exit_code_;
  }

  void Kill() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGKILL);
    if (!exited_) {
      int status = 0;
      waitpid(pid_, &status, 0);
      exited_ = true;
      exit_code_ = -1;
    }
    pid_ = -pid_;  // remembered for logs, not killed twice
  }

  std::string output() const {
    std::string out;
    for (const std::string& file : {log_, errors_}) {
      std::ifstream in(file);
      std::stringstream text;
      text << in.rdbuf();
      out += text.str();
    }
    return out;
  }

 private:
  SippProcess() = default;

  int FindPort(bool tcp) const {
    // Socket inodes of the process, in fd order.
    std::vector<std::pair<int, std::string>> sockets;
    const std::string fd_dir = absl::StrCat("/proc/", pid_, "/fd");
    DIR* dir = opendir(fd_dir.c_str());
    if (dir == nullptr) return 0;
    while (dirent* e = readdir(dir)) {
      int fd = 0;
      if (!absl::SimpleAtoi(e->d_name, &fd)) continue;
      char target[128] = {};
      const std::string link = absl::StrCat(fd_dir, "/", e->d_name);
      const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      std::string_view t(target, static_cast<size_t>(n));
      if (t.substr(0, 8) != "socket:[") continue;
      sockets.emplace_back(fd, std::string(t.substr(8, t.size() - 9)));
    }
    closedir(dir);
    std::sort(sockets.begin(), sockets.end());
    // inode -> local port of 127.0.0.1 sockets (listening ones for TCP).
    std::map<std::string, int> ports;
    std::ifstream table(absl::StrCat("/proc/", pid_, "/net/", tcp ? "tcp" : "udp"));
    std::string line;
    std::getline(table, line);
    while (std::getline(table, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (f.size() < 10) continue;
      if (f[1].substr(0, 9) != "0100007F:") continue;  // 127.0.0.1
      if (tcp && f[3] != "0A") continue;               // LISTEN
      ports[f[9]] = static_cast<int>(std::stoul(f[1].substr(9), nullptr, 16));
    }
    for (const auto& [fd, inode] : sockets) {
      auto it = ports.find(inode);
      if (it != ports.end()) return it->second;
    }
    return 0;
  }

  pid_t pid_ = 0;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string log_;
  std::string errors_;
};

}  // namespace sipd::testing
