// Module siptrace (spec 8.4): while tracing is on, every SIP message tm receives or
// sends is recorded in an SQLite table under run_dir, as OpenSIPS's siptrace writes its
// `sip_trace` table.
//
//   loadmodule "tm"
//   loadmodule "siptrace"
//   modparam("siptrace", "trace_on", 1)              tracing at start-up (default 0)
//   modparam("siptrace", "db_path", "${run_dir}/siptrace.sqlite")   (the default)
//
// Table sip_trace(id, time_stamp (unix seconds), time_us, callid, traced_user, msg,
// method, status, fromip, toip, fromtag, direction) with fromip/toip as
// "proto:IP:PORT" and direction "in" or "out".
//
// Event E_SIP_TRACE (callid, method, status, fromip, toip, fromtag, direction, msg cut
// at 8 KB): raised for every traced message while sip_trace is on and somebody
// subscribed (event_subscribe; a gRPC event stream once issue 11 adds one), whether or
// not the database records it.
//
// MI: sip_trace [on|off] (no argument: `on` or `off`), trace_to_database [on|off]
// (`off` stops recording in the database while sip_trace stays on, the event goes on;
// `on` without a usable database -> 501 Server Internal Error). Statistics: siptrace
// traced_requests, traced_replies (messages that reached the database or the event).
//
// Processes: the flags live in shared memory (every process sees a change at once);
// each process opens its own SQLite connection on first use (WAL journal, writes wait
// up to 1 s for another process's). Tracing costs a parse and an INSERT per message:
// for debugging, not for load.
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewSiptraceModule();

}  // namespace sipd
