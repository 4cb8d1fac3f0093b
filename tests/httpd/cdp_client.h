// Drives a headless Debian chromium over the Chrome DevTools Protocol (a WebSocket,
// Boost.Beast): enough for the console's browser test. No npm, no downloaded browser.
//
//   auto browser = Chromium::Launch(tmp_dir);       // NotFound when chromium is absent
//   auto page = (*browser)->NewPage(1280, 900);
//   page->Navigate("http://127.0.0.1:PORT/#/commands");
//   page->WaitFor("document.querySelector('#run') !== null");
//   page->Evaluate("document.querySelector('#run').click()");
//   page->Screenshot("commands.png");
//
// window.confirm()/alert() dialogs are accepted as they open; their messages are kept
// (dialogs()). Thread-safety: one thread.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/support/sipd_harness.h"

namespace sipd::httpd_test {

// A child in its own process group, killed with it (and with the test).
class ChildProcess {
 public:
  // `tmp_dir`, when given, is the child's TMPDIR.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(std::vector<std::string> argv,
                                                             const std::string& log_path,
                                                             const std::string& tmp_dir = "") {
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int null = open("/dev/null", O_RDONLY);
      dup2(null, 0);
      dup2(log, 1);
      dup2(log, 2);
      if (!tmp_dir.empty()) setenv("TMPDIR", tmp_dir.c_str(), 1);
      std::vector<char*> c_argv;
      for (auto& a : argv) c_argv.push_back(a.data());
      c_argv.push_back(nullptr);
      execvp(c_argv[0], c_argv.data());
      _exit(127);
    }
    setpgid(pid, pid);
    return std::unique_ptr<ChildProcess>(new ChildProcess(pid));
  }
  ~ChildProcess() { Kill(); }
  // Whether it exited by itself; its wait status in *status.
  bool Exited(int* status) {
    if (pid_ == 0) return true;
    const pid_t r = waitpid(pid_, status, WNOHANG);
    if (r == pid_) {
      kill(-pid_, SIGKILL);
      pid_ = 0;
      return true;
    }
    return false;
  }
  void Kill() {
    if (pid_ == 0) return;
    kill(-pid_, SIGTERM);
    const bool gone = sipd::testing::WaitUntil(
        [&] { return waitpid(pid_, nullptr, WNOHANG) == pid_; }, std::chrono::seconds(5));
    kill(-pid_, SIGKILL);
    if (!gone) waitpid(pid_, nullptr, 0);
    // Chromium's helpers share the group: wait until none is left.
    sipd::testing::WaitUntil([&] { return sipd::testing::ProcessGroupPids(pid_).empty(); },
                             std::chrono::seconds(5));
    pid_ = 0;
  }
  pid_t pid() const { return pid_; }

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
};

class CdpPage;

class Chromium {
 public:
  using json = nlohmann::json;

  // The chromium of PATH (Debian: /usr/bin/chromium); NotFound if there is none.
  static absl::StatusOr<std::unique_ptr<Chromium>> Launch(const std::string& work_dir) {
    std::string binary;
    for (const char* candidate : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
      if (access(candidate, X_OK) == 0) {
        binary = candidate;
        break;
      }
    }
    if (binary.empty()) return absl::NotFoundError("chromium is not installed");
    const std::string profile = absl::StrCat(work_dir, "/chromium-profile");
    std::filesystem::create_directories(profile);
    auto child = ChildProcess::Spawn(
        {binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--mute-audio",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         absl::StrCat("--user-data-dir=", profile), "about:blank"},
        // Its singleton socket directory (org.chromium.Chromium.*) goes with the test's.
        absl::StrCat(work_dir, "/chromium.log"), work_dir);
    if (!child.ok()) return child.status();
    auto browser = std::unique_ptr<Chromium>(new Chromium(std::move(*child)));
    // Chromium writes the port it bound (line 1) and the browser's path (line 2).
    const std::string port_file = absl::StrCat(profile, "/DevToolsActivePort");
    std::string port, path;
    const bool ready = sipd::testing::WaitUntil(
        [&] {
          std::ifstream in(port_file);
          return std::getline(in, port) && std::getline(in, path) && !path.empty();
        },
        std::chrono::seconds(30));
    if (!ready) {
      std::ifstream log(absl::StrCat(work_dir, "/chromium.log"));
      std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      return absl::UnavailableError("chromium did not start: " + text);
    }
    if (absl::Status s = browser->Connect(port, path); !s.ok()) return s;
    return browser;
  }

  ~Chromium() {
    if (socket_) {
      boost::beast::error_code ec;
      socket_->close(boost::beast::websocket::close_code::normal, ec);
    }
    child_->Kill();
  }

  // Sends a command (to a page when `session` is set) and returns its "result", or the
  // protocol error. Events that arrive meanwhile are handled (dialogs accepted).
  absl::StatusOr<json> Send(const std::string& method, json params = json::object(),
                            const std::string& session = "") {
    const int id = ++next_id_;
    json message{{"id", id}, {"method", method}, {"params", std::move(params)}};
    if (!session.empty()) message["sessionId"] = session;
    boost::beast::error_code ec;
    socket_->write(boost::asio::buffer(message.dump()), ec);
    if (ec) return absl::UnavailableError(absl::StrCat("devtools write: ", ec.message()));
    while (true) {
      boost::beast::flat_buffer buffer;
      socket_->read(buffer, ec);
      if (ec) return absl::UnavailableError(absl::StrCat("devtools read: ", ec.message()));
      json reply = json::parse(boost::beast::buffers_to_string(buffer.data()), nullptr, false);
      if (reply.is_discarded()) continue;
      if (reply.contains("id") && reply["id"] == id) {
        if (reply.contains("error")) {
          return absl::InternalError(absl::StrCat(method, ": ", reply["error"].dump()));
        }
        return reply["result"];
      }
      if (reply.value("method", "") == "Page.javascriptDialogOpening") {
        dialogs_.push_back(reply["params"].value("message", ""));
        json accept{{"id", ++next_id_},
                    {"method", "Page.handleJavaScriptDialog"},
                    {"params", {{"accept", true}}}};
        if (reply.contains("sessionId")) accept["sessionId"] = reply["sessionId"];
        socket_->write(boost::asio::buffer(accept.dump()), ec);
      }
    }
  }

  absl::StatusOr<std::unique_ptr<CdpPage>> NewPage(int width, int height);
  const std::vector<std::string>& dialogs() const { return dialogs_; }

 private:
  explicit Chromium(std::unique_ptr<ChildProcess> child) : child_(std::move(child)) {}

  absl::Status Connect(const std::string& port, const std::string& path) {
    socket_ = std::make_unique<boost::beast::websocket::stream<boost::asio::ip::tcp::socket>>(io_);
    boost::beast::error_code ec;
    boost::asio::ip::tcp::endpoint endpoint(boost::asio::ip::make_address("127.0.0.1"),
                                            static_cast<uint16_t>(std::stoi(port)));
    socket_->next_layer().connect(endpoint, ec);
    if (!ec) socket_->handshake(absl::StrCat("127.0.0.1:", port), path, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("devtools connect: ", ec.message()));
    socket_->read_message_max(64 << 20);
    return absl::OkStatus();
  }

  std::unique_ptr<ChildProcess> child_;
  boost::asio::io_context io_;
  std::unique_ptr<boost::beast::websocket::stream<boost::asio::ip::tcp::socket>> socket_;
  int next_id_ = 0;
  std::vector<std::string> dialogs_;
};

class CdpPage {
 public:
  using json = nlohmann::json;
  CdpPage(Chromium& browser, std::string session)
      : browser_(browser), session_(std::move(session)) {}

  absl::Status Resize(int width, int height) {
    return browser_
        .Send("Emulation.setDeviceMetricsOverride",
              {{"width", width},
               {"height", height},
               {"deviceScaleFactor", 1},
               {"mobile", width < 600}},
              session_)
        .status();
  }

  absl::Status Navigate(const std::string& url) {
    return browser_.Send("Page.navigate", {{"url", url}}, session_).status();
  }

  // The value of a JS expression (promises awaited); an exception is an error.
  absl::StatusOr<json> Evaluate(const std::string& expression) {
    auto result = browser_.Send(
        "Runtime.evaluate",
        {{"expression", expression}, {"awaitPromise", true}, {"returnByValue", true}}, session_);
    if (!result.ok()) return result.status();
    if (result->contains("exceptionDetails")) {
      return absl::InternalError(absl::StrCat("JS: ", (*result)["exceptionDetails"].dump()));
    }
    return (*result)["result"].value("value", json());
  }

  // Waits (in the page, polling every 50 ms) until `condition` is truthy; DeadlineExceeded
  // after `timeout`.
  absl::Status WaitFor(const std::string& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const std::string script = absl::StrCat(
        "new Promise(resolve => { const end = Date.now() + ", timeout.count(),
        "; const check = () => { let ok = false; try { ok = !!(", condition,
        "); } catch (e) {} if (ok) resolve(true); else if (Date.now() > end) resolve(false); "
        "else setTimeout(check, 50); }; check(); })");
    auto ok = Evaluate(script);
    if (!ok.ok()) return ok.status();
    if (*ok != true) return absl::DeadlineExceededError("timed out waiting for: " + condition);
    return absl::OkStatus();
  }

  absl::Status Screenshot(const std::string& path) {
    auto shot = browser_.Send("Page.captureScreenshot", {{"format", "png"}}, session_);
    if (!shot.ok()) return shot.status();
    std::ofstream(path, std::ios::binary) << Base64Decode((*shot)["data"].get<std::string>());
    return absl::OkStatus();
  }

 private:
  static std::string Base64Decode(const std::string& in) {
    static const std::string chars =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    int value = 0, bits = -8;
    for (const char c : in) {
      const size_t d = chars.find(c);
      if (d == std::string::npos) continue;  // '=' and line breaks
      value = (value << 6) + static_cast<int>(d);
      bits += 6;
      if (bits >= 0) {
        out.push_back(static_cast<char>((value >> bits) & 0xFF));
        bits -= 8;
      }
    }
    return out;
  }

  Chromium& browser_;
  std::string session_;
};

inline absl::StatusOr<std::unique_ptr<CdpPage>> Chromium::NewPage(int width, int height) {
  auto target = Send("Target.createTarget", {{"url", "about:blank"}});
  if (!target.ok()) return target.status();
  auto attached =
      Send("Target.attachToTarget", {{"targetId", (*target)["targetId"]}, {"flatten", true}});
  if (!attached.ok()) return attached.status();
  auto page = std::make_unique<CdpPage>(*this, (*attached)["sessionId"].get<std::string>());
  const std::string session = (*attached)["sessionId"];
  for (const char* domain : {"Page.enable", "Runtime.enable"}) {
    if (auto s = Send(domain, json::object(), session); !s.ok()) return s.status();
  }
  if (absl::Status s = page->Resize(width, height); !s.ok()) return s;
  return page;
}

}  // namespace sipd::httpd_test
