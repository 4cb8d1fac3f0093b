// The `mi_xmlrpc` module: the MI XMLRPC process (spec 5, 10.2).
//
//   loadmodule "mi_xmlrpc"
//   modparam("mi_xmlrpc", "port", 8080)            # 1..1024 -> 8080 (warning); 0 any port
//   modparam("mi_xmlrpc", "listen", "127.0.0.1")   # bind address (OpenSIPS: all)
//   modparam("mi_xmlrpc", "reply_option", 0)       # 0 one string, 1 array of strings
//   modparam("mi_xmlrpc", "buffer_size", 8192)     # initial reply buffer
//   modparam("mi_xmlrpc", "log_file", "/var/log/sipd-xmlrpc.log")  # access log
//   modparam("mi_xmlrpc", "max_body_size", 1048576)  # bytes; larger -> HTTP 413
//   modparam("mi_xmlrpc", "header_timeout", 5)     # s: first byte (or connect) to end of head
//   modparam("mi_xmlrpc", "read_timeout", 15)      # s: end of head to end of body
//   modparam("mi_xmlrpc", "idle_timeout", 15)      # s: keep-alive wait between requests
//   modparam("mi_xmlrpc", "stall_timeout", 10)     # s: reply not taken by the client
//   modparam("mi_xmlrpc", "reply_timeout", 60)     # s: whole reply (streams too) delivered
//   modparam("mi_xmlrpc", "max_connections", 4096) # open connections per process
//   modparam("mi_xmlrpc", "max_connections_per_peer", 2048)  # per client IP, per process
//   modparam("mi_xmlrpc", "keep_alive_max", 0)     # requests per connection; 0 = no cap
//   modparam("mi_xmlrpc", "processes", 2)          # event-loop processes on the socket
//
// At a connection limit the oldest idle connection is closed to make room; only when
// none is idle is the newcomer answered `503` (see server.h, which also states the
// memory a connection may hold). The process lifts its descriptor soft limit to
// max_connections + 64 when the hard limit allows.
//
// `processes` processes (default 2: on the 2-core reference machine one event loop
// cannot use the second core, and 4 clients got 57-65k req/s with one against 63-109k
// with two, bench/RESULTS.md), `ps` type "MI XMLRPC" each. The socket is bound in the
// attendant before the fork (pre_fork), so a busy port or a bad address fails start-up
// with a clear error, and a restarted MI XMLRPC process serves the same socket.
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewMiXmlrpcModule();

}  // namespace sipd
