// The `mi_fifo` module: the MI FIFO transport process (spec 3, 10.2).
//
//   loadmodule "mi_fifo"
//   modparam("mi_fifo", "fifo_name", "/tmp/sipd_fifo")    mandatory
//   modparam("mi_fifo", "fifo_mode", 0600)                 default 0600 (0 -> 0600, warning)
//   modparam("mi_fifo", "fifo_user", "sipd")               name or uid; default inherited
//   modparam("mi_fifo", "fifo_group", "sipd")              name or gid; default inherited
//   modparam("mi_fifo", "reply_dir", "/tmp/")              default /tmp/
//   modparam("mi_fifo", "reply_indent", "\t")              default TAB; "" = none
//   modparam("mi_fifo", "reply_timeout", 2000)             ms a reply may stall (sipd)
//   modparam("mi_fifo", "reply_deadline", 60000)           ms from the end of a request
//                                                          to the end of its reply (sipd)
//   modparam("mi_fifo", "request_timeout", 2000)           ms an incomplete request may
//                                                          stay silent; 0 = forever (sipd)
//
// One process, `ps` type `MI FIFO`: one event loop serving many requests at once (see
// fifo_server.h); it raises its soft open-file limit to the hard one (one descriptor per
// request in flight). The request FIFO is checked and created in the
// pre-fork hook, so a path that is a symlink or a non-FIFO file makes sipd start-up fail
// with a clear error; the process re-creates it if it vanished before it starts.
// Shutdown() removes the FIFO.
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewMiFifoModule();

}  // namespace sipd
