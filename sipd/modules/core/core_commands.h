// The core MI commands (spec section 6): uptime, version, pwd, arg, which, ps, kill,
// debug, cache_store, cache_fetch, cache_remove, list_tcp_conns, help — all exported by
// module "core". list_tcp_conns reads Core::sip_transport() (404 "TCP support disabled"
// without a TCP listen socket).
//
// Each command is declared once here (help text byte exact as OpenSIPS 1.11, typos
// included; parameters; flags) and works against the sipd::Core interface, so it runs
// in whichever transport process received it and sees the shared state.
//
// Thread/process-safety: RegisterCoreCommands() runs in the attendant before the first
// fork. The handlers may then run concurrently in any process: they only read
// Core accessors, the read-only registry, and the LocalCache (which locks itself).
#pragma once

#include "absl/status/status.h"
#include "sipd/api/module.h"
#include "sipd/modules/core/local_cache.h"

namespace sipd {

// Creates the "local" cache in core.shm(), registers its expiry timer ("localcache",
// every second) and registers the core commands into core.mi() in the order above.
// Errors: those of LocalCache::Create and Registry::Register (e.g. a name already taken).
// REQUIRES: called once per Core, in the attendant, before the fork, after
// get_statistics/reset_statistics (so that `which` lists them in OpenSIPS order).
absl::Status RegisterCoreCommands(Core& core);
// As above with explicit cache options (tests inject a fake clock or small limits).
absl::Status RegisterCoreCommands(Core& core, LocalCache::Options cache_options);

// The cache created by the most recent RegisterCoreCommands() in this process tree, for
// other modules that want to use it; nullptr before. Valid in every forked process.
LocalCache* SharedLocalCache();

}  // namespace sipd
