// Module `mi_grpc`: the MI gRPC transport process.
//
//   loadmodule "mi_grpc"
//   modparam("mi_grpc", "listen", "127.0.0.1:8090")
//
// Parameters:
//   listen                "host:port" or "[v6]:port"; default 127.0.0.1:8090 (loopback:
//                         MI is administrative, expose it deliberately).
//   max_message_size      bytes, both directions; default 4194304 (4 MiB).
//   max_args              arguments per request; default 1024.
//   threads               completion-queue threads: they poll the connections and run
//                         ordinary commands inline; default 1 (fastest on small
//                         machines: no hand-off between threads, see service/cq_tag.h).
//   workers               the dispatcher's threads for commands flagged blocking (no
//                         gRPC call ever holds a thread while it waits); default 4.
//   stream_chunk_nodes    streamed replies: nodes per chunk at most; default 1000.
//   stream_chunk_bytes    streamed replies: about bytes per chunk at most (also the
//                         Session batch size); default 65536.
//   stream_write_timeout  stall timeout, ms: an ExecuteStream chunk, a Session reply or a
//                         unary reply over 64 KiB the client leaves untaken this long
//                         cuts the call; default 10000.
//   reply_timeout         total reply deadline, ms: an ExecuteStream not over, or a
//                         Session request not answered, after this long is cut; default
//                         300000.
//   session_max_inflight  Session: requests in flight at most (one more is refused with
//                         RESOURCE_EXHAUSTED); default 1024.
//   session_buffer_bytes  Session: results waiting for the client beyond which no more
//                         requests are read; default 1048576.
//   subscriber_buffer     sipd.events.v1 Subscribe: events a stream holds for a client
//                         that reads slowly (beyond: dropped and counted); default 1024.
//   event_coalesce        ms: a busy Subscribe stream (last message >= 2 events) that
//                         wrote less than this ago holds new events until this long
//                         after that write (one message carries many events under
//                         load; an idle or slow stream sends at once); 0 = off;
//                         default 1.
//   event_queue_size      bytes of the shared-memory queue between the raisers and this
//                         process's event delivery thread; default 4194304.
//   max_concurrent_streams  HTTP/2 streams per connection; default 256.
//   handshake_timeout     ms to complete the HTTP/2 handshake; default 20000.
//   idle_timeout          ms without calls after which a connection is closed (GOAWAY);
//                         default 300000.
//   keepalive_time, keepalive_timeout  ms between server pings on a quiet connection,
//                         and to wait for the answer before closing it; 60000, 20000.
//
// Memory per misbehaving client (measured, see service/README.md and bench/RESULTS.md):
// a stalled ExecuteStream holds one part of its reply plus gRPC's per-call state; an
// idle connection gRPC's per-connection state. The process raises its open-file soft
// limit to the hard one (at most 65536) so idle clients do not exhaust descriptors.
//
// Served: sipd.mi.v1.Management, the typed services the loaded modules declare
// (service/typed_service.h), sipd.events.v1.EventService (Subscribe to events,
// WatchStatistics; service/event_service.h), health per subsystem ("sipd.sip" is added here from
// the process table and the `load` statistics; modules add theirs to the registry) and reflection
// v1/v1alpha. See service/README.md.
//
// Process: one `ps` entry "MI gRPC". gRPC is created inside that process only (never
// in the attendant). Before forking, the attendant checks that the address can be
// bound, so a second daemon configured with the same port fails at start-up; if the
// process itself cannot bind (the port was taken meanwhile) it logs an error and exits
// with status 1 (the attendant then restarts it).
#pragma once

#include <memory>

#include "sipd/api/module.h"

namespace sipd {

std::unique_ptr<Module> NewMiGrpcModule();

}  // namespace sipd
