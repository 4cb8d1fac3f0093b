// A raw HTTP/2 client written by hand, for the clients a gRPC library would never be
// (half a preface, half a request, a reader that grants 1 KB/s, one that never reads).
//
// Thread-safety: plain functions on the caller's sockets.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "sipd/mi/v1/mi.pb.h"

namespace sipd::testing {

// A blocking TCP connection to 127.0.0.1:port, or -1.
inline int ConnectTcp(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool SendAll(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

inline constexpr char kHttp2Preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

inline std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream,
                              const std::string& payload) {
  std::string frame;
  const uint32_t length = static_cast<uint32_t>(payload.size());
  frame.push_back(static_cast<char>(length >> 16));
  frame.push_back(static_cast<char>(length >> 8));
  frame.push_back(static_cast<char>(length));
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) frame.push_back(static_cast<char>(stream >> shift));
  return frame + payload;
}

// HPACK "literal header field without indexing, new name" (names and values < 127 bytes).
inline std::string HpackLiteral(const std::string& name, const std::string& value) {
  std::string out(1, '\0');
  out.push_back(static_cast<char>(name.size()));
  out += name;
  out.push_back(static_cast<char>(value.size()));
  out += value;
  return out;
}

// The bytes a gRPC client sends for Management/`method` on stream 1: preface, SETTINGS,
// HEADERS and the request message. `complete` = false sends only half of the message and
// no end of stream.
inline std::string GrpcRequestBytes(const std::string& method,
                                    const ::sipd::mi::v1::ExecuteRequest& request, bool complete) {
  const std::string message = request.SerializeAsString();
  std::string grpc_frame(1, '\0');
  for (int shift = 24; shift >= 0; shift -= 8) {
    grpc_frame.push_back(static_cast<char>(message.size() >> shift));
  }
  grpc_frame += message;
  const std::string headers = HpackLiteral(":method", "POST") + HpackLiteral(":scheme", "http") +
                              HpackLiteral(":path", "/sipd.mi.v1.Management/" + method) +
                              HpackLiteral(":authority", "127.0.0.1") +
                              HpackLiteral("content-type", "application/grpc") +
                              HpackLiteral("te", "trailers");
  std::string out = kHttp2Preface;
  out += Http2Frame(0x4, 0, 0, "");         // SETTINGS
  out += Http2Frame(0x1, 0x4, 1, headers);  // HEADERS, END_HEADERS
  if (complete) {
    out += Http2Frame(0x0, 0x1, 1, grpc_frame);  // DATA, END_STREAM
  } else {
    out += Http2Frame(0x0, 0, 1, grpc_frame.substr(0, grpc_frame.size() / 2));
  }
  return out;
}

// WINDOW_UPDATE of `bytes` on the connection and on stream 1.
inline std::string WindowUpdates(uint32_t bytes) {
  std::string increment;
  for (int shift = 24; shift >= 0; shift -= 8) {
    increment.push_back(static_cast<char>(bytes >> shift));
  }
  return Http2Frame(0x8, 0, 0, increment) + Http2Frame(0x8, 0, 1, increment);
}

}  // namespace sipd::testing
