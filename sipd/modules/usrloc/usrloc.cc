#include "sipd/modules/usrloc/usrloc.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <functional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "sipd/api/module_params.h"
#include "sipd/core/sip.h"
#include "sipd/modules/usrloc/ul_mi.h"
#include "spdlog/spdlog.h"

namespace sipd::usrloc {

// State shared by all processes (in shm).
struct Usrloc::Shared {
  // The last version handed out (LocationTable versions).
  std::atomic<uint64_t> version_clock{0};
  // The outcome of the last database write of any process (health check).
  std::atomic<bool> last_write_failed{false};
  // Live contacts per source host bucket (max_contacts_per_source).
  std::atomic<uint32_t> source_counts[kSourceBuckets] = {};
};

namespace {
// AORs per pass of the timer and of ul_sync handed to the writer at once: bounds the
// memory a pass queues in shared memory.
constexpr size_t kSnapshotsPerTransaction = 50;

// One usrloc record: "write this snapshot of this table's AOR". Its contacts are already
// the database's text (SqliteStore::EncodeContacts), encoded by the process that queues
// the record, so that the leader only binds them while it holds the commit lock.
struct Record {
  std::string table;
  bool force = false;
  std::string aor;
  uint64_t version = 0;
  std::string contacts;
};

std::string EncodeSnapshot(std::string_view table, const AorSnapshot& s, bool force) {
  sqlite::RecordWriter w;
  w.Str(table);
  w.U8(force ? 1 : 0);
  w.Str(s.aor);
  w.U64(s.version);
  w.Str(SqliteStore::EncodeContacts(s.contacts));
  return w.Take();
}

// `contacts` false: only the head (table, force, AOR, version), for a caller that does not
// need the contacts' text (Acknowledge) and so need not copy it.
bool DecodeRecord(std::string_view bytes, Record& out, bool contacts = true) {
  sqlite::RecordReader r(bytes);
  uint8_t force = 0;
  if (!r.Str(out.table) || !r.U8(force) || !r.Str(out.aor) || !r.U64(out.version)) return false;
  out.force = force != 0;
  if (!contacts) return true;
  return r.Str(out.contacts) && r.done();
}

}  // namespace

// usrloc's part of the database: its schema, and the snapshot records the writer's
// leader applies (in whichever process leads) with a store on the leader's connection.
class Usrloc::DbClient final : public sqlite::GroupCommitWriter::Client {
 public:
  DbClient(Usrloc& owner, std::string path) : owner_(owner), path_(std::move(path)) {}
  ~DbClient() override { Forget(); }

  absl::Status CreateSchema(sqlite3* db) override { return SqliteStore::CreateSchema(db); }
  absl::Status Apply(sqlite3* db, std::string_view record) override {
    Record r;
    if (!DecodeRecord(record, r)) return absl::InvalidArgumentError("bad usrloc record");
    return Store(db).WriteRow(r.table, r.aor, r.version, r.contacts, r.force);
  }
  void ConnectionClosing(sqlite3*) override { Forget(); }
  void Acknowledge(std::string_view record, std::string_view ack,
                   const absl::Status& status) override {
    owner_.Acknowledge(record, ack, status);
  }
  // A store on `db` (this process's writer connection), kept while it stays the same.
  SqliteStore& Store(sqlite3* db) {
    if (store_ == nullptr || db != db_ || pid_ != getpid()) {
      Forget();
      store_ = SqliteStore::Borrow(db, path_);
      db_ = db;
      pid_ = getpid();
    }
    return *store_;
  }

 private:
  void Forget() {
    // Statements of a connection inherited across fork belong to the parent: leak them.
    if (store_ != nullptr && pid_ != getpid()) (void)store_.release();
    store_.reset();
  }
  Usrloc& owner_;
  std::string path_;
  std::unique_ptr<SqliteStore> store_;
  sqlite3* db_ = nullptr;
  pid_t pid_ = 0;
};

Usrloc::Usrloc(Options options, SharedMemory& shm, mi::StatsRegistry& stats, Clock clock)
    : options_(std::move(options)), shm_(shm), stats_(stats), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
}

Usrloc::~Usrloc() { CloseStore(); }

absl::Status Usrloc::Start() {
  try {
    shared_ = shm_.Construct<Shared>();
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("usrloc: no shared memory: ", e.what()));
  }
  SIPD_RETURN_IF_ERROR(
      stats_.AddFunction("usrloc", "registered_users", [this] { return registered_users(); }));
  if (options_.db_mode != DbMode::kNone) {
    db_client_ = std::make_unique<DbClient>(*this, options_.db_path);
    SIPD_ASSIGN_OR_RETURN(
        writer_,
        sqlite::GroupCommitWriter::ForFile(
            shm_, sqlite::GroupCommitWriter::Options{
                      .path = options_.db_path,
                      .synchronous = options_.synchronous == SqliteStore::Synchronous::kFull
                                         ? sqlite::Synchronous::kFull
                                         : sqlite::Synchronous::kNormal,
                      .add_timer = options_.add_timer}));
    client_ = writer_->AddClient(db_client_.get());
    // The writer's figures (shared with dialog when it names the same file): records per
    // transaction is the batch size of the group commit.
    sqlite::GroupCommitWriter* writer = writer_.get();
    SIPD_RETURN_IF_ERROR(stats_.AddFunction("usrloc", "db_commits",
                                            [writer] { return writer->figures().transactions; }));
    SIPD_RETURN_IF_ERROR(
        stats_.AddFunction("usrloc", "db_records", [writer] { return writer->figures().records; }));
  }
  return AddTable(kDefaultTable).status();
}

absl::StatusOr<LocationTable*> Usrloc::AddTable(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("usrloc: empty table name");
  if (FindTable(name) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("usrloc: table ", std::string(name), " exists"));
  }
  const std::string n(name);
  LocationTable::Counters counters;
  SIPD_ASSIGN_OR_RETURN(counters.users,
                        stats_.AddCounter("usrloc", absl::StrCat(n, "-users"), mi::kStatNoReset));
  SIPD_ASSIGN_OR_RETURN(counters.contacts, stats_.AddCounter("usrloc", absl::StrCat(n, "-contacts"),
                                                             mi::kStatNoReset));
  SIPD_ASSIGN_OR_RETURN(counters.expires, stats_.AddCounter("usrloc", absl::StrCat(n, "-expires")));
  SIPD_ASSIGN_OR_RETURN(
      auto table, LocationTable::Create(shm_, n, 1u << options_.hash_size, &shared_->version_clock,
                                        counters, options_.db_mode != DbMode::kNone));
  tables_.push_back(std::move(table));
  return tables_.back().get();
}

absl::Status Usrloc::LoadFromDatabase() {
  if (options_.db_mode == DbMode::kNone) return absl::OkStatus();
  absl::Status status = WithStore([&](SqliteStore& db) -> absl::Status {
    SqliteStore* store = &db;
    SIPD_RETURN_IF_ERROR(store->Prune(Now()));
    SIPD_ASSIGN_OR_RETURN(uint64_t max_version, store->MaxVersion());
    shared_->version_clock.store(max_version, std::memory_order_relaxed);
    for (auto& table : tables_) {
      SIPD_ASSIGN_OR_RETURN(std::vector<AorSnapshot> aors, store->Load(table->name()));
      size_t contacts = 0;
      for (const AorSnapshot& aor : aors) {
        SIPD_RETURN_IF_ERROR(table->Load(aor));
        contacts += aor.contacts.size();
        if (CountingSources()) {
          for (const ContactInfo& c : aor.contacts) AddToSource(c, +1);
        }
      }
      spdlog::info("usrloc: table {}: loaded {} AORs, {} contacts from {}", table->name(),
                   aors.size(), contacts, store->path());
    }
    return absl::OkStatus();
  });
  // No connection may cross the fork.
  CloseStore();
  return status;
}

LocationTable* Usrloc::FindTable(std::string_view name) const {
  for (const auto& table : tables_) {
    if (table->name() == name) return table.get();
  }
  return nullptr;
}

uint64_t Usrloc::registered_users() const {
  uint64_t total = 0;
  for (const auto& table : tables_) total += table->users();
  return total;
}

std::optional<std::string> Usrloc::FixAor(std::string_view aor) const {
  const size_t at = aor.find('@');
  if (options_.use_domain) {
    if (at == std::string_view::npos) return std::nullopt;
    return std::string(aor);
  }
  return std::string(aor.substr(0, at));
}

absl::Status Usrloc::WithStore(const std::function<absl::Status(SqliteStore&)>& fn) {
  if (writer_ == nullptr) {
    return absl::FailedPreconditionError("usrloc runs without a database (db_mode 0)");
  }
  return writer_->WithConnection([&](sqlite3* db) { return fn(db_client_->Store(db)); });
}

void Usrloc::CloseStore() {
  if (writer_ != nullptr) writer_->CloseConnection();
}

absl::Status Usrloc::Persist(LocationTable& table, std::span<const AorSnapshot> snapshots,
                             bool force) {
  if (snapshots.empty()) return absl::OkStatus();
  if (writer_ == nullptr) {
    return absl::FailedPreconditionError("usrloc runs without a database (db_mode 0)");
  }
  std::vector<std::string> records;
  records.reserve(snapshots.size());
  for (const AorSnapshot& s : snapshots) records.push_back(EncodeSnapshot(table.name(), s, force));
  // Returns once every record is committed (in this process's transaction or in the one
  // of another process that took it along).
  absl::Status written = writer_->CommitAll(client_, records);
  if (shared_ != nullptr) shared_->last_write_failed.store(!written.ok());
  SIPD_RETURN_IF_ERROR(written);
  for (const AorSnapshot& s : snapshots) table.MarkSynced(s.aor, s.version);
  return absl::OkStatus();
}

absl::Status Usrloc::PublishEvents(mi::EventRegistry& events) {
  const mi::EventParamSpec aor{"aor", "the address-of-record"};
  const std::vector<mi::EventParamSpec> contact = {
      {"domain", "the usrloc table (e.g. location)"},
      aor,
      {"uri", "the contact URI"},
      {"received", "where the REGISTER came from, when it differs from the contact"},
      {"path", "the Path header"},
      {"qval", "q times 1000 (-1 = not given)"},
      {"user_agent", "the User-Agent header"},
      {"socket", "the SIP socket it registered through"},
      {"bflags", "branch flags (bit mask)"},
      {"expires", "unix time the contact expires (0 = never)"},
      {"callid", "the Call-ID"},
      {"cseq", "the CSeq number"},
      {"attr", "attributes"}};
  auto publish = [&](std::string name, std::string help,
                     std::vector<mi::EventParamSpec> params) -> absl::StatusOr<mi::EventId> {
    return events.Publish(
        {.name = std::move(name), .module = "usrloc", .help = std::move(help), .params = params});
  };
  EventIds ids;
  SIPD_ASSIGN_OR_RETURN(ids.aor_insert,
                        publish("E_UL_AOR_INSERT", "an AOR got its first contact", {aor}));
  SIPD_ASSIGN_OR_RETURN(ids.aor_delete,
                        publish("E_UL_AOR_DELETE", "an AOR lost its last contact", {aor}));
  SIPD_ASSIGN_OR_RETURN(ids.contact_insert,
                        publish("E_UL_CONTACT_INSERT", "a contact was added", contact));
  SIPD_ASSIGN_OR_RETURN(ids.contact_update,
                        publish("E_UL_CONTACT_UPDATE", "a contact was refreshed", contact));
  SIPD_ASSIGN_OR_RETURN(ids.contact_delete, publish("E_UL_CONTACT_DELETE",
                                                    "a contact was removed or expired", contact));
  event_ids_ = ids;
  events_ = &events;
  return absl::OkStatus();
}

bool Usrloc::ContactEventsWanted() const {
  return events_ != nullptr &&
         (events_->Wanted(event_ids_.contact_insert) ||
          events_->Wanted(event_ids_.contact_update) || events_->Wanted(event_ids_.contact_delete));
}

void Usrloc::RaiseContact(mi::EventId id, const LocationTable& table, std::string_view aor,
                          const ContactInfo& c) const {
  events_->Raise(id, {table.name(), aor, c.uri, c.received, c.path, c.q, c.user_agent, c.socket,
                      c.cflags, c.expires, c.callid, c.cseq, c.attr});
}

namespace {

// Equal apart from the database state (an output-only field).
bool SameContact(const ContactInfo& a, const ContactInfo& b) {
  ContactInfo copy = b;
  copy.state = a.state;
  return a == copy;
}

const ContactInfo* FindByUri(const std::vector<ContactInfo>& contacts, std::string_view uri) {
  for (const ContactInfo& c : contacts) {
    if (c.uri == uri) return &c;
  }
  return nullptr;
}

}  // namespace

void Usrloc::RaiseUpdate(const LocationTable& table, std::string_view aor,
                         const UpdateResult& result, const std::vector<ContactInfo>& before) const {
  if (events_ == nullptr || !result.changed) return;
  const std::vector<ContactInfo>& after = result.after.contacts;
  if (!result.existed && !after.empty()) events_->Raise(event_ids_.aor_insert, {aor});
  if (ContactEventsWanted()) {
    for (const ContactInfo& c : after) {
      const ContactInfo* old = FindByUri(before, c.uri);
      if (old == nullptr) {
        RaiseContact(event_ids_.contact_insert, table, aor, c);
      } else if (!SameContact(*old, c)) {
        RaiseContact(event_ids_.contact_update, table, aor, c);
      }
    }
    for (const ContactInfo& c : before) {
      if (FindByUri(after, c.uri) == nullptr) {
        RaiseContact(event_ids_.contact_delete, table, aor, c);
      }
    }
  }
  if (result.existed && after.empty()) events_->Raise(event_ids_.aor_delete, {aor});
}

void Usrloc::RaiseSwept(const LocationTable& table, const std::vector<SweptAor>& swept) const {
  for (const SweptAor& s : swept) {
    for (const ContactInfo& c : s.contacts) {
      RaiseContact(event_ids_.contact_delete, table, s.aor, c);
    }
    if (s.aor_gone) events_->Raise(event_ids_.aor_delete, {s.aor});
  }
}

absl::Status Usrloc::CheckDatabase() {
  if (options_.db_mode == DbMode::kNone) return absl::OkStatus();
  if (shared_ != nullptr && shared_->last_write_failed.load()) {
    return absl::UnavailableError("the last write to the usrloc database failed (see the log)");
  }
  return WithStore([](SqliteStore& store) { return store.CheckWritable(); });
}

std::string_view Usrloc::SourceHost(const ContactInfo& contact) {
  std::string_view uri = contact.received.empty() ? contact.uri : contact.received;
  if (const size_t colon = uri.find(':'); colon != std::string_view::npos && colon <= 4) {
    uri.remove_prefix(colon + 1);  // sip: / sips:
  }
  if (const size_t at = uri.find('@'); at != std::string_view::npos) uri.remove_prefix(at + 1);
  if (!uri.empty() && uri.front() == '[') {
    const size_t close = uri.find(']');
    return close == std::string_view::npos ? uri : uri.substr(1, close - 1);
  }
  return uri.substr(0, uri.find_first_of(":;>?"));
}

namespace {

size_t SourceBucket(std::string_view host) {
  // (std::hash: the same in every process, unlike absl's per-process seeded hash.)
  return std::hash<std::string>{}(
             absl::AsciiStrToLower(absl::string_view(host.data(), host.size()))) %
         kSourceBuckets;
}

}  // namespace

uint32_t Usrloc::ContactsFromSource(std::string_view host) const {
  if (!CountingSources() || shared_ == nullptr) return 0;
  return shared_->source_counts[SourceBucket(host)].load(std::memory_order_relaxed);
}

void Usrloc::AddToSource(const ContactInfo& contact, int delta) const {
  std::atomic<uint32_t>& count = shared_->source_counts[SourceBucket(SourceHost(contact))];
  if (delta > 0) {
    count.fetch_add(static_cast<uint32_t>(delta), std::memory_order_relaxed);
    return;
  }
  // Never below 0 (a process that died mid-change may have left a count behind).
  uint32_t current = count.load(std::memory_order_relaxed);
  uint32_t next;
  do {
    next = current >= static_cast<uint32_t>(-delta) ? current - static_cast<uint32_t>(-delta) : 0;
  } while (!count.compare_exchange_weak(current, next, std::memory_order_relaxed));
}

void Usrloc::CountSources(const std::vector<ContactInfo>& before,
                          const std::vector<ContactInfo>& after) const {
  for (const ContactInfo& c : after) {
    const ContactInfo* old = FindByUri(before, c.uri);
    if (old == nullptr) {
      AddToSource(c, +1);
    } else if (SourceHost(*old) != SourceHost(c)) {
      AddToSource(*old, -1);
      AddToSource(c, +1);
    }
  }
  for (const ContactInfo& c : before) {
    if (FindByUri(after, c.uri) == nullptr) AddToSource(c, -1);
  }
}

absl::Status Usrloc::CommitLater(LocationTable& table, const AorSnapshot& snapshot,
                                 std::string_view ack, bool lead_now) {
  if (writer_ == nullptr || options_.db_mode != DbMode::kWriteThrough) {
    return absl::FailedPreconditionError("usrloc: not in write-through mode");
  }
  SIPD_RETURN_IF_ERROR(
      writer_->Defer(client_, EncodeSnapshot(table.name(), snapshot, /*force=*/false), ack));
  if (lead_now || writer_->queued() >= kLeadAt) writer_->TryLead();
  return absl::OkStatus();
}

absl::Status Usrloc::CommitNow(LocationTable& table, const AorSnapshot& snapshot) {
  absl::Status s = Persist(table, std::span<const AorSnapshot>(&snapshot, 1), /*force=*/false);
  if (!s.ok()) {
    spdlog::error("usrloc: write-through of {} failed (the timer retries): {}", snapshot.aor,
                  s.ToString());
  }
  return s;
}

void Usrloc::Acknowledge(std::string_view record, std::string_view ack,
                         const absl::Status& status) {
  if (shared_ != nullptr) shared_->last_write_failed.store(!status.ok());
  if (status.ok()) {
    Record r;
    if (DecodeRecord(record, r, /*contacts=*/false)) {
      if (LocationTable* table = FindTable(r.table); table != nullptr) {
        table->MarkSynced(r.aor, r.version);
      }
    }
  } else {
    spdlog::error("usrloc: write-through failed (the timer retries): {}", status.ToString());
  }
  if (ack_handler_) ack_handler_(ack, status);
}

absl::StatusOr<Usrloc::Applied> Usrloc::Update(LocationTable& table, std::string_view aor,
                                               LocationTable::EditFn fn, CommitMode mode) {
  // The contacts before the change, copied only when somebody listens to contact events.
  const bool copy_before = ContactEventsWanted() || CountingSources();
  std::vector<ContactInfo> before;
  auto edit = [&](bool exists, const std::vector<ContactInfo>& current,
                  std::vector<Edit>& edits) -> absl::Status {
    if (copy_before) before = current;
    return fn(exists, current, edits);
  };
  SIPD_ASSIGN_OR_RETURN(UpdateResult result, table.Update(aor, edit));
  if (CountingSources() && result.changed) CountSources(before, result.after.contacts);
  RaiseUpdate(table, aor, result, before);
  Applied applied{std::move(result), absl::OkStatus()};
  if (options_.db_mode == DbMode::kWriteThrough && mode == CommitMode::kLater) {
    // Even unchanged (a retransmission): its acknowledgment must follow the commit of
    // the state it reports, which may still be queued by another process.
    applied.commit_pending = true;
    return applied;
  }
  if (options_.db_mode == DbMode::kWriteThrough && applied.result.changed) {
    applied.persisted = Persist(table, std::span<const AorSnapshot>(&applied.result.after, 1),
                                /*force=*/false);
    if (!applied.persisted.ok()) {
      spdlog::error("usrloc: write-through of {} failed (the timer retries): {}", aor,
                    applied.persisted.ToString());
    }
  }
  return applied;
}

void Usrloc::RunTimer() {
  const int64_t now = Now();
  const bool db = options_.db_mode != DbMode::kNone;
  for (auto& table : tables_) {
    std::vector<AorSnapshot> unsynced;
    size_t expired = 0;
    auto flush = [&]() {
      if (unsynced.empty()) return;
      absl::Status s = Persist(*table, unsynced, /*force=*/false);
      if (!s.ok()) {
        spdlog::error("usrloc: table {}: writing {} AORs failed (retried next run): {}",
                      table->name(), unsynced.size(), s.ToString());
      }
      unsynced.clear();
    };
    // Copies of what expired, only when somebody listens to its events.
    const bool events = (events_ != nullptr && (events_->Wanted(event_ids_.aor_delete) ||
                                                events_->Wanted(event_ids_.contact_delete))) ||
                        CountingSources();
    std::vector<SweptAor> swept;
    for (uint32_t slot = 0; slot < table->size(); ++slot) {
      table->Sweep(slot, now, db ? &unsynced : nullptr, &expired, events ? &swept : nullptr);
      if (!swept.empty()) {
        if (CountingSources()) {
          for (const SweptAor& gone : swept) {
            for (const ContactInfo& c : gone.contacts) AddToSource(c, -1);
          }
        }
        if (events_ != nullptr) RaiseSwept(*table, swept);
        swept.clear();
      }
      if (unsynced.size() >= kSnapshotsPerTransaction) flush();
    }
    flush();
    if (expired > 0) spdlog::debug("usrloc: table {}: {} contacts expired", table->name(), expired);
  }
}

absl::Status Usrloc::SyncAor(LocationTable& table, std::string_view aor) {
  if (options_.db_mode == DbMode::kNone) {
    return absl::FailedPreconditionError("no database (db_mode 0)");
  }
  std::optional<AorSnapshot> snapshot = table.Get(aor);
  if (!snapshot.has_value()) return absl::NotFoundError("AOR not found");
  return Persist(table, std::span<const AorSnapshot>(&*snapshot, 1), /*force=*/true);
}

absl::Status Usrloc::SyncTable(LocationTable& table) {
  if (options_.db_mode == DbMode::kNone) {
    return absl::FailedPreconditionError("no database (db_mode 0)");
  }
  // Versions up to `start` were handed out before the pass: an AOR not met by the pass
  // and not written since is gone from memory, so its rows go too.
  const uint64_t start = shared_->version_clock.load(std::memory_order_relaxed);
  absl::flat_hash_set<std::string> seen;
  LocationTable::Cursor cursor;
  std::vector<AorSnapshot> chunk;
  while (!cursor.done) {
    chunk.clear();
    table.CopyChunk(cursor, kSnapshotsPerTransaction, /*with_contacts=*/true, chunk);
    SIPD_RETURN_IF_ERROR(Persist(table, chunk, /*force=*/true));
    for (AorSnapshot& s : chunk) seen.insert(std::move(s.aor));
  }
  return WithStore(
      [&](SqliteStore& store) { return store.DeleteAorsExcept(table.name(), seen, start); });
}

absl::Status Usrloc::ChildInit(int rank) {
  if (options_.db_mode == DbMode::kNone) return absl::OkStatus();
  // Open eagerly where writes happen on a hot path, so a broken database shows at
  // start-up rather than at the first REGISTER. Other processes open on first use.
  const bool writes =
      rank == kRankTimer || (rank >= kRankSipWorker && options_.db_mode == DbMode::kWriteThrough);
  if (!writes) return absl::OkStatus();
  return WithStore([](SqliteStore&) { return absl::OkStatus(); });
}

void Usrloc::Shutdown() {
  if (options_.db_mode == DbMode::kWriteBack && shared_ != nullptr) {
    RunTimer();
    spdlog::info("usrloc: write-back flush at shutdown done");
  }
  CloseStore();
}

// ---------------------------------------------------------------------------------------
// The module.

UsrlocModule::UsrlocModule() = default;
UsrlocModule::~UsrlocModule() = default;

namespace {

absl::StatusOr<int64_t> IntParam(std::string_view param, const ParamValue& value, int64_t min,
                                 int64_t max) {
  return ::sipd::IntParam("usrloc", param, value, min, max);
}

absl::StatusOr<std::string> StringParam(std::string_view param, const ParamValue& value) {
  const std::string* v = std::get_if<std::string>(&value);
  if (v == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("usrloc: parameter ", std::string(param), " must be a string"));
  }
  return *v;
}

}  // namespace

absl::Status UsrlocModule::SetParam(std::string_view param, const ParamValue& value) {
  if (param == "db_mode") {
    SIPD_ASSIGN_OR_RETURN(int64_t mode, IntParam(param, value, 0, 3));
    if (mode == 3) {
      return absl::InvalidArgumentError(
          "usrloc: db_mode 3 (DB only) is not supported by sipd; use 1 (write-through) or 2 "
          "(write-back)");
    }
    options_.db_mode = static_cast<DbMode>(mode);
  } else if (param == "use_domain") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 0, 1));
    options_.use_domain = v == 1;
  } else if (param == "hash_size") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 20));
    options_.hash_size = static_cast<int>(v);
  } else if (param == "max_contacts_per_source") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 0, 100000000));
    options_.max_contacts_per_source = static_cast<uint32_t>(v);
  } else if (param == "timer_interval") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 86400));
    options_.timer_interval = static_cast<int>(v);
  } else if (param == "db_url") {
    SIPD_ASSIGN_OR_RETURN(db_url_, StringParam(param, value));
  } else if (param == "db_synchronous") {
    SIPD_ASSIGN_OR_RETURN(std::string v, StringParam(param, value));
    if (absl::EqualsIgnoreCase(v, "normal")) {
      options_.synchronous = SqliteStore::Synchronous::kNormal;
    } else if (absl::EqualsIgnoreCase(v, "full")) {
      options_.synchronous = SqliteStore::Synchronous::kFull;
    } else {
      return absl::InvalidArgumentError(
          "usrloc: parameter db_synchronous must be \"normal\" or \"full\"");
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("usrloc: unknown parameter ", std::string(param)));
  }
  return absl::OkStatus();
}

absl::Status UsrlocModule::Init(Core& core) {
  // db_url: empty -> <run_dir>/usrloc.sqlite; "sqlite://PATH" or a plain PATH; relative
  // paths are relative to the run directory.
  std::string path = db_url_;
  if (absl::StartsWith(path, "sqlite://")) path = path.substr(9);
  if (path.empty()) path = "usrloc.sqlite";
  if (path[0] != '/') path = absl::StrCat(core.run_dir(), "/", path);
  options_.db_path = path;
  options_.add_timer = core.TimerRegistration();

  usrloc_ = std::make_unique<Usrloc>(options_, core.shm(), core.stats(), clock_);
  SIPD_RETURN_IF_ERROR(usrloc_->Start());
  SIPD_RETURN_IF_ERROR(usrloc_->LoadFromDatabase());
  SIPD_RETURN_IF_ERROR(RegisterMiCommands(*usrloc_, core.mi()));
  SIPD_RETURN_IF_ERROR(core.mi().AddHealthCheck(
      {"sipd.usrloc", [ul = usrloc_.get()] { return ul->CheckDatabase(); }}));
  if (options_.db_mode != DbMode::kNone) core.ReportListeners({{"usrloc", "sqlite", path}});
  if (core.events() != nullptr) SIPD_RETURN_IF_ERROR(usrloc_->PublishEvents(*core.events()));
  Usrloc* ul = usrloc_.get();
  if (options_.db_mode == DbMode::kWriteThrough) {
    // A UDP worker that has read every waiting datagram commits what it queued.
    AddSipIdleHandler([ul] { return ul->writer() != nullptr && ul->writer()->queued() > 0; },
                      [ul] { ul->writer()->TryLead(); });
  }
  core.AddTimer("ul-timer", std::chrono::seconds(options_.timer_interval),
                [ul] { ul->RunTimer(); });
  spdlog::info("usrloc: db_mode {}, use_domain {}, {} slots, timer every {} s{}",
               static_cast<int>(options_.db_mode), options_.use_domain ? 1 : 0,
               1u << options_.hash_size, options_.timer_interval,
               options_.db_mode == DbMode::kNone ? "" : absl::StrCat(", database ", path));
  return absl::OkStatus();
}

absl::Status UsrlocModule::ChildInit(int rank) {
  if (usrloc_ == nullptr) return absl::OkStatus();
  return usrloc_->ChildInit(rank);
}

void UsrlocModule::Shutdown() {
  if (usrloc_ != nullptr) usrloc_->Shutdown();
}

}  // namespace sipd::usrloc

namespace sipd {
std::unique_ptr<Module> NewUsrlocModule() { return std::make_unique<usrloc::UsrlocModule>(); }
}  // namespace sipd
