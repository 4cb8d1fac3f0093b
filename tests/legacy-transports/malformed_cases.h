// The malformed-input tables of the FIFO and datagram transports, run against the
// in-process servers (test registry) and against a real sipd (sipd_transport_test.cc).
// Every case checks the documented reply (or documented silence) and then that the
// transport still serves the next good request.
//
// Both registries provide `version` (no input), `help [command]` (at most one argument);
// `large` names a request whose reply exceeds a pipe buffer (64 KB) and a datagram.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/datagram/datagram_server.h"
#include "legacy-transports/fifo/fifo_client.h"

namespace sipd::legacy::testing {

// Reads a reply FIFO opened O_RDONLY | O_NONBLOCK until a reply's end (an empty line),
// the writer's hang-up or `timeout`, waiting in poll() between reads.
inline std::string ReadFifoReply(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string got;
  char buffer[4096];
  while (got.find("\n\n") == std::string::npos) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      got.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 && !got.empty()) break;  // the writer closed after its reply
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    struct pollfd pfd {
      fd, POLLIN, 0
    };
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    if ((pfd.revents & POLLIN) == 0) break;  // hang-up with nothing more to read
  }
  return got;
}

struct FifoEndpoint {
  std::string fifo;
  std::string reply_dir;
  // The server's request_timeout.
  std::chrono::milliseconds request_timeout;
  // The server's reply_timeout.
  std::chrono::milliseconds reply_timeout;
  // Command and argument lines of a reply larger than 64 KB.
  std::string large_command;
  std::vector<std::string> large_args;
};

inline std::unique_ptr<FifoClient> NewFifoClient(const FifoEndpoint& endpoint) {
  auto client = FifoClient::Create(endpoint.fifo, endpoint.reply_dir);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

// The transport still answers a good request from a fresh client.
inline void ExpectFifoServes(const FifoEndpoint& endpoint, const std::string& context) {
  auto client = NewFifoClient(endpoint);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::string> reply = client->Execute("version", {}, std::chrono::seconds(5));
  ASSERT_TRUE(reply.ok()) << context << ": " << reply.status();
  EXPECT_EQ(reply->substr(0, 7), "200 OK\n") << context;
}

// Sends `request` (where {R} stands for the client's reply name) and expects `expected`.
inline void ExpectFifoReply(const FifoEndpoint& endpoint, std::string request,
                            const std::string& expected, const std::string& context,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  auto client = NewFifoClient(endpoint);
  ASSERT_NE(client, nullptr);
  for (size_t at; (at = request.find("{R}")) != std::string::npos;) {
    request.replace(at, 3, client->reply_name());
  }
  absl::StatusOr<std::string> reply = client->Transact(request, timeout);
  ASSERT_TRUE(reply.ok()) << context << ": " << reply.status();
  EXPECT_EQ(*reply, expected) << context;
  ExpectFifoServes(endpoint, context);
}

// Writes raw bytes that get no reply, then checks the next good request is served.
inline void ExpectFifoSilentDiscard(const FifoEndpoint& endpoint, const std::string& bytes,
                                    const std::string& context) {
  auto client = NewFifoClient(endpoint);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send(bytes).ok()) << context;
  ExpectFifoServes(endpoint, context);
}

inline void RunFifoMalformedTable(const FifoEndpoint& endpoint) {
  using std::chrono::milliseconds;
  const auto wait_past_request_timeout = [&] {
    std::this_thread::sleep_for(endpoint.request_timeout + milliseconds(300));
  };

  ExpectFifoReply(endpoint, ":no_such_cmd:{R}\n\n", "500 command 'no_such_cmd' not available\n",
                  "unknown command");
  ExpectFifoReply(endpoint, ":help:{R}\na\nb\n\n", "400 Too few or too many arguments\n\n",
                  "too many arguments");
  ExpectFifoReply(endpoint, ":help:{R}\n\"\"\n\n", "400 parse error in command 'help'\n",
                  "empty quoted argument");
  ExpectFifoReply(endpoint, ":help:{R}\n\"abc\n\n", "400 parse error in command 'help'\n",
                  "empty line inside a quoted value");
  ExpectFifoReply(endpoint, ":help:{R}\n" + std::string(1 << 20, 'a') + "\n\n",
                  "400 parse error in command 'help'\n", "1 MB argument line");
  {
    SCOPED_TRACE("1 MB line without LF");
    auto client = NewFifoClient(endpoint);
    absl::StatusOr<std::string> reply =
        client->Transact(":help:" + client->reply_name() + "\n" + std::string(1 << 20, 'a'));
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "400 parse error in command 'help'\n");
    // The server cannot tell where that line would end: it resynchronises when the
    // request has been silent for request_timeout.
    wait_past_request_timeout();
    ExpectFifoServes(endpoint, "after a 1 MB line without LF");
  }

  {
    SCOPED_TRACE("CRLF request");
    auto client = NewFifoClient(endpoint);
    ASSERT_NE(client, nullptr);
    absl::StatusOr<std::string> reply =
        client->Transact(":version:" + client->reply_name() + "\r\n\r\n");
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->substr(0, 7), "200 OK\n");
  }
  {
    SCOPED_TRACE("a faulty request is discarded alone, not the next one");
    auto bad = NewFifoClient(endpoint);
    auto good = NewFifoClient(endpoint);
    ASSERT_TRUE(bad && good);
    // One write carries both requests; the good client's reply FIFO is read below.
    const int fd = open(good->reply_path().c_str(), O_RDONLY | O_NONBLOCK);
    ASSERT_GE(fd, 0);
    absl::StatusOr<std::string> bad_reply = bad->Transact(
        ":help:" + bad->reply_name() + "\n\"x\" y\n\n:version:" + good->reply_name() + "\n\n");
    ASSERT_TRUE(bad_reply.ok()) << bad_reply.status();
    EXPECT_EQ(*bad_reply, "400 parse error in command 'help'\n");
    const std::string got = ReadFifoReply(fd, std::chrono::seconds(10));
    close(fd);
    EXPECT_EQ(got.substr(0, 7), "200 OK\n");
  }

  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage.push_back(static_cast<char>((i * 7919 + 13) % 256));
  ExpectFifoSilentDiscard(endpoint, garbage + "\n\n", "binary garbage ended by an empty line");
  {
    SCOPED_TRACE("binary garbage without an end: dropped after request_timeout");
    auto client = NewFifoClient(endpoint);
    ASSERT_TRUE(client->Send(std::string(garbage.begin(), garbage.begin() + 700)).ok());
    wait_past_request_timeout();
    ExpectFifoServes(endpoint, "after unterminated garbage");
  }

  for (const std::string name : {"..", ".hidden", "sub/x", "sub\\x", "a.b"}) {
    SCOPED_TRACE("unsafe reply FIFO name '" + name + "'");
    // A FIFO the server must not touch, where `sub/x` would resolve.
    mkdir((endpoint.reply_dir + "sub").c_str(), 0700);
    mkfifo((endpoint.reply_dir + "sub/x").c_str(), 0600);
    const int fd = open((endpoint.reply_dir + "sub/x").c_str(), O_RDONLY | O_NONBLOCK);
    ExpectFifoSilentDiscard(endpoint, ":version:" + name + "\n\n", "bad reply name " + name);
    char byte;
    EXPECT_LE(read(fd, &byte, 1), 0) << "the server wrote to " << name;
    close(fd);
  }
  ExpectFifoSilentDiscard(endpoint, ":version:\n\n", "empty reply FIFO name");
  ExpectFifoSilentDiscard(endpoint, "version\n\n", "command line without ':'");

  {
    SCOPED_TRACE("a reply FIFO nobody opens");
    auto client = NewFifoClient(endpoint);
    ASSERT_TRUE(client->Send(":version:" + client->reply_name() + "\n\n").ok());
    const auto start = std::chrono::steady_clock::now();
    ExpectFifoServes(endpoint, "after a reply FIFO nobody opened");
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  }
  {
    SCOPED_TRACE("a reply FIFO opened but never read, large reply");
    auto client = NewFifoClient(endpoint);
    const int fd = open(client->reply_path().c_str(), O_RDONLY | O_NONBLOCK);
    ASSERT_GE(fd, 0);
    std::string request = ":" + endpoint.large_command + ":" + client->reply_name() + "\n";
    for (const std::string& arg : endpoint.large_args) request += arg + "\n";
    ASSERT_TRUE(client->Send(request + "\n").ok());
    const auto start = std::chrono::steady_clock::now();
    ExpectFifoServes(endpoint, "after a stalled reader");
    EXPECT_LT(std::chrono::steady_clock::now() - start,
              endpoint.reply_timeout + std::chrono::seconds(3));
    close(fd);
  }
  {
    SCOPED_TRACE("truncated request (no empty line)");
    auto client = NewFifoClient(endpoint);
    absl::StatusOr<std::string> reply =
        client->Transact(":help:" + client->reply_name() + "\nps\n",
                         endpoint.request_timeout + std::chrono::seconds(3));
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "400 parse error in command 'help'\n");
    ExpectFifoServes(endpoint, "after a truncated request");
  }
  {
    SCOPED_TRACE("command line without its LF");
    auto client = NewFifoClient(endpoint);
    absl::StatusOr<std::string> reply = client->Transact(
        ":version:" + client->reply_name(), endpoint.request_timeout + std::chrono::seconds(3));
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "400 parse error in command 'version'\n");
    ExpectFifoServes(endpoint, "after a command line without LF");
  }
}

// ---------------------------------------------------------------------------- datagram

struct DatagramEndpoint {
  // UNIX socket path, or empty for UDP.
  std::string unix_path;
  // Directory for the client's own UNIX socket.
  std::string client_dir;
  int udp_port = 0;
  // A request whose reply exceeds one datagram.
  std::string large_request;
};

inline std::unique_ptr<DatagramClient> NewDatagramClient(const DatagramEndpoint& endpoint) {
  auto client = endpoint.unix_path.empty()
                    ? DatagramClient::Udp("127.0.0.1", endpoint.udp_port)
                    : DatagramClient::Unix(endpoint.unix_path, endpoint.client_dir);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

inline void ExpectDatagramServes(const DatagramEndpoint& endpoint, const std::string& context) {
  auto client = NewDatagramClient(endpoint);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::string> reply = client->Transact(":version:\n");
  ASSERT_TRUE(reply.ok()) << context << ": " << reply.status();
  EXPECT_EQ(reply->substr(0, 7), "200 OK\n") << context;
}

inline void ExpectDatagramReply(const DatagramEndpoint& endpoint, const std::string& request,
                                const std::string& expected, const std::string& context) {
  auto client = NewDatagramClient(endpoint);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::string> reply = client->Transact(request);
  ASSERT_TRUE(reply.ok()) << context << ": " << reply.status();
  EXPECT_EQ(*reply, expected) << context;
  ExpectDatagramServes(endpoint, context);
}

inline void RunDatagramMalformedTable(const DatagramEndpoint& endpoint) {
  const std::string not_available(kDatagramNotAvailable);
  const std::string parse_error(kDatagramParseError);
  ExpectDatagramReply(endpoint, ":no_such_cmd:\n", not_available, "unknown command");
  ExpectDatagramReply(endpoint, ":help:\na\nb\n", "400 Too few or too many arguments\n",
                      "too many arguments");
  ExpectDatagramReply(endpoint, ":help:\n\"\"\n", parse_error, "empty quoted argument");
  ExpectDatagramReply(endpoint, ":help:\n\"abc", parse_error, "truncated quoted value");
  ExpectDatagramReply(endpoint, ":version:", not_available, "missing newline");
  ExpectDatagramReply(endpoint, ":version", not_available, "truncated command line");
  ExpectDatagramReply(endpoint, ":version:reply\n", not_available, "reply name on datagram");
  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage.push_back(static_cast<char>((i * 7919 + 13) % 256));
  ExpectDatagramReply(endpoint, garbage, not_available, "binary garbage");
  {
    SCOPED_TRACE("CRLF request");
    auto client = NewDatagramClient(endpoint);
    absl::StatusOr<std::string> reply = client->Transact(":version:\r\n");
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->substr(0, 7), "200 OK\n");
  }
  // UDP carries at most 65507 bytes: the largest request that still exceeds the buffer.
  const size_t oversize = endpoint.unix_path.empty() ? 65500 : 65 * 1024;
  ExpectDatagramReply(endpoint, ":help:\n" + std::string(oversize, 'a'), parse_error,
                      "oversized datagram");
  ExpectDatagramReply(endpoint, endpoint.large_request, std::string(kDatagramTooLarge),
                      "reply larger than a datagram");
  if (!endpoint.unix_path.empty()) {
    SCOPED_TRACE("unbound UNIX client");
    auto client = DatagramClient::UnixUnbound(endpoint.unix_path);
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE((*client)->Send(":version:\n").ok());
    EXPECT_FALSE((*client)->Receive(std::chrono::milliseconds(300)).ok());
    ExpectDatagramServes(endpoint, "after an unbound client");
  }
}

}  // namespace sipd::legacy::testing
