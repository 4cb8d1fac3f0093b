// Every sipd process holds only the descriptors it serves (issue 9, hole 2): a real sipd
// with every MI transport, and /proc/PID/fd of each of its processes.
#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/sipd_harness.h"

namespace {

using ::sipd::testing::ProcessGroupPids;
using ::sipd::testing::SipdInstance;

// The process name as sipd sets it ("sipd:" + type), cut to the kernel's 15 bytes.
std::string Comm(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/comm"));
  std::string name;
  std::getline(in, name);
  return name;
}
std::string CommOf(const std::string& type) { return ("sipd:" + type).substr(0, 15); }

// Socket inode -> "udp 127.0.0.1:5060" / "tcp-listen 127.0.0.1:8095" / "unix /path".
std::map<std::string, std::string> SocketNames() {
  std::map<std::string, std::string> names;
  auto hex_address = [](const std::string& text) {
    // "0100007F:13C4" -> "127.0.0.1:5060"
    const std::vector<std::string> parts = absl::StrSplit(text, ':');
    const unsigned long ip = std::stoul(parts[0], nullptr, 16);
    const unsigned long port = std::stoul(parts[1], nullptr, 16);
    return absl::StrCat(ip & 0xff, ".", (ip >> 8) & 0xff, ".", (ip >> 16) & 0xff, ".",
                        (ip >> 24) & 0xff, ":", port);
  };
  for (const std::string proto : {"udp", "tcp"}) {
    std::ifstream in("/proc/net/" + proto);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (f.size() < 10) continue;
      const bool listening = proto == "tcp" && f[3] == "0A";
      names[f[9]] = absl::StrCat(proto, listening ? "-listen " : " ", hex_address(f[1]));
    }
  }
  std::ifstream unix_sockets("/proc/net/unix");
  std::string line;
  std::getline(unix_sockets, line);
  while (std::getline(unix_sockets, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() >= 7) names[f[6]] = absl::StrCat("unix ", f.size() >= 8 ? f[7] : "-");
  }
  return names;
}

// What process `pid` holds: socket names, "eventfd", "pipe", "fifo:/path", file paths.
std::multiset<std::string> Descriptors(pid_t pid, const std::map<std::string, std::string>& names) {
  std::multiset<std::string> out;
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* entry = readdir(d)) {
    if (entry->d_name[0] == '.') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd <= 2) continue;  // stdio
    char target[512];
    const ssize_t n = readlink((dir + "/" + entry->d_name).c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    const std::string link(target, static_cast<size_t>(n));
    if (absl::StartsWith(link, "socket:[")) {
      const std::string inode = link.substr(8, link.size() - 9);
      auto it = names.find(inode);
      out.insert(it == names.end() ? "socket ?" : it->second);
    } else if (link == "anon_inode:[eventfd]") {
      out.insert("eventfd");
    } else {
      out.insert(link);
    }
  }
  closedir(d);
  return out;
}

TEST(DescriptorsTest, EachProcessHoldsOnlyWhatItServes) {
  SipdInstance sipd(SipdInstance::Options{.grpc = true, .children = 2, .extra_config = R"(
loadmodule "mi_fifo"
modparam("mi_fifo", "fifo_name", "{RUN_DIR}/fifo")
modparam("mi_fifo", "reply_dir", "{RUN_DIR}")
loadmodule "mi_datagram"
modparam("mi_datagram", "socket_name", "{RUN_DIR}/mi.sock")
loadmodule "mi_xmlrpc"
modparam("mi_xmlrpc", "port", 0)
loadmodule "usrloc"
loadmodule "registrar"
)"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const std::string sip = absl::StrCat("udp 127.0.0.1:", sipd.sip_port());
  const std::string xmlrpc = absl::StrCat("tcp-listen 127.0.0.1:", sipd.listener_port("mi_xmlrpc"));
  const std::string datagram = "unix " + sipd.run_dir() + "/mi.sock";
  const std::map<std::string, std::string> names = SocketNames();

  std::map<std::string, std::multiset<std::string>> held;
  int sip_workers = 0;
  for (pid_t pid : ProcessGroupPids(sipd.pid())) {
    if (pid == sipd.pid()) continue;  // the attendant keeps everything for restarts
    const std::string comm = Comm(pid);
    std::multiset<std::string> fds = Descriptors(pid, names);
    SCOPED_TRACE(comm);
    // Nobody but the process that serves it holds an MI transport's socket. The SIP UDP
    // socket is everyone's: any process may send SIP (tm retransmits from the timer,
    // t_uac_dlg sends from the MI processes); only the SIP receivers read it.
    EXPECT_EQ(fds.count(sip), 1u);
    EXPECT_EQ(fds.count(xmlrpc), comm == CommOf("MI XMLRPC") ? 1u : 0u);
    EXPECT_EQ(fds.count(datagram), comm == CommOf("MI Datagram") ? 1u : 0u);
    // Every process may complete an async MI call, so it keeps the wake-up eventfds; a
    // SIP worker holds nothing else but SIP sockets.
    if (comm == CommOf("sip")) {
      for (const std::string& fd : fds) {
        EXPECT_TRUE(fd == "eventfd" || absl::StartsWith(fd, "udp ")) << fd;
      }
    }
    if (comm == CommOf("sip")) ++sip_workers;
    held[comm] = std::move(fds);
  }
  EXPECT_EQ(sip_workers, 2);
  // The MI processes hold no SIP socket and no other transport's socket (checked above);
  // the FIFO process holds its FIFO.
  ASSERT_TRUE(held.contains(CommOf("MI FIFO")));
  EXPECT_EQ(held[CommOf("MI FIFO")].count(sipd.run_dir() + "/fifo"), 2u)
      << "read end and the keep-open write end";
  ASSERT_TRUE(held.contains(CommOf("timer")));
  for (const std::string& fd : held[CommOf("timer")])
    EXPECT_TRUE(fd == "eventfd" || fd == sip) << fd;
}

}  // namespace
