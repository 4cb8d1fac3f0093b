// The wire format of sipd.events.v1.SubscribeResponse, built by hand so that the MI gRPC
// process serializes each event once for all its Subscribe streams.
//
// A SubscribeResponse is `repeated Event events = 1; uint64 dropped = 2; uint64
// total_dropped = 3`; an Event is `name = 1, time = 2, seq = 3, params = 4`. Protobuf
// lets fields come in any order and merges nothing for scalars seen once, so an Event is
// its shared body (name, time, params: EncodeEventBody(), once per event) followed by the
// stream's own `seq` field, and a response is tag + length + that, per event, then the
// counters. The result parses as the message the generated code would have produced
// (tests: service.EventWireTest.*); events.proto is unchanged and clients see no
// difference.
//
// Strings are made valid UTF-8 (invalid sequences become U+FFFD, as service/utf8.h does
// for MI replies): a proto3 parser rejects the whole message otherwise.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sipd::service {

// Event fields 1 (name), 2 (time, a google.protobuf.Timestamp from `time_ns` since the
// Unix epoch) and 4 (params, one map entry per pair, in the given order; an empty value
// is sent as an entry with an empty value).
std::string EncodeEventBody(
    std::string_view name, int64_t time_ns,
    const std::vector<std::pair<std::string_view, std::string_view>>& params);

// Bytes of one `events` entry (tag, length, body, seq field) of a SubscribeResponse.
size_t EventEntrySize(size_t body_size, uint64_t seq);
// Writes that entry at `out`; returns the end of what it wrote.
char* AppendEventEntry(char* out, std::string_view body, uint64_t seq);
// Bytes of the `dropped` and `total_dropped` fields (left out when zero, as proto3 does).
size_t CountersSize(uint64_t dropped, uint64_t total_dropped);
char* AppendCounters(char* out, uint64_t dropped, uint64_t total_dropped);

// A whole SubscribeResponse (for tests and small callers).
struct WireEvent {
  std::string_view body;
  uint64_t seq = 0;
};
std::string EncodeSubscribeResponse(const std::vector<WireEvent>& events, uint64_t dropped,
                                    uint64_t total_dropped);

}  // namespace sipd::service
