// The `mi_xmlrpc` module: the MI XMLRPC process (spec 5, 10.2).
//
//   loadmodule "mi_xmlrpc"
//   modparam("mi_xmlrpc", "port", 8080)            # 1..1024 -> 8080 (warning); 0 any port
//   modparam("mi_xmlrpc", "listen", "127.0.0.1")   # bind address (OpenSIPS: all)
//   modparam("mi_xmlrpc", "reply_option", 0)       # 0 one string, 1 array of strings
//   modparam("mi_xmlrpc", "buffer_size", 8192)     # initial reply buffer
//   modparam("mi_xmlrpc", "log_file", "/var/log/sipd-xmlrpc.log")  # access log
//   modparam("mi_xmlrpc", "max_body_size", 1048576)  # bytes; larger -> HTTP 413
//   modparam("mi_xmlrpc", "read_timeout", 15)      # seconds per request / idle keep-alive
//   modparam("mi_xmlrpc", "max_connections", 32)   # concurrent connections; more -> 503
//
// One process, `ps` type "MI XMLRPC". The socket is bound in the attendant before the
// fork (pre_fork), so a busy port or a bad address fails start-up with a clear error,
// and a restarted MI XMLRPC process serves the same socket.
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewMiXmlrpcModule();

}  // namespace sipd
