// The `mi_datagram` module: the MI datagram transport processes (spec 4, 10.2).
//
//   loadmodule "mi_datagram"
//   modparam("mi_datagram", "socket_name", "udp:127.0.0.1:8094")  or a UNIX socket path;
//                                                                   mandatory
//   modparam("mi_datagram", "extra_socket_name", "udp:127.0.0.1:8095")
//                                                     one more socket (sipd; repeatable)
//   modparam("mi_datagram", "children_count", 1)      processes serving the sockets
//   modparam("mi_datagram", "socket_timeout", 2000)   accepted, no effect (as in 1.11):
//                                                     replies never wait
//   modparam("mi_datagram", "async_timeout", 120000)  ms an async call may wait for its
//                                                     reply (sipd; then 500 command failed)
//   modparam("mi_datagram", "reply_indent", "\t")
//   modparam("mi_datagram", "unix_socket_mode", 0600) default 0600 (0 -> 0600, warning)
//   modparam("mi_datagram", "unix_socket_user", "sipd")
//   modparam("mi_datagram", "unix_socket_group", "sipd")
//
// `children_count` processes, `ps` type `MI Datagram`. The sockets are created in the
// pre-fork hook (a busy port or an unusable path fails sipd start-up) and inherited by
// the processes. Unlike OpenSIPS, the attendant keeps its copies after the fork so that
// a restarted MI Datagram process inherits working sockets. Shutdown() closes them and
// removes the UNIX socket file. Init() registers the statistic
// `mi_datagram:dropped_replies` (replies dropped on a client's full queue).
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewMiDatagramModule();

}  // namespace sipd
