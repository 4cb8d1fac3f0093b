// The console in a real headless Chromium (Debian `chromium`, over the DevTools
// protocol: tests/httpd/cdp_client.h) against a running sipd: runs `uptime` and
// `get_statistics core:` from the Commands page, charts core:rcv_requests during a sipp
// OPTIONS flood and compares the charted rate with sipp's, lists processes, and removes
// a contact from the Registrations page (confirm dialog) then checks it with
// ul_show_contact, and ends a call (sipp UAC -> sipd with tm + dialog -> sipp UAS) from
// the Dialogs page (confirm dialog) then checks it with dlg_list and both sipp sides'
// BYE. Screenshots of each page go to SIPD_ARTIFACT_DIR. Skipped when chromium or sipp
// is not installed (scripts/bootstrap.sh installs both).
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/httpd/cdp_client.h"
#include "tests/httpd/http_test_client.h"
#include "tests/support/sipd_harness.h"
#include "tests/tm/sip_peers.h"

namespace sipd::httpd_test {
namespace {

using ::sipd::testing::SipdInstance;
using ::sipd::testing::SippProcess;
using ::sipd::testing::WaitUntil;

constexpr int kSippRate = 100;  // OPTIONS per second

class ConsoleBrowserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    artifacts_ = SIPD_ARTIFACT_DIR;
    std::filesystem::create_directories(artifacts_);
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false,
        .extra_config = absl::StrCat("loadmodule \"usrloc\"\n", ExtraModules(),
                                     "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n")});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    port_ = sipd_->listener_port("httpd", "http");
    ASSERT_GT(port_, 0);
    auto tmp = sipd_->MakeTmpDir();
    ASSERT_TRUE(tmp.ok());
    work_ = *tmp;
    auto browser = Chromium::Launch(work_);
    if (absl::IsNotFound(browser.status())) GTEST_SKIP() << browser.status();
    ASSERT_TRUE(browser.ok()) << browser.status();
    browser_ = std::move(*browser);
    auto page = browser_->NewPage(1280, 900);
    ASSERT_TRUE(page.ok()) << page.status();
    page_ = std::move(*page);
  }
  // More config lines (modules) before httpd's.
  virtual std::string ExtraModules() const { return ""; }

  void TearDown() override {
    if (HasFailure() && sipd_ != nullptr)
      std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
    page_.reset();
    browser_.reset();
  }

  std::string Url(const std::string& hash) {
    return absl::StrCat("http://127.0.0.1:", port_, "/", hash);
  }

  void Open(const std::string& hash, const std::string& page_name) {
    ASSERT_TRUE(page_->Navigate(Url(hash)).ok());
    ASSERT_TRUE(page_
                    ->WaitFor(absl::StrCat("document.querySelector('#main').dataset.ready === '",
                                           page_name, "'"))
                    .ok())
        << "page " << page_name << " did not load";
  }

  void Shot(const std::string& name) {
    ASSERT_TRUE(page_->Screenshot(absl::StrCat(artifacts_, "/", name, ".png")).ok());
  }

  json Rpc(const std::string& method, json params) {
    auto result = HttpPost(port_, RpcRequest(method, std::move(params)));
    EXPECT_TRUE(result.ok());
    return result.ok() ? json::parse(result->body, nullptr, false) : json();
  }

  std::string artifacts_;
  std::unique_ptr<SipdInstance> sipd_;
  int port_ = 0;
  std::string work_;
  std::unique_ptr<Chromium> browser_;
  std::unique_ptr<CdpPage> page_;
};

TEST_F(ConsoleBrowserTest, CommandsPageRunsUptimeAndGetStatistics) {
  Open("#/commands/uptime", "commands");
  ASSERT_TRUE(page_->Evaluate("document.querySelector('#run').click()").ok());
  ASSERT_TRUE(page_->WaitFor("document.querySelector('[data-testid=reply-status]')").ok());
  auto status = page_->Evaluate("document.querySelector('[data-testid=reply-status]').textContent");
  EXPECT_EQ(*status, "200 OK");
  auto tree = page_->Evaluate("document.querySelector('[data-testid=reply-tree]').textContent");
  EXPECT_TRUE(absl::StrContains(tree->get<std::string>(), "Up since")) << *tree;
  auto copy = page_->Evaluate("document.querySelector('[data-testid=copy-as]').textContent");
  EXPECT_TRUE(absl::StrContains(copy->get<std::string>(), "sipctl uptime")) << *copy;
  Shot("console-commands-uptime");

  Open("#/commands/get_statistics", "commands");
  ASSERT_TRUE(page_
                  ->Evaluate("document.querySelector('#param-0').value = 'core:';"
                             "document.querySelector('#run').click()")
                  .ok());
  ASSERT_TRUE(page_->WaitFor("document.querySelector('[data-testid=reply-tree]')").ok());
  tree = page_->Evaluate("document.querySelector('[data-testid=reply-tree]').textContent");
  EXPECT_TRUE(absl::StrContains(tree->get<std::string>(), "core:rcv_requests")) << *tree;
  Shot("console-commands");

  // An MI error shows code and reason.
  Open("#/commands/ul_show_contact", "commands");
  ASSERT_TRUE(page_
                  ->Evaluate("document.querySelector('#param-0').value = 'location';"
                             "document.querySelector('#param-1').value = 'nobody@example.com';"
                             "document.querySelector('#run').click()")
                  .ok());
  ASSERT_TRUE(page_->WaitFor("document.querySelector('[data-testid=error]')").ok());
  auto error = page_->Evaluate("document.querySelector('[data-testid=error]').textContent");
  EXPECT_TRUE(absl::StartsWith(error->get<std::string>(), "404 ")) << *error;

  // Narrow screen.
  ASSERT_TRUE(page_->Resize(390, 844).ok());
  Open("#/commands/get_statistics", "commands");
  Shot("console-commands-390px");
}

TEST_F(ConsoleBrowserTest, StatisticsChartFollowsAnOptionsFlood) {
  if (system("command -v sipp >/dev/null 2>&1") != 0) GTEST_SKIP() << "sipp is not installed";
  auto sipp = ChildProcess::Spawn(
      {"sipp", "-sf", absl::StrCat(SIPD_SIP_SCENARIO_DIR, "/options_uac.xml"),
       absl::StrCat("127.0.0.1:", sipd_->sip_port()), "-i", "127.0.0.1", "-nostdin", "-r",
       absl::StrCat(kSippRate), "-m", absl::StrCat(kSippRate * 120)},
      absl::StrCat(work_, "/sipp.log"));
  ASSERT_TRUE(sipp.ok());
  Open("#/statistics/core:rcv_requests,usrloc:", "statistics");
  // Once the chart holds samples taken 6 s after the page opened (sipp runs since
  // before), its 5-second average rate is within 10 % of sipp's rate.
  const std::string chart = "document.querySelector('[data-stat=\"core:rcv_requests\"]')";
  ASSERT_TRUE(page_->WaitFor(chart).ok());
  const auto opened = page_->Evaluate("Date.now()");
  ASSERT_TRUE(opened.ok());
  ASSERT_TRUE(page_
                  ->WaitFor(absl::StrCat("Number(", chart, ".dataset.lastTime) > ",
                                         opened->get<int64_t>() + 6000),
                            std::chrono::seconds(30))
                  .ok());
  auto rate = page_->Evaluate(chart + ".dataset.rate5s");
  ASSERT_TRUE(rate.ok());
  const double charted = std::stod(rate->get<std::string>());
  EXPECT_NEAR(charted, kSippRate, kSippRate / 10.0) << "charted rate vs sipp's rate";
  Shot("console-statistics");
  (*sipp)->Kill();
}

TEST_F(ConsoleBrowserTest, ProcessesPage) {
  Open("#/processes", "processes");
  ASSERT_TRUE(page_
                  ->WaitFor("[...document.querySelectorAll('#processes td')].some(td => "
                            "td.textContent === 'HTTPD')")
                  .ok());
  // CPU % appears after the second sample.
  ASSERT_TRUE(page_
                  ->WaitFor("[...document.querySelectorAll('#processes tbody tr')].every(tr => "
                            "tr.children[3].textContent !== '…')")
                  .ok());
  Shot("console-processes");
}

TEST_F(ConsoleBrowserTest, RegistrationsPageRemovesAContactAfterConfirm) {
  for (int i = 0; i < 3; ++i) {
    const json reply = Rpc("ul_add", {"location", absl::StrCat("user", i, "@example.com"),
                                      absl::StrCat("sip:user", i, "@192.0.2.7:5060"), "3600",
                                      "1.00", "0", "0", "0", "0"});
    ASSERT_TRUE(reply.contains("result")) << reply.dump();
  }
  Open("#/registrations", "registrations");
  ASSERT_TRUE(
      page_->WaitFor("document.querySelectorAll('#registrations tbody tr').length === 3").ok());
  ASSERT_TRUE(page_
                  ->Evaluate("document.querySelector('#reg-search').value = 'user1@';"
                             "document.querySelector('#reg-search').dispatchEvent(new "
                             "Event('input'))")
                  .ok());
  ASSERT_TRUE(
      page_->WaitFor("document.querySelectorAll('#registrations tbody tr').length === 1").ok());
  Shot("console-registrations");
  ASSERT_TRUE(
      page_->Evaluate("document.querySelector('#registrations tbody tr button').click()").ok());
  ASSERT_EQ(browser_->dialogs().size(), 1u);
  EXPECT_TRUE(absl::StrContains(browser_->dialogs()[0], "sip:user1@192.0.2.7:5060"));
  ASSERT_TRUE(
      page_->WaitFor("document.querySelector('#reg-status').textContent.includes('Removed')").ok());
  const json shown = Rpc("ul_show_contact", {"location", "user1@example.com"});
  EXPECT_EQ(shown["error"]["code"], 404) << shown.dump();
  const json other = Rpc("ul_show_contact", {"location", "user2@example.com"});
  EXPECT_TRUE(other.contains("result")) << other.dump();
}

// sipd as a proxy with dialogs (as tests/dialog/dialog_sip_test.cc), for the Dialogs page.
class ConsoleBrowserDialogsTest : public ConsoleBrowserTest {
 protected:
  std::string ExtraModules() const override {
    return "loadmodule \"registrar\"\n"
           "loadmodule \"tm\"\n"
           "modparam(\"tm\", \"wt_timer\", 1)\n"
           "loadmodule \"dialog\"\n";
  }

  // The dialog nodes of a dlg_list JSON-RPC reply.
  std::vector<json> Dialogs() {
    std::vector<json> out;
    const json reply = Rpc("dlg_list", json::array());
    if (!reply.contains("result")) return out;
    for (const json& node : reply["result"]["nodes"]) {
      if (node.value("name", "") == "dialog") out.push_back(node);
    }
    return out;
  }
  static std::string Kid(const json& node, const std::string& name) {
    for (const json& kid : node.value("kids", json::array())) {
      if (kid.value("name", "") == name) return kid.value("value", "");
    }
    return "";
  }
};

TEST_F(ConsoleBrowserDialogsTest, DialogsPageEndsACallAfterConfirm) {
  if (system("command -v sipp >/dev/null 2>&1") != 0) GTEST_SKIP() << "sipp is not installed";
  // bob is a sipp UAS; the UAC's call lasts until sipd ends it (it waits for a BYE). The
  // SippProcess destructors kill both process groups whatever happens.
  auto uas = SippProcess::Start("uas_call.xml", {"-m", "1"}, work_, "uas");
  auto uas_port = uas->SipPort(false);
  ASSERT_TRUE(uas_port.ok()) << uas_port.status();
  const json added =
      Rpc("ul_add", {"location", "bob", absl::StrCat("sip:bob@127.0.0.1:", *uas_port), "0", "1.00",
                     "0", "0", "0", "4294967295"});
  ASSERT_TRUE(added.contains("result")) << added.dump();
  auto uac = SippProcess::Start(
      "uac_call_ended_by_proxy.xml",
      {"-s", "bob", absl::StrCat("127.0.0.1:", sipd_->sip_port()), "-m", "1"}, work_, "uac");
  std::string callid;
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::vector<json> dialogs = Dialogs();
        if (dialogs.size() != 1 || Kid(dialogs[0], "state") != "4") return false;
        callid = Kid(dialogs[0], "callid");
        return true;
      },
      std::chrono::seconds(20)))
      << uac->output() << uas->output();

  Open("#/dialogs", "dialogs");
  ASSERT_TRUE(page_->WaitFor("document.querySelectorAll('#dialogs tbody tr').length === 1").ok());
  auto listed = page_->Evaluate("document.querySelector('#dialogs tbody tr').dataset.callid");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, callid);
  auto row = page_->Evaluate("document.querySelector('#dialogs tbody tr').textContent");
  EXPECT_TRUE(absl::StrContains(row->get<std::string>(), "4 confirmed")) << *row;
  EXPECT_TRUE(absl::StrContains(row->get<std::string>(), "sip:bob@")) << *row;
  // Search: a text no dialog has hides the call; part of its Call-ID shows it again.
  const std::string search =
      "(v => { const s = document.querySelector('#dlg-search'); s.value = v;"
      " s.dispatchEvent(new Event('input')); })";
  ASSERT_TRUE(page_->Evaluate(search + "('no-such-call')").ok());
  ASSERT_TRUE(page_->WaitFor("document.querySelectorAll('#dialogs tbody tr').length === 0").ok());
  ASSERT_TRUE(
      page_->Evaluate(absl::StrCat(search, "(", json(callid.substr(0, 8)).dump(), ")")).ok());
  ASSERT_TRUE(page_->WaitFor("document.querySelectorAll('#dialogs tbody tr').length === 1").ok());
  Shot("console-dialogs");
  ASSERT_TRUE(page_->Resize(390, 844).ok());
  Shot("console-dialogs-390px");

  ASSERT_TRUE(page_->Evaluate("document.querySelector('#dialogs tbody tr button').click()").ok());
  ASSERT_EQ(browser_->dialogs().size(), 1u);
  EXPECT_TRUE(absl::StrContains(browser_->dialogs()[0], callid)) << browser_->dialogs()[0];
  ASSERT_TRUE(
      page_->WaitFor("document.querySelector('#dlg-status').textContent.includes('Ended')").ok());
  ASSERT_TRUE(page_->WaitFor("document.querySelectorAll('#dialogs tbody tr').length === 0").ok());
  EXPECT_TRUE(Dialogs().empty());
  // Each sipp fails unless it received the BYE and answered it.
  EXPECT_EQ(uac->Wait(std::chrono::seconds(30)), 0) << uac->output();
  EXPECT_EQ(uas->Wait(std::chrono::seconds(30)), 0) << uas->output();
}

}  // namespace
}  // namespace sipd::httpd_test
