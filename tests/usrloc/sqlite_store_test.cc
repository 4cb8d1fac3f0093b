// SqliteStore: snapshot writes with version ordering, load, prune, table sync.
#include "sipd/modules/usrloc/sqlite_store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/modules/sqlite/statement.h"
#include "tests/usrloc/older_layout.h"

namespace sipd::usrloc {
namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sipd-sqlite-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    store_ = Open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<SqliteStore> Open() {
    auto store = SqliteStore::Open({.path = dir_ + "/ul.sqlite"});
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  static AorSnapshot Snapshot(std::string aor, uint64_t version, std::vector<std::string> uris) {
    AorSnapshot s;
    s.aor = std::move(aor);
    s.version = version;
    for (auto& uri : uris) {
      ContactInfo c;
      c.uri = std::move(uri);
      c.callid = "cid";
      c.cseq = 3;
      c.expires = 5000;
      c.q = 500;
      c.path = "<sip:p;lr>";
      c.received = "sip:1.2.3.4:5060";
      c.user_agent = "ua";
      c.socket = "udp:127.0.0.1:5060";
      c.instance = "<urn:x>";
      c.methods = 77;
      c.flags = 1;
      c.cflags = 2;
      c.last_modified = 4000;
      c.state = ContactState::kSync;
      s.contacts.push_back(std::move(c));
    }
    return s;
  }
  std::vector<std::string> Uris(std::string_view aor, std::string_view table = "location") {
    std::vector<std::string> out;
    const std::vector<AorSnapshot> all = store_->Load(table).value();
    for (auto& s : all) {
      if (s.aor != aor) continue;
      for (auto& c : s.contacts) out.push_back(c.uri);
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SqliteStoreTest, RoundTripKeepsEveryFieldAndOrder) {
  std::vector<AorSnapshot> in = {Snapshot("alice", 5, {"sip:b@h", "sip:a@h"}),
                                 Snapshot("bob", 6, {"sip:c@h"})};
  ASSERT_TRUE(store_->Write("location", in).ok());
  auto out = store_->Load("location");
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].aor, "alice");
  EXPECT_EQ((*out)[0].version, 5u);
  ASSERT_EQ((*out)[0].contacts.size(), 2u);
  EXPECT_EQ((*out)[0].contacts[0], in[0].contacts[0]);
  EXPECT_EQ((*out)[0].contacts[1], in[0].contacts[1]);
  EXPECT_EQ((*out)[1].contacts[0], in[1].contacts[0]);
  EXPECT_TRUE(store_->Load("other").value().empty());
  EXPECT_EQ(store_->MaxVersion().value(), 6u);
}

TEST_F(SqliteStoreTest, OlderSnapshotNeverOverwritesNewer) {
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 10, {"sip:new@h"})})
          .ok());
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 9, {"sip:old@h"})})
          .ok());
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:new@h"});
  // Same version: skipped unless forced.
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 10, {"sip:same@h"})})
          .ok());
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:new@h"});
  ASSERT_TRUE(
      store_
          ->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 10, {"sip:same@h"})}, true)
          .ok());
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:same@h"});
  // An emptied AOR is not resurrected by a late older write.
  ASSERT_TRUE(store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 12, {})}).ok());
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 11, {"sip:late@h"})})
          .ok());
  EXPECT_TRUE(Uris("alice").empty());
}

TEST_F(SqliteStoreTest, TablesAreSeparate) {
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 1, {"sip:a@h"})}).ok());
  ASSERT_TRUE(
      store_->Write("aliases", std::vector<AorSnapshot>{Snapshot("alice", 2, {"sip:b@h"})}).ok());
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:a@h"});
  EXPECT_EQ(Uris("alice", "aliases"), std::vector<std::string>{"sip:b@h"});
}

TEST_F(SqliteStoreTest, PruneDropsExpiredContactsAndEmptyAors) {
  AorSnapshot s = Snapshot("alice", 3, {"sip:old@h", "sip:keep@h", "sip:perm@h"});
  s.contacts[0].expires = 100;
  s.contacts[1].expires = 200;
  s.contacts[2].expires = 0;
  ASSERT_TRUE(store_->Write("location", std::vector<AorSnapshot>{s, Snapshot("bob", 4, {})}).ok());
  ASSERT_TRUE(store_->Prune(150).ok());
  EXPECT_EQ(Uris("alice"), (std::vector<std::string>{"sip:keep@h", "sip:perm@h"}));
  EXPECT_EQ(store_->MaxVersion().value(), 3u);  // bob's empty row is gone
}

// A row edited by hand into something that is not a JSON array of contacts is skipped by
// Load (which logs how many it skipped), Prune and the view, not an error that stops a
// restart; the AOR's next write replaces it.
TEST_F(SqliteStoreTest, AnUnreadableRowIsSkippedAndTheNextWriteReplacesIt) {
  ASSERT_TRUE(store_
                  ->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 1, {"sip:a@h"}),
                                                               Snapshot("bob", 2, {"sip:b@h"}),
                                                               Snapshot("carol", 3, {"sip:c@h"}),
                                                               Snapshot("dave", 4, {"sip:d@h"})})
                  .ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/ul.sqlite").c_str(), &db), SQLITE_OK);
  // bob: not JSON; carol: JSON without an array; dave: his contact and two elements that
  // are not contacts.
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE usrloc_aor SET contacts = '[[\"sip:b@h\", 5' WHERE aor = 'bob';"
                         "UPDATE usrloc_aor SET contacts = '[\"sip:c@h\"]' WHERE aor = 'carol';"
                         "UPDATE usrloc_aor SET contacts = json_insert(contacts, '$[#]', 5, "
                         "'$[#]', json('{\"a\": 1, \"b\": 2}')) WHERE aor = 'dave';",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  absl::StatusOr<sqlite::Statement> view =
      sqlite::Prepare(db, "SELECT group_concat(aor) FROM usrloc_contact");
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_EQ(sqlite3_step(view->get()), SQLITE_ROW);
  EXPECT_EQ(sqlite::ColumnText(view->get(), 0), "alice,dave");
  view->reset();
  sqlite3_close(db);

  SqliteStore::Skipped skipped;
  absl::StatusOr<std::vector<AorSnapshot>> loaded = store_->Load("location", &skipped);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ((*loaded)[0].aor, "alice");
  EXPECT_EQ((*loaded)[1].aor, "dave");
  ASSERT_EQ((*loaded)[1].contacts.size(), 1u);
  EXPECT_EQ((*loaded)[1].contacts[0].uri, "sip:d@h");
  EXPECT_EQ(skipped.rows, 2);      // bob and carol
  EXPECT_EQ(skipped.elements, 3);  // carol's string, dave's number and object
  ASSERT_TRUE(store_->Prune(150).ok());
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:a@h"});
  EXPECT_EQ(Uris("dave"), std::vector<std::string>{"sip:d@h"});  // Prune dropped the rest
  ASSERT_TRUE(store_->Load("location", &skipped).ok());
  EXPECT_EQ(skipped.elements, 0);
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("bob", 4, {"sip:b2@h"})}).ok());
  EXPECT_EQ(Uris("bob"), std::vector<std::string>{"sip:b2@h"});
  EXPECT_TRUE(Uris("carol").empty());
  EXPECT_EQ(store_->MaxVersion().value(), 4u);  // carol's row, emptied by Prune, is gone
}

// The usrloc_contact view of another version (here: one that shows fewer columns) is
// replaced when the store opens; the current one is left as it is.
TEST_F(SqliteStoreTest, AViewOfAnotherVersionIsReplaced) {
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 1, {"sip:a@h"})}).ok());
  store_.reset();
  const std::string path = dir_ + "/ul.sqlite";
  const auto view_sql = [&] {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    std::string sql;
    {
      absl::StatusOr<sqlite::Statement> read = sqlite::Prepare(
          db, "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'usrloc_contact'");
      if (read.ok() && sqlite3_step(read->get()) == SQLITE_ROW) {
        sql = sqlite::ColumnText(read->get(), 0);
      }
    }  // finalized before the close
    sqlite3_close(db);
    return sql;
  };
  const std::string current = view_sql();
  ASSERT_THAT(current, ::testing::HasSubstr("last_modified"));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP VIEW usrloc_contact; CREATE VIEW usrloc_contact AS SELECT "
                         "table_name, aor FROM usrloc_aor",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  ASSERT_NE(view_sql(), current);

  store_ = Open();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(view_sql(), current);
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:a@h"});
}

TEST_F(SqliteStoreTest, DeleteAorsExceptKeepsNewerWrites) {
  ASSERT_TRUE(store_
                  ->Write("location", std::vector<AorSnapshot>{Snapshot("a", 1, {"sip:a@h"}),
                                                               Snapshot("b", 2, {"sip:b@h"}),
                                                               Snapshot("c", 9, {"sip:c@h"})})
                  .ok());
  ASSERT_TRUE(store_->DeleteAorsExcept("location", {"a"}, 5).ok());
  EXPECT_EQ(Uris("a").size(), 1u);
  EXPECT_TRUE(Uris("b").empty());
  EXPECT_EQ(Uris("c").size(), 1u);  // written after the sync started
}

TEST_F(SqliteStoreTest, SecondConnectionSeesCommittedData) {
  auto other = Open();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(
      store_->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 1, {"sip:a@h"})}).ok());
  ASSERT_TRUE(
      other->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 2, {"sip:b@h"})}).ok());
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:b@h"});
}

// Databases written by older sipd versions (tests/usrloc/older_layout.h), with the
// contact table in both of its layouts.
class OlderLayoutTest : public SqliteStoreTest, public ::testing::WithParamInterface<bool> {};

TEST_P(OlderLayoutTest, ItsContactsArePackedOnceKeepingEveryField) {
  const bool without_rowid = GetParam();
  store_.reset();
  const std::string path = dir_ + "/old.sqlite";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const std::string old_layout = absl::StrCat(testing::OlderLayoutSchema(without_rowid), R"sql(
INSERT INTO usrloc_aor VALUES ('location', 'alice', 7);
INSERT INTO usrloc_aor VALUES ('location', 'bob', 9);
INSERT INTO usrloc_contact VALUES ('location', 'alice', 'sip:b@h', 0, 5000, 500, 'cid', 3, 1, 2,
  'ua', 'sip:1.2.3.4:5060', '<sip:p;lr>', 'udp:127.0.0.1:5060', 77, '<urn:x>', '', 4000);
INSERT INTO usrloc_contact VALUES ('location', 'alice', 'sip:a@h', 1, 5000, 500, 'cid', 3, 1, 2,
  'ua', 'sip:1.2.3.4:5060', '<sip:p;lr>', 'udp:127.0.0.1:5060', 77, '<urn:x>', '', 4000);
)sql");
  ASSERT_EQ(sqlite3_exec(db, old_layout.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  auto store = SqliteStore::Open({.path = path});
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<AorSnapshot> loaded = (*store)->Load("location").value();
  ASSERT_EQ(loaded.size(), 1u);  // bob had no contacts
  EXPECT_EQ(loaded[0].version, 7u);
  const AorSnapshot expected = Snapshot("alice", 7, {"sip:b@h", "sip:a@h"});
  ASSERT_EQ(loaded[0].contacts.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ContactInfo want = expected.contacts[i];
    want.attr = "";
    want.state = loaded[0].contacts[i].state;
    EXPECT_EQ(loaded[0].contacts[i], want);
  }
  // Writes go on in the packed table; usrloc_contact is now a view over it. Bob's version
  // row stays, so an older snapshot of bob is still refused.
  ASSERT_TRUE((*store)
                  ->Write("location", std::vector<AorSnapshot>{Snapshot("alice", 8, {"sip:c@h"}),
                                                               Snapshot("bob", 9, {"sip:x@h"})})
                  .ok());
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  {
    absl::StatusOr<sqlite::Statement> objects =
        sqlite::Prepare(db,
                        "SELECT group_concat(type || ':' || name, ',') FROM (SELECT type, name "
                        "FROM sqlite_master WHERE name LIKE 'usrloc%' ORDER BY name)");
    ASSERT_TRUE(objects.ok()) << objects.status();
    ASSERT_EQ(sqlite3_step(objects->get()), SQLITE_ROW);
    EXPECT_EQ(sqlite::ColumnText(objects->get(), 0), "table:usrloc_aor,view:usrloc_contact");
  }
  sqlite3_close(db);
  store_ = std::move(*store);
  EXPECT_EQ(Uris("alice"), std::vector<std::string>{"sip:c@h"});
  EXPECT_TRUE(Uris("bob").empty());
}

INSTANTIATE_TEST_SUITE_P(RowidAndWithoutRowid, OlderLayoutTest, ::testing::Bool());

// Contacts are packed as JSON text: every byte a field may hold (quotes, backslashes,
// control characters, bytes that are not UTF-8; not NUL, which neither SIP nor ul_add
// lets in) comes back as it was, and the usrloc_contact view shows the old
// one-row-per-contact columns.
TEST_F(SqliteStoreTest, AnyBytesInAFieldComeBackAsTheyWere) {
  AorSnapshot s = Snapshot("carol", 4, {"sip:\"q\"\\@h", "sip:b@h"});
  s.contacts[0].user_agent = "a\x01\tb\n\x1f\x7f\xff\xfe\"";
  s.contacts[0].attr = "\\u0041";
  s.contacts[1].expires = 0;
  s.contacts[1].cseq = 4294967295u;
  s.contacts[1].last_modified = -5;
  ASSERT_TRUE(store_->Write("location", std::vector<AorSnapshot>{s}).ok());
  std::vector<AorSnapshot> loaded = store_->Load("location").value();
  ASSERT_EQ(loaded.size(), 1u);
  ASSERT_EQ(loaded[0].contacts.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const ContactInfo& got = loaded[0].contacts[i];
    const ContactInfo& want = s.contacts[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(got.uri, want.uri);
    EXPECT_EQ(got.user_agent, want.user_agent);
    EXPECT_EQ(got.attr, want.attr);
    EXPECT_EQ(got.expires, want.expires);
    EXPECT_EQ(got.cseq, want.cseq);
    EXPECT_EQ(got.last_modified, want.last_modified);
    ContactInfo same = got;
    same.state = want.state;
    EXPECT_EQ(same, want);  // and every other field
  }

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/ul.sqlite").c_str(), &db), SQLITE_OK);
  absl::StatusOr<sqlite::Statement> rows = sqlite::Prepare(
      db,
      "SELECT group_concat(contact || '|' || position || '|' || expires || '|' || cseq || '|' "
      "|| q || '|' || methods, ';') FROM usrloc_contact WHERE table_name = 'location' AND "
      "aor = 'carol'");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(sqlite3_step(rows->get()), SQLITE_ROW);
  EXPECT_EQ(sqlite::ColumnText(rows->get(), 0),
            "sip:\"q\"\\@h|0|5000|3|500|77;sip:b@h|1|0|4294967295|500|77");
  rows->reset();
  sqlite3_close(db);
}

TEST_F(SqliteStoreTest, OpenFailsClearlyForBadPath) {
  auto store = SqliteStore::Open({.path = "/nonexistent-dir/x/ul.sqlite"});
  EXPECT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("/nonexistent-dir/x/ul.sqlite"), absl::string_view::npos);
}

}  // namespace
}  // namespace sipd::usrloc
