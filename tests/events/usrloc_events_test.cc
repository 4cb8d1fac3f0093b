// usrloc raises E_UL_AOR_INSERT/DELETE and E_UL_CONTACT_INSERT/UPDATE/DELETE (usrloc.h)
// on updates and on expiry; a LocalEventBackend consumer with local interest takes them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "registry/events.h"
#include "sipd/modules/usrloc/usrloc.h"

namespace sipd::usrloc {
namespace {

using mi::EventValue;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr int64_t kNow = 1700000000;

class UsrlocEventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(32 << 20);
    ASSERT_TRUE(shm.ok());
    shm_ = std::move(*shm);
    auto* cells =
        static_cast<std::atomic<uint64_t>*>(shm_->Allocate(sizeof(std::atomic<uint64_t>) * 64));
    for (int i = 0; i < 64; ++i) new (&cells[i]) std::atomic<uint64_t>(0);
    stats_ = std::make_unique<mi::StatsRegistry>(std::span(cells, 64));
    ul_ = std::make_unique<Usrloc>(Options{}, *shm_, *stats_, [this] { return now_; });
    ASSERT_TRUE(ul_->Start().ok());
    events_.SetBackend(&backend_);
    ASSERT_TRUE(ul_->PublishEvents(events_).ok());
    consumer_ = *backend_.AddConsumer("test", 1 << 20);
  }

  mi::EventId Id(std::string_view name) { return events_.Find(name)->id(); }
  void Listen(std::initializer_list<std::string_view> names) {
    for (auto name : names) consumer_->AddInterest(Id(name));
  }
  // "E_NAME aor" per raised event (contact events: "E_NAME aor uri").
  std::vector<std::string> Raised() {
    std::vector<std::string> out;
    mi::RaisedEvent event;
    while (consumer_->Pop(event)) {
      const mi::Event& e = *events_.Get(event.id);
      std::string line = e.name();
      for (size_t i = 0; i < event.values.size() && i < e.params().size(); ++i) {
        if (e.params()[i].name == "aor" || e.params()[i].name == "uri") {
          line += " " + std::get<std::string>(event.values[i]);
        }
      }
      out.push_back(line);
      last_ = event;
    }
    return out;
  }
  void Upsert(const std::string& aor, const std::string& uri, int64_t expires, uint32_t cseq = 1) {
    auto applied = ul_->Update(*ul_->FindTable("location"), aor,
                               [&](bool, const std::vector<ContactInfo>&, std::vector<Edit>& e) {
                                 ContactInfo c{.uri = uri,
                                               .callid = "cid",
                                               .user_agent = "phone/1.0",
                                               .socket = "udp:127.0.0.1:5060",
                                               .expires = expires,
                                               .cseq = cseq};
                                 e.push_back(Edit{Edit::Kind::kUpsert, c});
                                 return absl::OkStatus();
                               });
    ASSERT_TRUE(applied.ok());
  }
  void Remove(const std::string& aor, const std::string& uri) {
    auto applied = ul_->Update(*ul_->FindTable("location"), aor,
                               [&](bool, const std::vector<ContactInfo>&, std::vector<Edit>& e) {
                                 e.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = uri}});
                                 return absl::OkStatus();
                               });
    ASSERT_TRUE(applied.ok());
  }

  int64_t now_ = kNow;
  std::unique_ptr<SharedMemory> shm_;
  std::unique_ptr<mi::StatsRegistry> stats_;
  std::unique_ptr<Usrloc> ul_;
  mi::LocalEventBackend backend_;
  mi::EventRegistry events_;
  mi::EventConsumer* consumer_ = nullptr;
  mi::RaisedEvent last_;
};

TEST_F(UsrlocEventsTest, PublishesThe111EventsAndTheLaterContactEvents) {
  std::vector<std::string> names;
  for (const auto& e : events_.events()) names.push_back(e->name());
  EXPECT_THAT(names, ElementsAre("E_UL_AOR_INSERT", "E_UL_AOR_DELETE", "E_UL_CONTACT_INSERT",
                                 "E_UL_CONTACT_UPDATE", "E_UL_CONTACT_DELETE"));
  ASSERT_EQ(events_.Find("E_UL_AOR_INSERT")->params().size(), 1u);
  EXPECT_EQ(events_.Find("E_UL_AOR_INSERT")->params()[0].name, "aor");
  std::vector<std::string> params;
  for (const auto& p : events_.Find("E_UL_CONTACT_UPDATE")->params()) params.push_back(p.name);
  EXPECT_THAT(params, ElementsAre("domain", "aor", "uri", "received", "path", "qval", "user_agent",
                                  "socket", "bflags", "expires", "callid", "cseq", "attr"));
}

TEST_F(UsrlocEventsTest, AorEventsOncePerAorAsIn111) {
  Listen({"E_UL_AOR_INSERT", "E_UL_AOR_DELETE"});
  Upsert("alice", "sip:alice@10.0.0.1", kNow + 3600);
  Upsert("alice", "sip:alice@10.0.0.2", kNow + 3600);  // second contact: no AOR event
  Upsert("alice", "sip:alice@10.0.0.1", kNow + 7200);  // refresh: none either
  Upsert("bob", "sip:bob@10.0.0.3", kNow + 3600);
  EXPECT_THAT(Raised(), ElementsAre("E_UL_AOR_INSERT alice", "E_UL_AOR_INSERT bob"));
  Remove("alice", "sip:alice@10.0.0.1");
  EXPECT_THAT(Raised(), IsEmpty());
  Remove("alice", "sip:alice@10.0.0.2");
  Remove("alice", "sip:alice@10.0.0.2");  // nothing left to remove: no event
  EXPECT_THAT(Raised(), ElementsAre("E_UL_AOR_DELETE alice"));
  EXPECT_THAT(last_.values, ElementsAre(EventValue("alice")));
}

TEST_F(UsrlocEventsTest, ContactEventsFromTheDifferenceBeforeAndAfter) {
  Listen({"E_UL_AOR_INSERT", "E_UL_AOR_DELETE", "E_UL_CONTACT_INSERT", "E_UL_CONTACT_UPDATE",
          "E_UL_CONTACT_DELETE"});
  Upsert("alice", "sip:alice@10.0.0.1", kNow + 3600);
  EXPECT_THAT(Raised(),
              ElementsAre("E_UL_AOR_INSERT alice", "E_UL_CONTACT_INSERT alice sip:alice@10.0.0.1"));
  EXPECT_THAT(last_.values, ElementsAre(EventValue("location"), EventValue("alice"),
                                        EventValue("sip:alice@10.0.0.1"), EventValue(""),
                                        EventValue(""), EventValue(int64_t{-1}),
                                        EventValue("phone/1.0"), EventValue("udp:127.0.0.1:5060"),
                                        EventValue(int64_t{0}), EventValue(int64_t{kNow + 3600}),
                                        EventValue("cid"), EventValue(int64_t{1}), EventValue("")));
  Upsert("alice", "sip:alice@10.0.0.1", kNow + 3600, 2);
  EXPECT_THAT(Raised(), ElementsAre("E_UL_CONTACT_UPDATE alice sip:alice@10.0.0.1"));
  Remove("alice", "sip:alice@10.0.0.1");
  EXPECT_THAT(Raised(),
              ElementsAre("E_UL_CONTACT_DELETE alice sip:alice@10.0.0.1", "E_UL_AOR_DELETE alice"));
}

TEST_F(UsrlocEventsTest, ExpiryRaisesContactAndAorDeletes) {
  Listen({"E_UL_AOR_DELETE", "E_UL_CONTACT_DELETE"});
  Upsert("alice", "sip:alice@10.0.0.1", kNow + 10);
  Upsert("alice", "sip:alice@10.0.0.2", kNow + 100);
  Upsert("bob", "sip:bob@10.0.0.3", kNow + 10);
  now_ = kNow + 10;
  ul_->RunTimer();
  std::vector<std::string> raised = Raised();
  std::sort(raised.begin(), raised.end());
  EXPECT_THAT(raised,
              ElementsAre("E_UL_AOR_DELETE bob", "E_UL_CONTACT_DELETE alice sip:alice@10.0.0.1",
                          "E_UL_CONTACT_DELETE bob sip:bob@10.0.0.3"));
  now_ = kNow + 100;
  ul_->RunTimer();
  EXPECT_THAT(Raised(),
              ElementsAre("E_UL_CONTACT_DELETE alice sip:alice@10.0.0.2", "E_UL_AOR_DELETE alice"));
}

TEST_F(UsrlocEventsTest, NothingIsCopiedOrRaisedWithoutListeners) {
  Upsert("alice", "sip:alice@10.0.0.1", kNow + 10);
  now_ = kNow + 10;
  ul_->RunTimer();
  Listen({"E_UL_AOR_INSERT"});
  EXPECT_THAT(Raised(), IsEmpty());
}

}  // namespace
}  // namespace sipd::usrloc
