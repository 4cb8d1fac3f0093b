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
//   workers               threads for calls that may block: ExecuteStream and commands
//                         flagged async or streaming; default 4.
//   stream_chunk_nodes    ExecuteStream: nodes per chunk at most; default 1000.
//   stream_write_timeout  ExecuteStream: ms a client may leave a chunk unread before
//                         the stream is ended; default 10000.
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
