// MI security end to end (issue 9): a real sipd with the product's defaults, tokens,
// roles, unix identities, TLS/mTLS, the exposure rule and the audit log, over every
// transport.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "sipd/core/mi_security.h"
#include "sipd/events/v1/events.grpc.pb.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"

namespace {

using ::sipd::testing::ReadFile;
using ::sipd::testing::RunShell;
using ::sipd::testing::SipdInstance;
using ::sipd::testing::WaitUntil;
using ::sipd::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;
namespace v1 = ::sipd::mi::v1;
namespace eventsv1 = ::sipd::events::v1;

constexpr uid_t kNobody = 65534;

// Runs `body` in a child process that has become `uid` (root tests only); its result
// string comes back through a pipe.
std::string RunAs(uid_t uid, const std::function<std::string()>& body) {
  int out[2];
  if (pipe(out) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    close(out[0]);
    std::string result;
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) {
      result = "setuid failed";
    } else {
      result = body();
    }
    (void)!write(out[1], result.data(), result.size());
    _exit(0);
  }
  close(out[1]);
  std::string result;
  char buffer[4096];
  ssize_t n;
  while ((n = read(out[0], buffer, sizeof(buffer))) > 0)
    result.append(buffer, static_cast<size_t>(n));
  close(out[0]);
  waitpid(pid, nullptr, 0);
  return result;
}

struct Call {
  grpc::Status status;
  v1::Reply reply;
};

Call Execute(const std::string& target, const std::string& command,
             const std::vector<std::string>& params = {}, const std::string& token = "",
             std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr) {
  auto channel = grpc::CreateChannel(
      target, credentials != nullptr ? credentials : grpc::InsecureChannelCredentials());
  auto stub = v1::Management::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::ExecuteRequest request;
  request.set_command(command);
  for (const std::string& p : params) request.add_params(p);
  Call call;
  call.status = stub->Execute(&context, request, &call.reply);
  return call;
}

// An XML-RPC call with curl; returns the HTTP body.
std::string Xmlrpc(int port, const std::string& method, const std::vector<std::string>& params,
                   const std::string& curl_auth = "") {
  std::string body = absl::StrCat("<methodCall><methodName>", method, "</methodName><params>");
  for (const std::string& p : params) {
    absl::StrAppend(&body, "<param><value><string>", p, "</string></value></param>");
  }
  body += "</params></methodCall>";
  return RunShell(absl::StrCat("curl -sS ", curl_auth, " -H 'Content-Type: text/xml' -d '", body,
                               "' http://127.0.0.1:", port, "/RPC2"))
      .second;
}

class SecurityTest : public ::testing::Test {
 protected:
  void Start(const std::string& extra_config, bool default_security = true) {
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = true, .extra_config = extra_config, .default_security = default_security});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
  }
  sipd::testing::TempDir dir_{"sipd-security-test"};
  std::unique_ptr<SipdInstance> sipd_;
};

TEST_F(SecurityTest, DefaultsLetLocalCallersReadAndTheAdminTokenDoEverything) {
  Start("");
  const std::string target = sipd_->grpc_target();
  EXPECT_TRUE(Execute(target, "version").status.ok());
  const Call refused = Execute(target, "cache_store", {"local", "k", "v"});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(refused.status.error_message(),
            "role 'read' may not run 'cache_store' (needs operate)");
  EXPECT_EQ(Execute(target, "kill").status.error_code(), grpc::StatusCode::PERMISSION_DENIED);

  const std::string token = sipd_->admin_token();
  ASSERT_EQ(token.size(), 64u);
  struct stat st;
  ASSERT_EQ(stat((sipd_->run_dir() + "/admin.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(Execute(target, "cache_store", {"local", "k", "v"}, token).status.ok());
  const Call wrong = Execute(target, "version", {}, "not-a-token");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.status.error_message(), "invalid token");

  // sipctl finds the token in the run directory by itself.
  const std::string sipctl = std::string(SIPD_SIPCTL_PATH);
  const auto [rc, out] = RunShell(absl::StrCat("SIPD_RUN_DIR=", sipd_->run_dir(), " ", sipctl,
                                               " -s ", target, " cache_fetch local k"));
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("k = [v]"));
  const auto [rc_read, out_read] =
      RunShell(absl::StrCat("SIPD_RUN_DIR=/nonexistent ", sipctl, " -s ", target, " kill"));
  EXPECT_EQ(rc_read, 1) << out_read;
  EXPECT_THAT(out_read, HasSubstr("403 role 'read' may not run 'kill' (needs admin)"));
  // The run directory of ANOTHER sipd on this host (its own admin token, listeners that do
  // not name this target): its token is not sent here, so the caller reads instead of
  // getting 401 invalid token.
  const std::string other = dir_.path() + "/other-run";
  ASSERT_EQ(mkdir(other.c_str(), 0700), 0);
  WriteFile(other + "/admin.token", std::string(64, 'a') + "\n", 0600);
  WriteFile(other + "/listeners", "# another sipd\nmi_grpc grpc 127.0.0.1:1\n", 0600);
  const auto [rc_other, out_other] = RunShell(
      absl::StrCat("SIPD_RUN_DIR=", other, " ", sipctl, " -s ", target, " cache_fetch local k"));
  EXPECT_EQ(rc_other, 0) << out_other;
  EXPECT_THAT(out_other, HasSubstr("k = [v]"));
}

TEST_F(SecurityTest, TokenRolesAreTheSameOnGrpcAndXmlrpc) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens,
            absl::StrCat("monitor read ", sipd::Sha256Hex("read-secret"), "\n", "noc operate ",
                         sipd::Sha256Hex("operate-secret"), "\n"),
            0600);
  Start(absl::StrCat("modparam(\"mi\", \"tokens_file\", \"", tokens,
                     "\")\nloadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", 0)\n"
                     "loadmodule \"usrloc\"\n"));
  const std::string target = sipd_->grpc_target();
  const int xmlrpc = sipd_->listener_port("mi_xmlrpc");

  // read: may look, may not change.
  EXPECT_TRUE(Execute(target, "ul_dump", {}, "read-secret").status.ok());
  const Call ul_rm = Execute(target, "ul_rm", {"location", "alice"}, "read-secret");
  EXPECT_EQ(ul_rm.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(
      Xmlrpc(xmlrpc, "ul_rm", {"location", "alice"}, "-H 'Authorization: Bearer read-secret'"),
      HasSubstr("<i4>403</i4></value></member>\r\n<member><name>faultString</name>\r\n"
                "<value><string>role 'read' may not run 'ul_rm' (needs operate)"));
  // operate: may change, may not stop the server.
  EXPECT_TRUE(Execute(target, "ul_rm", {"location", "alice"}, "operate-secret").status.ok());
  EXPECT_EQ(Execute(target, "kill", {}, "operate-secret").status.error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // XML-RPC takes the token as HTTP Basic's password too.
  EXPECT_THAT(Xmlrpc(xmlrpc, "ul_rm", {"location", "alice"}, "-u noc:operate-secret"),
              Not(HasSubstr("<fault>")));
  EXPECT_THAT(Xmlrpc(xmlrpc, "kill", {}, "-u noc:operate-secret"), HasSubstr("<i4>403</i4>"));
  EXPECT_THAT(Xmlrpc(xmlrpc, "version", {}, "-H 'Authorization: Bearer wrong'"),
              HasSubstr("<i4>401</i4>"));

  // Who did what.
  const std::string audit = ReadFile(sipd_->run_dir() + "/audit.log");
  EXPECT_THAT(audit, HasSubstr("principal=monitor role=read transport=grpc"));
  EXPECT_THAT(audit, HasSubstr("command=ul_rm args=[\"location\", \"alice\"] code=403"));
  EXPECT_THAT(audit, HasSubstr("principal=noc role=operate transport=xmlrpc"));
  EXPECT_THAT(audit, HasSubstr("command=kill args=[] code=403"));
}

TEST_F(SecurityTest, UnixCallersAreKnownByUid) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  const std::string shared = dir_.path() + "/shared";
  ASSERT_EQ(mkdir(shared.c_str(), 01777), 0);
  chmod(shared.c_str(), 01777);
  chmod(dir_.path().c_str(), 0711);  // other users may reach the shared directory
  Start(absl::StrCat("loadmodule \"mi_fifo\"\nmodparam(\"mi_fifo\", \"fifo_name\", \"", shared,
                     "/fifo\")\nmodparam(\"mi_fifo\", \"fifo_mode\", 0666)\n"
                     "modparam(\"mi_fifo\", \"reply_dir\", \"",
                     shared,
                     "/\")\nloadmodule \"mi_datagram\"\n"
                     "modparam(\"mi_datagram\", \"socket_name\", \"",
                     shared,
                     "/mi.sock\")\nmodparam(\"mi_datagram\", \"unix_socket_mode\", 0666)\n"));
  auto fifo = [&] {
    auto client = sipd::legacy::FifoClient::Create(shared + "/fifo", shared + "/");
    if (!client.ok()) return client.status().ToString();
    absl::StatusOr<std::string> reply = (*client)->Execute("kill");
    return reply.ok() ? *reply : reply.status().ToString();
  };
  auto datagram = [&] {
    auto client = sipd::legacy::DatagramClient::Unix(shared + "/mi.sock", shared);
    if (!client.ok()) return client.status().ToString();
    absl::StatusOr<std::string> reply = (*client)->Transact(":kill:\n", std::chrono::seconds(5));
    return reply.ok() ? *reply : reply.status().ToString();
  };
  EXPECT_EQ(RunAs(kNobody, fifo), "403 role 'read' may not run 'kill' (needs admin)\n\n");
  EXPECT_EQ(RunAs(kNobody, datagram), "403 role 'read' may not run 'kill' (needs admin)\n");
  const std::string audit = ReadFile(sipd_->run_dir() + "/audit.log");
  EXPECT_THAT(audit,
              HasSubstr(absl::StrCat("principal=uid:", kNobody, " role=read transport=fifo")));
  EXPECT_THAT(audit, HasSubstr(absl::StrCat("principal=uid:", kNobody,
                                            " role=read transport=datagram-unix")));
}

TEST_F(SecurityTest, UdpDatagramGetsItsConfiguredRole) {
  Start(
      "loadmodule \"mi_datagram\"\nmodparam(\"mi_datagram\", \"socket_name\", "
      "\"udp:127.0.0.1:0\")\n");
  const int udp = sipd_->listener_port("mi_datagram", "udp");
  auto client = sipd::legacy::DatagramClient::Udp("127.0.0.1", udp);
  ASSERT_TRUE(client.ok());
  EXPECT_THAT((*client)->Transact(":version:\n", std::chrono::seconds(5)).value_or(""),
              HasSubstr("200 OK"));
  EXPECT_EQ(
      (*client)->Transact(":cache_store:\nlocal\nk\nv\n", std::chrono::seconds(5)).value_or(""),
      "403 role 'read' may not run 'cache_store' (needs operate)\n");
}

TEST_F(SecurityTest, RequireAuthRefusesAnonymousCallersEverywhere) {
  Start(
      "modparam(\"mi\", \"require_auth\", 1)\nloadmodule \"mi_xmlrpc\"\n"
      "modparam(\"mi_xmlrpc\", \"port\", 0)\nloadmodule \"mi_datagram\"\n"
      "modparam(\"mi_datagram\", \"socket_name\", \"udp:127.0.0.1:0\")\n");
  const int udp = sipd_->listener_port("mi_datagram", "udp");
  const Call grpc_call = Execute(sipd_->grpc_target(), "version");
  EXPECT_EQ(grpc_call.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(Xmlrpc(sipd_->listener_port("mi_xmlrpc"), "version", {}), HasSubstr("<i4>401</i4>"));
  auto client = sipd::legacy::DatagramClient::Udp("127.0.0.1", udp);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->Transact(":version:\n", std::chrono::seconds(5)).value_or(""),
            "401 authentication required (require_auth is on)\n");
  // The admin token still works.
  EXPECT_TRUE(Execute(sipd_->grpc_target(), "version", {}, sipd_->admin_token()).status.ok());
}

class TlsTest : public SecurityTest {
 protected:
  // A CA, a server certificate for 127.0.0.1 and a client certificate CN=noc.
  void MakeCertificates() {
    pki_ = dir_.path() + "/pki";
    ASSERT_EQ(mkdir(pki_.c_str(), 0700), 0);
    const std::string d = pki_;
    const std::string script = absl::StrCat(
        "set -e; cd ", d, "; ",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
        "-subj /CN=sipd-test-ca; ",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "-subj /CN=127.0.0.1; ",
        "printf 'subjectAltName=IP:127.0.0.1' > san.ext; ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile san.ext; ",
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=noc; ",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2");
    const auto [rc, out] = RunShell(script);
    ASSERT_EQ(rc, 0) << out;
  }
  std::shared_ptr<grpc::ChannelCredentials> Credentials(bool with_client_certificate) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(pki_ + "/ca.pem");
    if (with_client_certificate) {
      ssl.pem_cert_chain = ReadFile(pki_ + "/client.pem");
      ssl.pem_private_key = ReadFile(pki_ + "/client.key");
    }
    return grpc::SslCredentials(ssl);
  }
  std::string TlsConfig(const std::string& client_auth) {
    return absl::StrCat("modparam(\"mi_grpc\", \"tls_cert\", \"", pki_,
                        "/server.pem\")\nmodparam(\"mi_grpc\", \"tls_key\", \"", pki_,
                        "/server.key\")\nmodparam(\"mi_grpc\", \"tls_ca\", \"", pki_,
                        "/ca.pem\")\nmodparam(\"mi_grpc\", \"tls_client_auth\", \"", client_auth,
                        "\")\nmodparam(\"mi\", \"cert_roles\", \"CN=noc=operate\")\n");
  }
  std::string pki_;
};

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateAndMapsItsSubject) {
  MakeCertificates();
  Start(TlsConfig("require"));
  const std::string target = sipd_->grpc_target();
  const Call anonymous = Execute(target, "version", {}, "", Credentials(false));
  EXPECT_EQ(anonymous.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << anonymous.status.error_message();
  EXPECT_EQ(Execute(target, "version").status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << "plaintext refused";
  const Call noc = Execute(target, "cache_store", {"local", "k", "v"}, "", Credentials(true));
  EXPECT_TRUE(noc.status.ok()) << noc.status.error_message();
  EXPECT_EQ(Execute(target, "kill", {}, "", Credentials(true)).status.error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(ReadFile(sipd_->run_dir() + "/audit.log"),
              HasSubstr("principal=cert:CN=noc role=operate transport=grpc"));
}

TEST_F(TlsTest, TlsWithATokenFromSipctl) {
  MakeCertificates();
  Start(TlsConfig("none"));
  const std::string sipctl = std::string(SIPD_SIPCTL_PATH);
  const auto [rc, out] =
      RunShell(absl::StrCat(sipctl, " -s ", sipd_->grpc_target(), " --tls-ca ", pki_,
                            "/ca.pem --token ", sipd_->admin_token(), " cache_store local k v"));
  EXPECT_EQ(rc, 0) << out;
  const auto [rc_plain, out_plain] =
      RunShell(absl::StrCat(sipctl, " -s ", sipd_->grpc_target(), " --timeout 3 version"));
  EXPECT_EQ(rc_plain, 3) << out_plain;
}

// Renewed certificates are taken without a restart and without dropping the service:
// the server's files are replaced by ones from another CA, and a client that trusts only
// the new CA gets in (tls_refresh 1 s) while sipd keeps its pid.
TEST_F(TlsTest, RenewedCertificatesAreUsedWithoutARestart) {
  MakeCertificates();
  Start(TlsConfig("none") + "modparam(\"mi_grpc\", \"tls_refresh\", 1)\n");
  const std::string target = sipd_->grpc_target();
  ASSERT_TRUE(Execute(target, "version", {}, "", Credentials(false)).status.ok());
  const std::string pid = ReadFile(sipd_->run_dir() + "/sipd.pid");
  const std::string renewed = dir_.path() + "/renewed";
  ASSERT_EQ(mkdir(renewed.c_str(), 0700), 0);
  const auto [rc, out] = RunShell(
      absl::StrCat("set -e; cd ", renewed, "; ",
                   "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
                   "-subj /CN=sipd-test-ca-2; ",
                   "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "
                   "/CN=127.0.0.1; ",
                   "printf 'subjectAltName=IP:127.0.0.1' > san.ext; ",
                   "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                   "-out server.pem -days 2 -extfile san.ext; ",
                   // Each file replaced in one step (rename), as certificate tools do.
                   "cp server.key ", pki_, "/server.key.new; cp server.pem ", pki_,
                   "/server.pem.new; ", "mv ", pki_, "/server.key.new ", pki_, "/server.key; mv ",
                   pki_, "/server.pem.new ", pki_, "/server.pem"));
  ASSERT_EQ(rc, 0) << out;
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(renewed + "/ca.pem");
  const auto renewed_credentials = grpc::SslCredentials(ssl);
  EXPECT_TRUE(
      WaitUntil([&] { return Execute(target, "version", {}, "", renewed_credentials).status.ok(); },
                std::chrono::seconds(30)))
      << sipd_->log();
  EXPECT_EQ(ReadFile(sipd_->run_dir() + "/sipd.pid"), pid) << "sipd did not restart";
}

// Issue 9, hole 5: gRPC framing errors, from a raw HTTP/2 client (nghttp). A message whose
// length prefix is longer than the body is INTERNAL, as the gRPC spec says (it once
// reached the handler as an empty request: "empty command name"), and so is a message
// flagged compressed on a call without grpc-encoding (gRPC 1.51 decoded it as plain), on
// Execute and on a Session; a message really compressed with grpc-encoding: gzip works.
TEST_F(SecurityTest, GrpcFramingErrorsAreGrpcErrors) {
  if (RunShell("command -v nghttp").first != 0) GTEST_SKIP() << "nghttp (nghttp2-client) absent";
  Start("");
  const std::string message = std::string("\x0a\x07version", 9);
  auto frame = [&](char flag, uint32_t length) {
    std::string out(1, flag);
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((length >> shift) & 0xff);
    return out + message;
  };
  const std::string ok = dir_.path() + "/ok.bin";
  const std::string too_long = dir_.path() + "/long.bin";
  WriteFile(ok, frame(0, message.size()), 0600);
  WriteFile(too_long, frame(0, message.size() + 20), 0600);
  auto post = [&](const std::string& body) {
    return RunShell(
               absl::StrCat("nghttp -v -H ':method: POST' -H 'content-type: application/grpc' ",
                            "-H 'te: trailers' -d ", body, " http://", sipd_->grpc_target(),
                            "/sipd.mi.v1.Management/Execute | grep -a 'grpc-'"))
        .second;
  };
  EXPECT_THAT(post(ok), HasSubstr("grpc-status: 0"));
  const std::string framing = post(too_long);
  EXPECT_THAT(framing, HasSubstr("grpc-status: 13")) << framing;  // INTERNAL
  EXPECT_THAT(framing, Not(HasSubstr("empty command name"))) << framing;

  const std::string flagged = dir_.path() + "/flagged.bin";
  WriteFile(flagged, frame(1, message.size()), 0600);
  const std::string compressed = post(flagged);
  EXPECT_THAT(compressed, HasSubstr("grpc-status: 13")) << compressed;
  EXPECT_THAT(compressed, HasSubstr("message flagged compressed without grpc-encoding"))
      << compressed;

  // The same flag with grpc-encoding: gzip and a gzip body is a valid call.
  const std::string plain = dir_.path() + "/plain.bin";
  WriteFile(plain, message, 0600);
  ASSERT_EQ(RunShell(absl::StrCat("gzip -c -n ", plain, " > ", plain, ".gz")).first, 0);
  const std::string gzipped = ReadFile(plain + ".gz");
  std::string gzip_frame(1, '\1');
  for (int shift = 24; shift >= 0; shift -= 8) {
    gzip_frame += static_cast<char>((gzipped.size() >> shift) & 0xff);
  }
  const std::string gzip_body = dir_.path() + "/gzip.bin";
  WriteFile(gzip_body, gzip_frame + gzipped, 0600);
  const std::string with_encoding =
      RunShell(absl::StrCat("nghttp -v -H ':method: POST' -H 'content-type: application/grpc' ",
                            "-H 'te: trailers' -H 'grpc-encoding: gzip' -d ", gzip_body, " http://",
                            sipd_->grpc_target(),
                            "/sipd.mi.v1.Management/Execute | grep -a 'grpc-'"))
          .second;
  EXPECT_THAT(with_encoding, HasSubstr("grpc-status: 0")) << with_encoding;

  // Session reads each message itself: the same rule ends the session.
  const std::string session_message = std::string("\x08\x01\x12\x07version", 11);
  std::string session_frame(1, '\1');
  for (int shift = 24; shift >= 0; shift -= 8) {
    session_frame += static_cast<char>((session_message.size() >> shift) & 0xff);
  }
  const std::string session_body = dir_.path() + "/session.bin";
  WriteFile(session_body, session_frame + session_message, 0600);
  const std::string session =
      RunShell(absl::StrCat("nghttp -v -H ':method: POST' -H 'content-type: application/grpc' ",
                            "-H 'te: trailers' -d ", session_body, " http://", sipd_->grpc_target(),
                            "/sipd.mi.v1.Management/Session | grep -a 'grpc-'"))
          .second;
  EXPECT_THAT(session, HasSubstr("grpc-status: 13")) << session;
  EXPECT_THAT(session, HasSubstr("message flagged compressed without grpc-encoding")) << session;
}

// E_MI_AUDIT carries everybody's principals, peers and arguments: subscribing to it needs
// admin (declared with the event), on every transport: event_subscribe over the FIFO,
// the datagram socket and gRPC Execute answers 403, gRPC Subscribe PERMISSION_DENIED,
// with the same text. Events declared for readers stay open to them.
TEST_F(SecurityTest, TheAuditEventNeedsAdminOnEveryTransport) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens,
            absl::StrCat("monitor read ", sipd::Sha256Hex("read-secret"), "\n", "noc operate ",
                         sipd::Sha256Hex("operate-secret"), "\n"),
            0600);
  Start(absl::StrCat("modparam(\"mi\", \"tokens_file\", \"", tokens, "\")\n",
                     // This test's own uid (sipd's) would be admin on the FIFO: make it operate.
                     "modparam(\"mi\", \"unix_roles\", \"", getuid(), ":operate\")\n",
                     "loadmodule \"event_datagram\"\nloadmodule \"mi_fifo\"\n",
                     "loadmodule \"tm\"\nloadmodule \"siptrace\"\n",
                     "modparam(\"mi_fifo\", \"fifo_name\", \"", dir_.path(), "/fifo\")\n",
                     "modparam(\"mi_fifo\", \"reply_dir\", \"", dir_.path(), "/\")\n",
                     "loadmodule \"mi_datagram\"\n",
                     "modparam(\"mi_datagram\", \"socket_name\", \"udp:127.0.0.1:0\")\n",
                     "modparam(\"mi_datagram\", \"udp_role\", \"operate\")\n"));
  const std::string refused = "role 'operate' may not subscribe to 'E_MI_AUDIT' (needs admin)";

  auto fifo = sipd::legacy::FifoClient::Create(dir_.path() + "/fifo", dir_.path() + "/");
  ASSERT_TRUE(fifo.ok()) << fifo.status();
  EXPECT_EQ((*fifo)->Execute("event_subscribe", {"E_MI_AUDIT", "udp:127.0.0.1:9"}).value_or(""),
            absl::StrCat("403 ", refused, "\n\n"));
  EXPECT_EQ(
      (*fifo)->Execute("event_subscribe", {"E_CORE_THRESHOLD", "udp:127.0.0.1:9"}).value_or(""),
      "200 OK\n\n");
  // Traced SIP messages carry credentials and bodies: admin only as well.
  EXPECT_EQ((*fifo)->Execute("event_subscribe", {"E_SIP_TRACE", "udp:127.0.0.1:9"}).value_or(""),
            "403 role 'operate' may not subscribe to 'E_SIP_TRACE' (needs admin)\n\n");

  auto datagram =
      sipd::legacy::DatagramClient::Udp("127.0.0.1", sipd_->listener_port("mi_datagram", "udp"));
  ASSERT_TRUE(datagram.ok());
  EXPECT_EQ(
      (*datagram)
          ->Transact(":event_subscribe:\nE_MI_AUDIT\nudp:127.0.0.1:9\n", std::chrono::seconds(5))
          .value_or(""),
      absl::StrCat("403 ", refused, "\n"));

  const std::string target = sipd_->grpc_target();
  const Call by_execute =
      Execute(target, "event_subscribe", {"E_MI_AUDIT", "udp:127.0.0.1:9"}, "operate-secret");
  EXPECT_EQ(by_execute.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(by_execute.status.error_message(), refused);
  EXPECT_TRUE(Execute(target, "event_subscribe", {"E_MI_AUDIT", "udp:127.0.0.1:9", "0"},
                      sipd_->admin_token())
                  .status.ok());

  // gRPC Subscribe: a refused stream ends at once with PERMISSION_DENIED; an allowed one
  // stays open until the client's deadline (DEADLINE_EXCEEDED).
  auto stub = eventsv1::EventService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  auto subscribe = [&](const std::string& event, const std::string& token,
                       std::chrono::seconds deadline) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    eventsv1::SubscribeRequest request;
    request.add_events(event);
    auto reader = stub->Subscribe(&context, request);
    eventsv1::SubscribeResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };
  grpc::Status status = subscribe("E_MI_AUDIT", "", std::chrono::seconds(30));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(), "role 'read' may not subscribe to 'E_MI_AUDIT' (needs admin)");
  status = subscribe("E_MI_AUDIT", "operate-secret", std::chrono::seconds(30));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(status.error_message(), refused);
  EXPECT_EQ(subscribe("E_MI_AUDIT", sipd_->admin_token(), std::chrono::seconds(1)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(subscribe("E_CORE_THRESHOLD", "read-secret", std::chrono::seconds(1)).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(SecurityTest, NonLoopbackListenersNeedTlsOrAnExplicitInsecure) {
  sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
      .grpc = false,
      .extra_config = "loadmodule \"mi_grpc\"\nmodparam(\"mi_grpc\", \"listen\", \"0.0.0.0:0\")\n",
      .default_security = true});
  const absl::Status started = sipd_->Start();
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(sipd_->log(), HasSubstr("is reachable from other hosts and has no TLS"));

  sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
      .grpc = false,
      .extra_config = "loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"listen\", \"0.0.0.0\")\n"
                      "modparam(\"mi_xmlrpc\", \"port\", 0)\n",
      .default_security = true});
  ASSERT_FALSE(sipd_->Start().ok());
  EXPECT_THAT(sipd_->log(), HasSubstr("is not a loopback address and XML-RPC has no TLS"));

  sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
      .grpc = false,
      .extra_config = "loadmodule \"mi_grpc\"\nmodparam(\"mi_grpc\", \"listen\", \"0.0.0.0:0\")\n"
                      "modparam(\"mi_grpc\", \"insecure\", 1)\n",
      .default_security = true});
  ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
  EXPECT_THAT(sipd_->log(), HasSubstr("INSECURE"));
}

}  // namespace
