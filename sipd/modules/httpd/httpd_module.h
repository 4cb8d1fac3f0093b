// Module `httpd`: the operator's HTTP face, one `HTTPD` process (http_server.h):
//   POST /mi        JSON-RPC 2.0 over the MI (OpenSIPS 3.x mi_http style; jsonrpc.h)
//   GET  /metrics   Prometheus text format of every statistic (metrics.h)
//   GET  /          the web console (static files from web/console; README.md there)
//   GET  /api/...   the console's data: commands, processes, statistics history
//
//   loadmodule "httpd"
//   modparam("httpd", "listen", "127.0.0.1:8888")   # HOST:PORT or [V6]:PORT; port 0 = any
//
// Parameters:
//   listen            default 127.0.0.1:8888 (loopback: MI is administrative; expose it
//                     deliberately).
//   processes         HTTPD processes sharing the listen socket, each an event loop;
//                     default 2 (the 2-core reference machine: bench/RESULTS.md).
//   max_connections   open connections per process at most; one more is answered 503;
//                     default 1024.
//   max_body_size     bytes of a request body; more is HTTP 413 with a JSON-RPC error;
//                     default 1048576.
//   max_batch         requests in one JSON-RPC batch; more is a -32600 error; default 1000.
//   header_timeout    s for a whole request to arrive (also the keep-alive idle time);
//                     default 30.
//   stall_timeout     s a client may leave a reply part untaken; default 10.
//   reply_timeout     s: the deadline of every MI call (async replies); default 60.
//   web_root          folder of the console's files; default: share/sipd/console beside
//                     the binary's folder (installed, or the build tree's copy).
//   history_seconds   statistics history kept for the console, 1 sample/s; default 3600
//                     (registry/stat_sampler.h: 16 bytes per statistic and sample).
//
// Statistics: httpd:connections (gauge), requests, rejected, timeouts, stalled,
// too_large (README.md).
//
// Processes: `processes` x `ps` type "HTTPD". The attendant binds the socket before the
// fork (a busy port fails start-up) and reports it (the bound port for port 0) in
// RUN_DIR/listeners as `httpd http http://HOST:PORT/`. Each process keeps its own
// statistics history (the same shared counters sampled each second), so the console
// shows the same charts whichever process answers.
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewHttpdModule();

}  // namespace sipd
