// sipctl: run MI commands over gRPC (sipd.mi.v1.Management).
//
//   sipctl [-s host:port] [--json] [--timeout SECS] [--stream] CMD [ARGS...]
//   sipctl [-s host:port] [--json] list
//   sipctl proto [FILE...]
//   sipctl [-s host:port] [--json] subscribe [--filter K=V] [--count N] EVENT...
//   sipctl [-s host:port] [--json] watch [--interval 1s] [--on-change] [--count N] [NAME...]
//
// See clients/sipctl/README.md for the output layout and the exit codes.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "clients/sipctl/live.h"
#include "clients/sipctl/output.h"
#include "clients/sipctl/proto_files.h"
#include "grpcpp/grpcpp.h"
#include "registry/proto_convert.h"
#include "sipd/api/paths.h"
#include "sipd/mi/v1/mi.grpc.pb.h"

namespace sipd::sipctl {
namespace {

namespace v1 = ::sipd::mi::v1;

enum ExitCode : int {
  kExitOk = 0,
  kExitMiError = 1,
  kExitUsage = 2,
  kExitTransport = 3,
  kExitNotAvailable = 4,
};

constexpr char kDefaultServer[] = "127.0.0.1:8090";
constexpr char kExitCodesHelp[] =
    "Exit codes:\n"
    "  0  the command replied 2xx\n"
    "  1  the command replied an MI error (non-2xx) or failed; the reply is printed\n"
    "     on stdout and '<code> <reason>' on stderr\n"
    "  2  usage error\n"
    "  3  transport error: server unreachable, deadline exceeded, request rejected\n"
    "  4  no such command (stderr: command 'CMD' not available)\n"
    "Server: -s, else $SIPCTL_SERVER, else 127.0.0.1:8090.\n"
    "Credentials: --token, else --token-file, else $SIPCTL_TOKEN, else the admin token\n"
    "in sipd's run directory ($SIPD_RUN_DIR, else $XDG_RUNTIME_DIR/sipd, else\n"
    "/tmp/sipd-UID) when readable, sent only to a local server or over TLS. Without one,\n"
    "sipd lets local callers read only.";

struct Options {
  std::string server;
  std::string token;
  std::string token_file;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  bool json = false;
  bool stream = false;
  double timeout_seconds = 30;
  std::string command;
  std::vector<std::string> args;
};

std::string Trailer(const grpc::ClientContext& ctx, const char* key) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(key);
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// Undoes the percent-encoding of sipd-mi-reason (service/status_mapping.h).
std::string DecodePercent(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(text[i + 1]) &&
        std::isxdigit(text[i + 2])) {
      out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

void SetDeadline(const Options& options, grpc::ClientContext* ctx) {
  if (!options.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options.token);
  if (options.timeout_seconds > 0) {
    ctx->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::microseconds(static_cast<int64_t>(options.timeout_seconds * 1e6)));
  }
}

void PrintReply(const Options& options, const mi::Reply& reply) {
  const std::string text = options.json ? RenderReplyJson(reply) : RenderReplyText(reply);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

// Exit code for a non-OK status that carries no MI reply.
int TransportError(const Options& options, const grpc::Status& status) {
  std::fprintf(stderr, "sipctl: %s: %s (gRPC status %d)\n", options.server.c_str(),
               status.error_message().c_str(), static_cast<int>(status.error_code()));
  return kExitTransport;
}

// Classifies a finished call. `reply` is the MI reply when the server sent one
// (Execute: the message or sipd-mi-reply-bin; ExecuteStream: the chunks).
int Conclude(const Options& options, const grpc::ClientContext& ctx, const grpc::Status& status,
             const mi::Reply* reply, bool reply_printed) {
  const std::string outcome = Trailer(ctx, "sipd-mi-outcome");
  if (outcome == "not-available") {
    std::fprintf(stderr, "sipctl: %s\n", status.error_message().c_str());
    return kExitNotAvailable;
  }
  if (outcome == "failed") {
    const std::string line =
        Trailer(ctx, "sipd-mi-code") + " " + DecodePercent(Trailer(ctx, "sipd-mi-reason"));
    if (!reply_printed) {
      if (options.json) {
        mi::Reply failed = mi::Reply::Error(500, DecodePercent(Trailer(ctx, "sipd-mi-reason")));
        PrintReply(options, failed);
      } else {
        std::printf("%s\n", line.c_str());
      }
    }
    std::fprintf(stderr, "sipctl: %s\n", line.c_str());
    return kExitMiError;
  }
  if (outcome != "reply" || reply == nullptr) {
    if (status.ok()) {
      std::fprintf(stderr, "sipctl: the server sent no MI reply\n");
      return kExitTransport;
    }
    return TransportError(options, status);
  }
  if (!reply_printed) PrintReply(options, *reply);
  if (reply->is_success() && status.ok()) return kExitOk;
  if (reply->is_success()) return TransportError(options, status);  // e.g. stream cut off
  std::fprintf(stderr, "sipctl: %u %s\n", reply->code, reply->reason.c_str());
  return kExitMiError;
}

int RunUnary(const Options& options, v1::Management::Stub& stub) {
  v1::ExecuteRequest request;
  request.set_command(options.command);
  for (const auto& a : options.args) request.add_params(a);
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  v1::Reply reply;
  const grpc::Status status = stub.Execute(&ctx, request, &reply);
  if (status.ok()) {
    const mi::Reply mi_reply = mi::FromProto(reply);
    return Conclude(options, ctx, status, &mi_reply, false);
  }
  const std::string bin = Trailer(ctx, "sipd-mi-reply-bin");
  v1::Reply error_reply;
  if (!bin.empty() && error_reply.ParseFromString(bin)) {
    const mi::Reply mi_reply = mi::FromProto(error_reply);
    return Conclude(options, ctx, status, &mi_reply, false);
  }
  return Conclude(options, ctx, status, nullptr, false);
}

// Prints chunks as they arrive (text), or assembles them (JSON).
int RunStream(const Options& options, v1::Management::Stub& stub) {
  v1::ExecuteRequest request;
  request.set_command(options.command);
  for (const auto& a : options.args) request.add_params(a);
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  auto reader = stub.ExecuteStream(&ctx, request);
  mi::ChunkAssembler assembler;
  v1::ReplyChunk chunk;
  bool have_status = false;
  std::string text;
  while (reader->Read(&chunk)) {
    if (!assembler.Add(chunk).ok()) {
      ctx.TryCancel();
      break;
    }
    have_status = true;
    if (options.json) continue;
    text.clear();
    if (chunk.has_status()) {
      text.append(std::to_string(chunk.code())).append(" ").append(chunk.reason()).append("\n");
    }
    for (const auto& node : chunk.nodes()) text.append(RenderFlatNodeText(node));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }
  const grpc::Status status = reader->Finish();
  if (!have_status) return Conclude(options, ctx, status, nullptr, false);
  mi::Reply reply = assembler.Take();
  if (options.json) {
    if (!status.ok() && reply.is_success()) return TransportError(options, status);
    return Conclude(options, ctx, status, &reply, false);
  }
  return Conclude(options, ctx, status, &reply, true);
}

int RunList(const Options& options, v1::Management::Stub& stub) {
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  v1::ListCommandsResponse list;
  const grpc::Status status = stub.ListCommands(&ctx, {}, &list);
  if (!status.ok()) return TransportError(options, status);
  const std::string text = options.json ? RenderCommandListJson(list) : RenderCommandListText(list);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return kExitOk;
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A server on this host (loopback or a unix socket): the admin token may go there in
// clear text.
bool IsLocalServer(const std::string& server) {
  return server.starts_with("unix:") || server.starts_with("127.") ||
         server.starts_with("localhost:") || server.starts_with("[::1]:");
}

// Whether the sipd of `run_dir` serves gRPC at `server` (its RUN_DIR/listeners names it):
// its admin token is sent to that sipd only, not to another sipd on this host, which
// would refuse it as an invalid token instead of letting the caller read.
bool RunDirServes(const std::string& run_dir, const std::string& server) {
  std::string wanted = server;
  if (wanted.starts_with("localhost:")) wanted = "127.0.0.1:" + wanted.substr(10);
  std::istringstream lines(ReadFile(run_dir + "/listeners"));
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string module, protocol, address;
    if (!(words >> module >> protocol >> address) || module != "mi_grpc") continue;
    if (address == wanted || "unix:" + address == wanted) return true;
  }
  return false;
}

// `sipctl proto`: every annotated .proto file, each after a line `// ==> PATH <==`;
// `sipctl proto FILE...`: the named files alone (a path under proto/, or its last part,
// e.g. usrloc.proto), as they are. No server is asked.
int RunProto(const std::vector<std::string>& names) {
  const std::vector<ProtoFile>& files = ProtoFiles();
  if (names.empty()) {
    for (const ProtoFile& file : files) {
      std::printf("// ==> %.*s <==\n", static_cast<int>(file.path.size()), file.path.data());
      std::fwrite(file.text.data(), 1, file.text.size(), stdout);
    }
    return kExitOk;
  }
  int rc = kExitOk;
  for (const std::string& name : names) {
    const ProtoFile* found = nullptr;
    for (const ProtoFile& file : files) {
      const std::string_view path = file.path;
      if (path == name || (path.size() > name.size() && path.ends_with(name) &&
                           path[path.size() - name.size() - 1] == '/')) {
        found = &file;
        break;
      }
    }
    if (found == nullptr) {
      std::fprintf(stderr, "sipctl: no proto file '%s' (sipctl proto lists them all)\n",
                   name.c_str());
      rc = kExitUsage;
      continue;
    }
    std::fwrite(found->text.data(), 1, found->text.size(), stdout);
  }
  return rc;
}

int Main(int argc, char** argv) {
  Options options;
  const char* env_server = std::getenv("SIPCTL_SERVER");
  options.server = env_server != nullptr && *env_server != '\0' ? env_server : kDefaultServer;

  CLI::App app{
      "sipctl: run sipd MI commands over gRPC (sipd.mi.v1.Management).\n"
      "  sipctl [OPTIONS] CMD [ARGS...]   run CMD (e.g. ps, which, help ps,\n"
      "                                   get_statistics all, debug -1)\n"
      "  sipctl [OPTIONS] list            list the loaded commands (name, module, flags)\n"
      "  sipctl proto [FILE...]           print the annotated .proto files (status table,\n"
      "                                   field docs); FILE: e.g. usrloc.proto\n"
      "  sipctl [OPTIONS] subscribe [--filter KEY=VALUE] [--count N] EVENT...\n"
      "                                   print events as they are raised (E_UL_AOR_INSERT)\n"
      "  sipctl [OPTIONS] watch [--interval 1s] [--on-change] [--count N] [NAME...]\n"
      "                                   live statistics with rates (NAME as get_statistics:\n"
      "                                   all, core:, rcv_requests); a table on a terminal\n"
      "Options must come before CMD; everything after CMD is passed to it verbatim."};
  app.add_option("-s,--server", options.server, "host:port of the MI gRPC listener")
      ->capture_default_str();
  app.add_option("--token", options.token, "bearer token (see Credentials below)");
  app.add_option("--token-file", options.token_file, "file whose first line is the token");
  app.add_option("--tls-ca", options.tls_ca, "CA certificate (PEM): use TLS, verify the server");
  app.add_option("--cert", options.tls_cert, "client certificate (PEM) for mTLS");
  app.add_option("--key", options.tls_key, "client private key (PEM) for mTLS");
  app.add_flag("--json", options.json, "print the reply as JSON");
  app.add_option("--timeout", options.timeout_seconds,
                 "seconds before the call is abandoned (0 = no deadline)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--stream", options.stream,
               "use ExecuteStream and print the reply as it arrives (large dumps)");
  app.footer(kExitCodesHelp);
  app.prefix_command();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  std::vector<std::string> rest = app.remaining();
  if (!rest.empty() && rest.front() == "--") rest.erase(rest.begin());
  if (rest.empty()) {
    std::fprintf(stderr, "sipctl: missing command (see sipctl --help)\n");
    return kExitUsage;
  }
  if (rest.front().size() > 1 && rest.front()[0] == '-') {
    std::fprintf(stderr, "sipctl: unknown option '%s' (see sipctl --help)\n", rest.front().c_str());
    return kExitUsage;
  }
  if (rest.front().empty()) {
    std::fprintf(stderr, "sipctl: empty command name\n");
    return kExitUsage;
  }
  for (size_t i = 1; i < rest.size(); ++i) {
    if (rest[i].empty()) {
      std::fprintf(stderr, "sipctl: argument %zu is empty (MI cannot carry it)\n", i);
      return kExitUsage;
    }
  }
  options.command = rest.front();
  options.args.assign(rest.begin() + 1, rest.end());
  if (options.command == "proto") return RunProto(options.args);

  const bool tls = !options.tls_ca.empty() || !options.tls_cert.empty();
  if (options.token.empty() && !options.token_file.empty()) {
    options.token = ReadFirstLine(options.token_file);
    if (options.token.empty()) {
      std::fprintf(stderr, "sipctl: no token in %s\n", options.token_file.c_str());
      return kExitUsage;
    }
  }
  if (const char* env = std::getenv("SIPCTL_TOKEN"); options.token.empty() && env != nullptr) {
    options.token = env;
  }
  if (options.token.empty() && (tls || IsLocalServer(options.server)) &&
      RunDirServes(ClientRunDir(), options.server)) {
    options.token = ReadFirstLine(ClientRunDir() + "/admin.token");  // empty if unreadable
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(256 << 20);
  channel_args.SetMaxSendMessageSize(256 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) ssl.pem_root_certs = ReadFile(options.tls_ca);
    if (!options.tls_cert.empty()) ssl.pem_cert_chain = ReadFile(options.tls_cert);
    if (!options.tls_key.empty()) ssl.pem_private_key = ReadFile(options.tls_key);
    credentials = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateCustomChannel(options.server, credentials, channel_args);
  auto stub = v1::Management::NewStub(channel);
  if (options.command == "list" && options.args.empty()) return RunList(options, *stub);
  if (options.command == "subscribe" || options.command == "watch") {
    LiveOptions live{.json = options.json, .server = options.server, .token = options.token};
    if (app.count("--timeout") > 0) live.timeout_seconds = options.timeout_seconds;
    return options.command == "subscribe" ? RunSubscribe(channel, live, options.args)
                                          : RunWatch(channel, live, options.args);
  }
  return options.stream ? RunStream(options, *stub) : RunUnary(options, *stub);
}

}  // namespace
}  // namespace sipd::sipctl

int main(int argc, char** argv) { return sipd::sipctl::Main(argc, argv); }
