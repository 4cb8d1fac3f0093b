// Module tm: sipd's stateful SIP stack (transactions, RFC 3261 section 17) and the
// registrar + proxy routing on top of it (section 16; policy in proxy.h).
//
// Loaded, it replaces the core's stateless stack as the SIP message handler of every
// SIP receiving process (sipd/core/sip_transport.h): every request gets a server
// transaction (retransmissions absorbed, replies stored), REGISTER goes to the
// registrar and OPTIONS to sipd are answered through it, other requests are relayed
// statefully (transaction_layer.h). Its timers run in the timer process ("tm-utimer",
// every 10 ms).
//
// modparams (OpenSIPS names; times as in OpenSIPS 1.11 unless noted):
//   domains            "a.example.com,b.example.com": domains served besides the listen
//                      addresses (default: none, i.e. the listen addresses only)
//   relay_to_any       0|1: relay requests for other domains (default 0: 403)
//   T1_timer, T2_timer retransmission timers in ms (500, 4000)
//   fr_timeout         s without a final reply before a branch gives up (30)
//   fr_inv_timeout     s an INVITE branch may ring after its provisional reply (120)
//   wt_timer           s a finished transaction stays to absorb retransmissions (5)
//   max_inv_lifetime, max_noninv_lifetime   ms a transaction may live unanswered
//                      before sipd answers 408 itself (180000, 32000)
//   bl_timeout         s a failed destination stays blacklisted; 0 = never (60)
//   bl_size            entries of the blacklist (256)
//   overload_queue     % of a UDP receive buffer above which sipd counts as overloaded
//                      and refuses new INVITEs with a stateless 503 + Retry-After until
//                      the queues drain below a third of it (30; 0 = never)
//   overload_sustain   ms the fullest queue must stay above overload_queue before sipd
//                      counts as overloaded (100; 0 = at once): bursts the buffer absorbs
//                      refuse nothing (sipd's own; overload_detector.h)
//   dns_timeout        ms of one DNS try for a host name in a next hop (500; sipd's own)
//   dns_tries          tries of a lookup, which ends after dns_timeout x dns_tries (2)
//   dns_neg_ttl        s a failed lookup is kept per process (60; 0 = not kept)
//   dns_servers        "IP[:PORT],..." name servers instead of resolv.conf's (resolver.h)
//
// MI (spec 8.3): t_uac_dlg (async), t_uac_cancel, t_hash, t_reply; list_blacklists
// (module "blacklists", spec 6). Statistics: group tm (spec 7.5) plus the core
// fwd_*/drop_* and sl counters it updates.
//
// Other modules use tm through sipd/modules/tm/tm_api.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewTmModule();
// The same on a clock of the caller's (monotonic milliseconds): for tests and fuzz
// targets that move time themselves.
std::unique_ptr<Module> NewTmModuleWithClock(std::function<int64_t()> clock_ms);

}  // namespace sipd
