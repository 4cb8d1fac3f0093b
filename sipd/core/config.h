// The sipd configuration file (OpenSIPS style, the subset sipd understands).
//
//   # comment                          (anywhere outside a quoted string)
//   listen = udp:127.0.0.1:5060        (repeatable; `udp:` may be omitted; IPv6 as [::1])
//   listen = tcp:127.0.0.1:5060        (SIP over TCP: `TCP main` + `TCP receiver`s)
//   children = 2                       (SIP workers per UDP listen socket)
//   maxbuffer = 2097152                (UDP receive buffer probing limit, bytes; 0 = off)
//   tcp_children = 2                   (TCP receivers; default: children)
//   tcp_max_connections = 2048         (open TCP connections at once, both directions)
//   tcp_connection_lifetime = 120      (s without traffic before a connection is closed)
//   tcp_max_msg_size = 65536           (bytes: larger messages get 513 and a close)
//   tcp_header_timeout = 4             (s from a message's first byte to its last)
//   tcp_connect_timeout = 3000         (ms for an outbound connect)
//   tcp_send_timeout = 10000           (ms a peer may take no bytes while we have some)
//   tcp_max_send_queue = 262144        (bytes queued per connection)
//   log_level = 3                      (alias: debug; OpenSIPS levels -3 .. 4, 5+ = trace)
//   run_dir = "/tmp/sipd-run"          (sipd's own directory; see "run_dir" below)
//   shm_size = 64                      (shared memory, MB)
//   mi_nice = 19                       (nice value 0..19 of module (MI transport) processes;
//                                       0 = the SIP workers' priority, as OpenSIPS)
//   mi_async_slots = 4096              (MI calls that may wait for an async reply at once)
//   exec_msg_threshold = 0             (us: a SIP message processed slower raises
//                                       E_CORE_THRESHOLD and logs a warning; 0 = off)
//   shm_threshold = 0                  (percent of shm used that raises E_CORE_SHM_THRESHOLD)
//   pkg_threshold = 0                  (percent of a process's private memory that raises
//                                       E_CORE_PKG_THRESHOLD; see sipd/core/thresholds.h)
//   loadmodule "mi_grpc"               (a path or `.so` suffix is accepted and stripped)
//   modparam("mi_grpc", "listen", "127.0.0.1:8090")
//   modparam("mi", "tokens_file", "/etc/sipd/tokens")   (MI security: sipd/core/mi_security.h;
//                                       "mi" is built in and needs no loadmodule)
//
// Values are quoted strings (escapes \" \\ \n \t) or bare integers (decimal, negative,
// octal with a leading 0 such as 0600, hex with 0x). A statement may end with `;`.
// Every error is reported as `FILE:LINE: what is wrong`.
//
// run_dir: where sipd keeps its run files: the pid file (sipd.pid), the list of what it
// listens on (listeners, see sipd/core/daemon.h) and, in etc/sipd.cfg, the MI FIFO, the
// MI datagram socket and the usrloc database. Default: $XDG_RUNTIME_DIR/sipd when
// XDG_RUNTIME_DIR is set (an absolute path), else /tmp/sipd-<euid>, so two users on one
// machine do not collide. sipd creates the directory itself (mode 0700), never its
// parent: a missing parent is a start-up error that names it. An existing run_dir must
// belong to sipd's user and be writable by nobody else.
//
// ${run_dir} in a modparam string value stands for the final run_dir (wherever the
// run_dir line is, or the default), e.g.
//   modparam("mi_fifo", "fifo_name", "${run_dir}/opensips_fifo")
// It is the only substitution: any other `${` in a modparam string is an error, so a
// typo does not silently become a file name. (The parser applies modparams after the
// whole file is read, in file order.)
//
// Thread-safety: plain value types; no shared state.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/api/module.h"
#include "sipd/api/paths.h"
#include "sipd/core/mi_security.h"
#include "sipd/core/sip_transport.h"

namespace sipd {

// One `listen` line.
struct ListenAddress {
  SipProto proto = SipProto::kUdp;
  std::string ip;  // without brackets
  uint16_t port = 0;
  bool ipv6 = false;
  int line = 0;  // of its listen line (0: not from a file)

  // "udp:IP:PORT" / "tcp:IP:PORT" (IPv6 in brackets): the socket name used by ps, stats,
  // SipRequest and usrloc.
  std::string ToString() const;
};

// One modparam line, as written (for error messages that point at the config).
struct ParamLine {
  std::string param;
  std::string value;  // as written: "quoted" or the integer's text
  int line = 0;
};

struct LoadedModule {
  std::string name;
  int line = 0;  // of its loadmodule line
  std::unique_ptr<Module> module;
  std::vector<ParamLine> params;  // in file order
};

// The TCP limits (config keys tcp_*; meanings above).
struct TcpConfig {
  int children = 0;  // 0: as `children`
  int max_connections = 2048;
  int connection_lifetime_s = 120;
  int max_msg_size = 65536;
  int header_timeout_s = 4;
  int connect_timeout_ms = 3000;
  int send_timeout_ms = 10000;
  int max_send_queue = 262144;
};

struct Config {
  std::string file;
  std::vector<ListenAddress> listen;
  int children = 8;
  // UDP receive buffer probing limit (OpenSIPS `maxbuffer`; 0: kernel default). Larger
  // than OpenSIPS's 256 KB default so that bursts queue rather than drop.
  int maxbuffer = 2 * 1024 * 1024;
  TcpConfig tcp;
  int log_level = 2;
  std::string run_dir = DefaultRunDir();
  int run_dir_line = 0;  // 0: the default
  int64_t shm_size_mb = 64;
  // Module processes (the MI transports, the console, event delivery) run at this nice
  // value, so that when an MI client keeps them busy the SIP workers win the CPU: a
  // client looping `ul_dump` costs write-through REGISTERs 5.0 % instead of 5.9 % (medians
  // of 75 and 60 per-round drops, bench/RESULTS.md, "Group commit: the MI processes at
  // nice 19 by default"). The MI still gets whatever CPU SIP leaves, and a share of it
  // under SIP saturation (weight 15 against 1024 per busy worker). 0 = the SIP workers'
  // priority, as OpenSIPS.
  int mi_nice = 19;
  // Async MI calls pending at once, all MI processes together (sipd/core/async_table.h).
  size_t mi_async_slots = 4096;
  // The core's threshold events (sipd/core/thresholds.h); 0 = off.
  int64_t exec_msg_threshold_us = 0;
  int shm_threshold = 0;
  int pkg_threshold = 0;
  // modparam("mi", ...): who may run which MI command, the audit log.
  MiSecurityOptions mi_security;
  // In loadmodule order, SetParam() already applied.
  std::vector<LoadedModule> modules;
};

// Creates a module by name; nullptr for an unknown name.
using ModuleFactory = std::function<std::unique_ptr<Module>(std::string_view name)>;

struct ParseOptions {
  // Listed in the "unknown module" error, so the reader sees what exists.
  std::vector<std::string> known_modules;
};

// Parses a whole configuration. `file_name` only labels errors. On error returns
// InvalidArgument "FILE:LINE: what is wrong" (or "FILE: what" for whole-file problems).
absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file_name,
                                   const ModuleFactory& factory, const ParseOptions& options = {});

// Reads `path` and parses it (NotFound/PermissionDenied style errors name the file).
absl::StatusOr<Config> LoadConfigFile(const std::string& path, const ModuleFactory& factory,
                                      const ParseOptions& options = {});

// Parses "udp:IP:PORT", "tcp:IP:PORT", "IP:PORT" (UDP), "udp:[v6]:PORT". Port 0 = any
// free port.
absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view text);

}  // namespace sipd
