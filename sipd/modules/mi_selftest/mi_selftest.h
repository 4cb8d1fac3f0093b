// Module mi_selftest: MI commands whose replies come from another process, so that
// operators and tests can check the async reply path of every MI transport (spec 1.6)
// without a SIP peer.
//
//   async_echo <delay_ms> [text]   async; the timer process completes it after
//                                  delay_ms (0..600000) with `200 OK` and one node
//                                  `echo:: <text>` (default "pong")
//   async_fail <delay_ms>          async; completed after delay_ms with nothing: the
//                                  transport's "command failed" form
//   async_never                    async; never completed: ends by the caller's
//                                  deadline, cancellation or the dispatcher's timeout
//   async_pending                  `pending:: <n>` jobs not completed yet
//
// Jobs wait in a bounded queue in shared memory (modparam "max_jobs", default 4096); a
// full queue answers `503 Too many async jobs`. The timer process looks at it every
// `tick_ms` (default 5) ms; delays are therefore rounded up to the tick. On a transport
// that cannot wait, async_* answer `202 Accepted` and the job still runs.
//
// Thread/process-safety: the queue is guarded by a robust mutex in shared memory; the
// MI process adds jobs, the timer process completes them.
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewMiSelftestModule();

}  // namespace sipd
