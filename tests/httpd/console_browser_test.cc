// The console in a real headless Chromium (Debian `chromium`, over the DevTools
// protocol: tests/httpd/cdp_client.h) against a running sipd: runs `uptime` and
// `get_statistics core:` from the Commands page, charts core:rcv_requests during a sipp
// OPTIONS flood and compares the charted rate with sipp's, lists processes, and removes
// a contact from the Registrations page (confirm dialog) then checks it with
// ul_show_contact. Screenshots of each page go to SIPD_ARTIFACT_DIR. Skipped when
// chromium or sipp is not installed (scripts/bootstrap.sh installs both).
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/httpd/cdp_client.h"
#include "tests/httpd/http_test_client.h"
#include "tests/support/sipd_harness.h"

namespace sipd::httpd_test {
namespace {

using ::sipd::testing::SipdInstance;

constexpr int kSippRate = 100;  // OPTIONS per second

class ConsoleBrowserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    artifacts_ = SIPD_ARTIFACT_DIR;
    std::filesystem::create_directories(artifacts_);
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false,
        .extra_config = "loadmodule \"usrloc\"\n"
                        "loadmodule \"httpd\"\n"
                        "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n"});
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
  void TearDown() override {
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

}  // namespace
}  // namespace sipd::httpd_test
