// Module event_datagram: delivers raised events (registry/events.h) to UDP and UNIX
// datagram subscribers, byte-compatible with OpenSIPS 1.11's event_datagram.
//
//   loadmodule "event_datagram"
//   modparam("event_datagram", "queue_size", 4194304)   # bytes of queued events (default)
//   modparam("event_datagram", "nice", 19)              # of the delivery process (default:
//                                                       # mi_nice, as every module process)
//   modparam("event_datagram", "dns_servers", "10.0.0.53")  # IP[:PORT],... (default:
//                                                       # resolv.conf's name servers)
//   modparam("event_datagram", "dns_timeout", 500)      # ms per try (default), and
//   modparam("event_datagram", "dns_tries", 2)          # tries, per name looked up
//   modparam("event_datagram", "dns_neg_ttl", 60)       # s a failed name is kept
//
//   event_subscribe E_UL_AOR_INSERT udp:127.0.0.1:8888 [expire]
//   event_subscribe E_UL_AOR_INSERT unix:/run/listener.sock [expire]
//
// One datagram per event and subscriber (1.11 format):
//   EVENT_NAME\n
//   param::value\n          one line per parameter; a string value that contains \n is
//   ...                     written in double quotes with every " as \" (other strings
//                           as they are, an empty one as nothing); integers in decimal,
//                           a negative one as 1.11's int2str(unsigned long) prints it
//                           (qval -1 -> 18446744073709551615)
//   \n                      an empty line ends it
//
// Sockets: udp:HOST:PORT (HOST an IPv4 address or a name resolved to IPv4 when
// subscribing, as 1.11; sipd also takes [IPv6]:PORT) and unix:PATH (any path shorter than
// sun_path; it need not exist when subscribing). Names are looked up as tm's are
// (sipd/modules/tm/resolver.h: the hosts file, then DNS with c-ares), so a name server
// that does not answer holds event_subscribe, or the delivery process when the
// subscriptions change, for dns_timeout x dns_tries at most (glibc's getaddrinfo waited
// 10 s and more). The delivery process looks each name up again when the subscriptions
// change; the resolver's cache keeps an answer for its TTL and a failure for dns_neg_ttl.
// Subscribers are matched by the text as given (udp:localhost:8888 and udp:127.0.0.1:8888 are two
// subscribers, as in 1.11).
//
// Unlike 1.11, which sent from the raising SIP worker, a dedicated process ("Event
// datagram" in `ps`) sends: raisers only queue the event in shared memory (the
// module's consumer, sipd/core/event_bus.h) and wake it. Sends are non-blocking: a
// subscriber that cannot take the datagram (UNIX socket missing or full, ICMP error)
// loses that event and is counted in evi:failed_deliveries, as 1.11 ignored send errors;
// it stays subscribed until it expires. evi:delivered_events counts datagrams sent.
// One sendmmsg() per event sends it to all its subscribers of a socket kind.
//
// Cost and priority: raising costs a SIP worker about a microsecond (a copy into the
// shared-memory queue); sending costs the delivery process about a microsecond per
// datagram (sendmmsg, loopback), so 100 subscribers of an event raised 10,000 times a
// second need a CPU core (bench/RESULTS.md, "Events"). The delivery process runs at the
// priority of module processes (global `mi_nice`) or at its own "nice"; a lower priority
// lets SIP win the CPU, the queue (4 MB: about 32,000 AOR events, 8,000 contact events)
// absorbs bursts, and beyond that events are dropped and counted (evi:dropped_events),
// never slowing the raisers; the price is event latency on a busy host.
//
// Deviations from 1.11's parsers: a UDP port above 65535 is refused (1.11 wrapped it),
// [IPv6]:PORT is accepted (1.11 could not send to IPv6), a UNIX path that does not fit
// sun_path is refused (1.11 overflowed it).
//
// Thread/process-safety: Init() in the attendant; the delivery process is the only user
// of the consumer afterwards.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/events.h"
#include "sipd/api/module.h"
#include "sipd/modules/tm/resolver.h"

namespace sipd {

std::unique_ptr<Module> NewEventDatagramModule();

namespace event_datagram {

// The datagram of one event (1.11 datagram_build_params, byte for byte). Values beyond
// the declared parameters are written without a name, as 1.11 writes nameless ones.
std::string EncodePayload(const mi::Event& event, const std::vector<mi::EventValue>& values);

// The `udp:` and `unix:` address parsers of event_subscribe: the canonical address, or
// InvalidArgument (-> 400 Bad parameter). A host name is looked up with `resolver`
// (nullptr: only numeric addresses are accepted).
absl::StatusOr<std::string> ParseUdpAddress(std::string_view address, tm::HostResolver* resolver);
absl::StatusOr<std::string> ParseUnixAddress(std::string_view address);

}  // namespace event_datagram
}  // namespace sipd
