#include "sipd/modules/dialog/dialog.h"

#include <algorithm>
#include <charconv>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "registry/status_macros.h"
#include "sipd/api/module_params.h"
#include "sipd/modules/dialog/dlg_mi.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "spdlog/spdlog.h"

namespace sipd::dialog {
namespace {

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Dialogs the timer ends per run at most (the timer process also drives tm's timers).
constexpr size_t kMaxExpiredPerRun = 2000;

// The database writes this thread queued under a bucket lock (Sink::Changed), awaited
// by FinishWrites() once the lock is released.
thread_local std::vector<sqlite::GroupCommitWriter::Entry*> t_pending_writes;

// "did=HEX.HEX" as sipd puts it in its Record-Route.
std::optional<std::pair<uint32_t, uint32_t>> ParseDid(std::string_view value) {
  const size_t dot = value.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  uint32_t entry = 0;
  uint32_t id = 0;
  const char* b = value.data();
  const char* m = value.data() + dot;
  const char* e = value.data() + value.size();
  if (std::from_chars(b, m, entry, 16).ptr != m) return std::nullopt;
  if (std::from_chars(m + 1, e, id, 16).ptr != e) return std::nullopt;
  return std::make_pair(entry, id);
}

std::string JoinEntries(const std::vector<std::string_view>& entries) {
  std::string out;
  for (std::string_view e : entries) {
    if (!out.empty()) out += ",";
    out.append(e.data(), e.size());
  }
  return out;
}

// The first Contact URI of a message ("" if none).
std::string ContactOf(const tm::SipMessage& message) {
  absl::StatusOr<std::vector<tm::NameAddr>> contacts = message.Contacts();
  if (!contacts.ok() || contacts->empty() || (*contacts)[0].star) return {};
  return std::string((*contacts)[0].uri.text);
}

}  // namespace

struct Dialogs::Shared {
  std::atomic<uint64_t> version_clock{0};
  // A database write failed: the timer rewrites the table from memory.
  std::atomic<bool> needs_restore{false};
  // Unix time of the next write-back flush.
  std::atomic<int64_t> next_flush{0};
};

// Queues the database changes the table reports (under its bucket lock).
class Dialogs::Sink final : public ChangeSink {
 public:
  explicit Sink(Dialogs& owner) : owner_(owner) {}
  void Changed(const DialogInfo& dialog, bool removed) override {
    if (owner_.writer_ == nullptr) return;
    const std::string record = owner_.store_->Encode(dialog, removed);
    if (owner_.options_.db_mode == DbMode::kWriteThrough) {
      sqlite::GroupCommitWriter::Entry* ticket = owner_.writer_->Submit(owner_.client_, record);
      if (ticket != nullptr) {
        t_pending_writes.push_back(ticket);
        return;
      }
    } else if (owner_.writer_->Enqueue(owner_.client_, record).ok()) {
      return;
    }
    owner_.shared_->needs_restore.store(true);
  }

 private:
  Dialogs& owner_;
};

Dialogs::Dialogs(Options options, SharedMemory& shm, mi::StatsRegistry& stats, Clock clock)
    : options_(std::move(options)), shm_(shm), stats_(stats), clock_(std::move(clock)) {
  if (!clock_) clock_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
}

Dialogs::~Dialogs() { CloseDatabase(); }

absl::Status Dialogs::Start(std::shared_ptr<sqlite::GroupCommitWriter> writer) {
  try {
    shared_ = shm_.Construct<Shared>();
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("dialog: no shared memory: ", e.what()));
  }
  DialogTable::Counters counters;
  if (options_.enable_stats) {
    SIPD_ASSIGN_OR_RETURN(counters.active,
                          stats_.AddCounter("dialog", "active_dialogs", mi::kStatNoReset));
    SIPD_ASSIGN_OR_RETURN(counters.early,
                          stats_.AddCounter("dialog", "early_dialogs", mi::kStatNoReset));
    SIPD_ASSIGN_OR_RETURN(counters.processed, stats_.AddCounter("dialog", "processed_dialogs"));
    SIPD_ASSIGN_OR_RETURN(counters.expired, stats_.AddCounter("dialog", "expired_dialogs"));
    SIPD_ASSIGN_OR_RETURN(counters.failed, stats_.AddCounter("dialog", "failed_dialogs"));
    // Dialog replication (clustering) is not part of sipd: these stay 0.
    for (const char* name : {"create_sent", "update_sent", "delete_sent", "create_recv",
                             "update_recv", "delete_recv"}) {
      SIPD_RETURN_IF_ERROR(stats_.AddCounter("dialog", name).status());
    }
  }
  if (options_.db_mode != DbMode::kNone) {
    std::vector<std::string> names;
    for (const ProfileSpec& p : options_.profiles) names.push_back(p.name);
    store_ = std::make_unique<DialogStore>(std::move(names));
    sink_ = std::make_unique<Sink>(*this);
    if (writer == nullptr) {
      SIPD_ASSIGN_OR_RETURN(
          writer, sqlite::GroupCommitWriter::ForFile(
                      shm_, sqlite::GroupCommitWriter::Options{.path = options_.db_path,
                                                               .synchronous = options_.synchronous,
                                                               .add_timer = options_.add_timer}));
    }
    writer_ = std::move(writer);
    client_ = writer_->AddClient(store_.get());
  }
  SIPD_ASSIGN_OR_RETURN(
      table_, DialogTable::Create(shm_, options_.hash_size, &shared_->version_clock, counters,
                                  sink_.get(), options_.id_seed));
  shared_->next_flush.store(Now() + options_.db_update_period);
  return LoadFromDatabase();
}

void Dialogs::CloseDatabase() {
  if (writer_ != nullptr) writer_->CloseConnection();
}

absl::Status Dialogs::LoadFromDatabase() {
  if (writer_ == nullptr) return absl::OkStatus();
  std::vector<DialogInfo> rows;
  SIPD_RETURN_IF_ERROR(writer_->WithConnection([&](sqlite3* db) -> absl::Status {
    SIPD_ASSIGN_OR_RETURN(rows, store_->LoadAll(db));
    return absl::OkStatus();
  }));
  uint64_t max_version = 0;
  for (const DialogInfo& d : rows) max_version = std::max(max_version, d.version);
  shared_->version_clock.store(max_version);
  size_t loaded = 0;
  for (DialogInfo& d : rows) {
    const uint32_t old_entry = d.h_entry;
    const uint32_t old_id = d.h_id;
    absl::StatusOr<DialogInfo> linked = table_->Load(std::move(d));
    if (!linked.ok()) {
      spdlog::warn("dialog: dialog {}:{} from the database not loaded: {}", old_entry, old_id,
                   linked.status().ToString());
      continue;
    }
    ++loaded;
    if (linked->h_entry != old_entry || linked->h_id != old_id) {
      // New ids: replace the row.
      (void)writer_->WithConnection([&](sqlite3* db) -> absl::Status {
        SIPD_RETURN_IF_ERROR(sqlite::Exec(db, "BEGIN IMMEDIATE"));
        absl::Status s = store_->Apply(
            db, store_->Encode(DialogInfo{.h_entry = old_entry, .h_id = old_id}, true));
        if (s.ok()) s = store_->Apply(db, store_->Encode(*linked, false));
        (void)sqlite::Exec(db, s.ok() ? "COMMIT" : "ROLLBACK");
        return s;
      });
    }
  }
  spdlog::info("dialog: loaded {} confirmed dialogs from {}", loaded, writer_->path());
  return absl::OkStatus();
}

std::optional<uint16_t> Dialogs::FindProfile(std::string_view name) const {
  for (size_t i = 0; i < options_.profiles.size(); ++i) {
    if (options_.profiles[i].name == name) return static_cast<uint16_t>(i);
  }
  return std::nullopt;
}

void Dialogs::FinishWrites() {
  if (t_pending_writes.empty()) return;
  std::vector<sqlite::GroupCommitWriter::Entry*> pending;
  pending.swap(t_pending_writes);
  for (sqlite::GroupCommitWriter::Entry* ticket : pending) {
    absl::Status s = writer_->Await(ticket);
    if (!s.ok()) {
      spdlog::error("dialog: database write failed (the timer rewrites the table): {}",
                    s.ToString());
      shared_->needs_restore.store(true);
    }
  }
}

absl::StatusOr<DialogTable::Transition> Dialogs::Apply(uint32_t h_entry, uint32_t h_id,
                                                       const DialogTable::Event& event) {
  absl::StatusOr<DialogTable::Transition> t = table_->Apply(h_entry, h_id, event);
  FinishWrites();
  if (t.ok() && t->changed()) StateChanged(t->dialog, t->before, t->after);
  return t;
}

void Dialogs::StateChanged(const DialogInfo& dialog, DialogState before, DialogState after) {
  spdlog::debug("dialog: {}:{} {} state {} -> {}", dialog.h_entry, dialog.h_id, dialog.callid,
                static_cast<int>(before), static_cast<int>(after));
  if (events_ == nullptr || !events_->Wanted(state_changed_)) return;
  // A new dialog has no old state (kDeleted is how the table says "did not exist").
  const int old_state = before == DialogState::kDeleted && after == DialogState::kUnconfirmed
                            ? 0
                            : static_cast<int>(before);
  events_->Raise(
      state_changed_,
      {static_cast<int64_t>(dialog.h_entry), static_cast<int64_t>(dialog.h_id), dialog.callid,
       dialog.caller.tag,
       dialog.callee.has_value() ? std::string_view(dialog.callee->tag) : std::string_view(),
       old_state, static_cast<int>(after)});
}

absl::Status Dialogs::PublishEvents(mi::EventRegistry& events) {
  SIPD_ASSIGN_OR_RETURN(
      state_changed_,
      events.Publish({.name = "E_DLG_STATE_CHANGED",
                      .module = "dialog",
                      .help = "a dialog changed state (spec 8.2 states; 0 = new)",
                      .params = {{"hash_entry", "h_entry of the dialog"},
                                 {"hash_id", "h_id of the dialog"},
                                 {"callid", "the Call-ID"},
                                 {"from_tag", "the caller's tag"},
                                 {"to_tag", "the callee's tag (empty until known)"},
                                 {"old_state", "the state before (0 for a new dialog)"},
                                 {"new_state", "the state now (5 = ended)"}}}));
  events_ = &events;
  return absl::OkStatus();
}

std::string Dialogs::DidParam(const DialogInfo& dialog) const {
  return absl::StrCat("did=", absl::Hex(dialog.h_entry), ".", absl::Hex(dialog.h_id));
}

void Dialogs::AttachTm(tm::TmApi* tm) {
  tm_ = tm;
  tm->callbacks().OnRelay([this](tm::RequestEvent& e) { OnRelay(e); });
  tm->callbacks().OnReply([this](const tm::ReplyEvent& e) { OnReply(e); });
  tm->callbacks().OnEnd([this](const tm::EndEvent& e) { OnEnd(e); });
  bye_completion_ =
      tm->RegisterCompletion("dialog-bye", [](const tm::UacResult& r, std::string_view data) {
        spdlog::info("dialog: BYE for {} answered {} {}", data, r.code, r.reason);
      });
}

void Dialogs::OnRelay(tm::RequestEvent& event) {
  const tm::SipMessage& request = event.request();
  if (!request.defect().empty()) return;
  if (!event.in_dialog()) {
    if (request.method() != tm::Method::kInvite || !event.transaction().valid()) return;
    DialogInfo info;
    info.callid = std::string(request.call_id());
    info.from_uri = std::string(request.from().uri.text);
    info.to_uri = std::string(request.to().uri.text);
    info.caller.tag = std::string(request.from_tag());
    info.caller.contact = ContactOf(request);
    info.caller.cseq = request.cseq();
    info.caller.bind_addr = event.source().socket;
    absl::StatusOr<std::vector<tm::NameAddr>> rr = request.RecordRoutes();
    if (rr.ok()) {
      std::vector<std::string_view> entries;
      for (const tm::NameAddr& e : *rr) entries.push_back(e.text);
      info.caller.route_set = JoinEntries(entries);
    }
    const tm::Peer& src = event.source();
    const bool v6 = src.ip.find(':') != std::string::npos;
    info.caller_next_hop = absl::StrCat("sip:", v6 ? "[" : "", src.ip, v6 ? "]" : "", ":", src.port,
                                        src.proto == tm::Proto::kTcp ? ";transport=tcp" : "");
    if (!options_.profiles.empty()) {
      RequestValues values;
      values.from_uri = info.from_uri;
      values.to_uri = info.to_uri;
      values.ruri = std::string(request.request_uri());
      values.source_ip = src.ip;
      values.socket = src.socket;
      info.profiles = LinksFor(options_.profiles, values);
    }
    absl::StatusOr<DialogInfo> created = table_->Insert(std::move(info), Now());
    if (!created.ok()) {
      spdlog::warn("dialog: INVITE {} not tracked: {}", request.call_id(),
                   created.status().ToString());
      return;
    }
    event.set_cookie(created->id());
    event.AddRecordRouteParam(DidParam(*created));
    StateChanged(*created, DialogState::kDeleted, DialogState::kUnconfirmed);
    return;
  }
  // In-dialog: find the dialog by Call-ID and tags.
  std::optional<DialogTable::Match> match =
      table_->MatchRequest(request.call_id(), request.from_tag(), request.to_tag());
  if (!match.has_value()) return;
  DialogTable::Event e;
  e.now = Now();
  switch (request.method()) {
    case tm::Method::kAck:
      e.kind = DialogTable::Event::Kind::kAck;
      break;
    case tm::Method::kBye:
      e.kind = DialogTable::Event::Kind::kBye;
      break;
    default:
      e.kind = DialogTable::Event::Kind::kRequest;
      e.from_caller = match->from_caller;
      e.cseq = request.cseq();
      break;
  }
  (void)Apply(match->h_entry, match->h_id, e);
}

void Dialogs::OnReply(const tm::ReplyEvent& event) {
  if (event.cookie == 0 || event.local || event.method != tm::Method::kInvite) return;
  if (!event.forwarded || event.code <= 100) return;
  const auto h_entry = static_cast<uint32_t>(event.cookie >> 32);
  const auto h_id = static_cast<uint32_t>(event.cookie & 0xFFFFFFFFu);
  DialogTable::Event e;
  e.now = Now();
  if (event.code >= 300) {
    e.kind = DialogTable::Event::Kind::kFailed;
    (void)Apply(h_entry, h_id, e);
    return;
  }
  e.kind = event.code < 200 ? DialogTable::Event::Kind::kProvisional
                            : DialogTable::Event::Kind::kConfirmed;
  e.lifetime = options_.default_timeout;
  if (event.reply != nullptr && !event.reply->to_tag().empty()) {
    const tm::SipMessage& reply = *event.reply;
    LegInfo callee;
    callee.tag = std::string(reply.to_tag());
    callee.contact = ContactOf(reply);
    callee.cseq = reply.cseq();
    // The socket the 2xx came in on: dlg_list's callee_bind_addr, and where the BYE to
    // the callee leaves from.
    if (event.source != nullptr) callee.bind_addr = event.source->socket;
    // The 2xx's Record-Route lists the callee's side first, then sipd's own entries
    // (they carry our did), then the caller's side. Towards the callee, the route set
    // is the callee's side in reverse.
    absl::StatusOr<std::vector<tm::NameAddr>> rr = reply.RecordRoutes();
    if (rr.ok()) {
      const std::string did = absl::StrCat(absl::Hex(h_entry), ".", absl::Hex(h_id));
      std::vector<std::string_view> callee_side;
      for (const tm::NameAddr& entry : *rr) {
        std::optional<std::string_view> value = entry.uri.params.Get("did");
        if (value.has_value() && ParseDid(*value).has_value() &&
            absl::EqualsIgnoreCase(Absl(*value), did)) {
          break;
        }
        callee_side.push_back(entry.text);
      }
      if (callee_side.size() == rr->size()) callee_side.clear();  // ours not found
      std::reverse(callee_side.begin(), callee_side.end());
      callee.route_set = JoinEntries(callee_side);
    }
    e.callee = std::move(callee);
  }
  (void)Apply(h_entry, h_id, e);
}

void Dialogs::OnEnd(const tm::EndEvent& event) {
  if (event.cookie == 0 || event.local || event.method != tm::Method::kInvite) return;
  if (event.final_code >= 200 && event.final_code < 300) return;
  DialogTable::Event e;
  e.kind = DialogTable::Event::Kind::kFailed;
  e.now = Now();
  (void)Apply(static_cast<uint32_t>(event.cookie >> 32),
              static_cast<uint32_t>(event.cookie & 0xFFFFFFFFu), e);
}

absl::Status Dialogs::SendBye(const DialogInfo& d, bool to_caller, std::string_view extra_headers) {
  if (tm_ == nullptr) return absl::FailedPreconditionError("tm is not loaded");
  if (!d.callee.has_value()) return absl::FailedPreconditionError("no callee leg");
  const LegInfo& callee = *d.callee;
  const LegInfo& target = to_caller ? d.caller : callee;
  if (target.contact.empty()) return absl::FailedPreconditionError("no contact for the leg");
  tm::UacRequest r;
  r.method = "BYE";
  r.request_uri = target.contact;
  r.socket = target.bind_addr;
  if (to_caller && d.caller.route_set.empty()) r.next_hop = d.caller_next_hop;
  std::string headers;
  if (!target.route_set.empty()) absl::StrAppend(&headers, "Route: ", target.route_set, "\r\n");
  if (to_caller) {
    absl::StrAppend(&headers, "From: <", d.to_uri, ">;tag=", callee.tag, "\r\n", "To: <",
                    d.from_uri, ">;tag=", d.caller.tag, "\r\n", "CSeq: ", callee.cseq, " BYE\r\n");
  } else {
    absl::StrAppend(&headers, "From: <", d.from_uri, ">;tag=", d.caller.tag, "\r\n", "To: <",
                    d.to_uri, ">;tag=", callee.tag, "\r\n", "CSeq: ", d.caller.cseq, " BYE\r\n");
  }
  absl::StrAppend(&headers, "Call-ID: ", d.callid, "\r\nMax-Forwards: 70\r\n");
  if (!extra_headers.empty()) {
    headers.append(extra_headers.data(), extra_headers.size());
    if (!absl::EndsWith(headers, "\r\n")) {
      if (absl::EndsWith(headers, "\n")) headers.pop_back();
      headers += "\r\n";
    }
  }
  r.headers = std::move(headers);
  r.completion = bye_completion_;
  r.completion_data = absl::StrCat(d.h_entry, ":", d.h_id, to_caller ? " caller" : " callee");
  absl::StatusOr<tm::TransactionId> sent = tm_->SendRequest(r);
  if (absl::IsNotFound(sent.status()) && !r.socket.empty()) {
    // The socket the dialog used is gone (a restart with other listen sockets): any
    // socket of the protocol will do.
    spdlog::info("dialog: socket {} of {}:{} is gone; the BYE leaves from another one", r.socket,
                 d.h_entry, d.h_id);
    r.socket.clear();
    sent = tm_->SendRequest(r);
  }
  if (!sent.ok()) return sent.status();
  return absl::OkStatus();
}

int Dialogs::SendByes(const DialogInfo& dialog, std::string_view extra_headers) {
  int sent = 0;
  for (bool to_caller : {false, true}) {
    absl::Status s = SendBye(dialog, to_caller, extra_headers);
    if (s.ok()) {
      ++sent;
    } else {
      spdlog::warn("dialog: BYE to the {} of {}:{} ({}) not sent: {} (socket '{}')",
                   to_caller ? "caller" : "callee", dialog.h_entry, dialog.h_id, dialog.callid,
                   s.ToString(), to_caller ? dialog.caller.bind_addr : dialog.callee->bind_addr);
    }
  }
  return sent;
}

absl::Status Dialogs::EndDialog(uint32_t h_entry, uint32_t h_id, std::string_view extra_headers) {
  DialogTable::Event e;
  e.kind = DialogTable::Event::Kind::kTerminate;
  e.now = Now();
  SIPD_ASSIGN_OR_RETURN(DialogTable::Transition t, Apply(h_entry, h_id, e));
  if (SendByes(t.dialog, extra_headers) == 0) {
    return absl::UnavailableError("no BYE could be sent");
  }
  return absl::OkStatus();
}

void Dialogs::RunTimer() {
  const int64_t now = Now();
  std::vector<DialogTable::Transition> ended;
  for (uint32_t b = 0; b < table_->size() && ended.size() < kMaxExpiredPerRun; ++b) {
    table_->Expire(b, now, now - kSetupLimit, ended);
    FinishWrites();
  }
  for (const DialogTable::Transition& t : ended) {
    StateChanged(t.dialog, t.before, t.after);
    SendByes(t.dialog, {});
  }
  if (writer_ != nullptr) {
    if (options_.db_mode == DbMode::kWriteBack && now >= shared_->next_flush.load()) {
      shared_->next_flush.store(now + options_.db_update_period);
      absl::Status s = writer_->Flush();
      if (!s.ok()) shared_->needs_restore.store(true);
    }
    if (shared_->needs_restore.exchange(false)) {
      absl::Status s = RestoreDatabase();
      if (!s.ok()) {
        spdlog::error("dialog: rewriting the database failed (retried next run): {}", s.ToString());
        shared_->needs_restore.store(true);
      }
    }
  }
}

absl::Status Dialogs::RestoreDatabase() {
  if (writer_ == nullptr) return absl::FailedPreconditionError("no database (db_mode 0)");
  // What is queued goes first, so the rewrite is not undone by older records.
  (void)writer_->Flush();
  return writer_->WithConnection([&](sqlite3* db) -> absl::Status {
    std::vector<DialogInfo> dialogs;
    DialogTable::Cursor cursor;
    while (!cursor.done) {
      table_->CopyChunk(
          cursor, 256, [](const DialogInfo& d) { return d.confirmed(); }, dialogs);
    }
    return store_->ReplaceAll(db, dialogs);
  });
}

absl::Status Dialogs::SyncFromDatabase() {
  if (writer_ == nullptr) return absl::FailedPreconditionError("no database (db_mode 0)");
  (void)writer_->Flush();
  std::vector<DialogInfo> rows;
  SIPD_RETURN_IF_ERROR(writer_->WithConnection([&](sqlite3* db) -> absl::Status {
    SIPD_ASSIGN_OR_RETURN(rows, store_->LoadAll(db));
    return absl::OkStatus();
  }));
  for (DialogInfo& row : rows) {
    const uint32_t h_entry = row.h_entry;
    const uint32_t h_id = row.h_id;
    if (!table_->Get(h_entry, h_id).has_value()) {
      absl::StatusOr<DialogInfo> loaded = table_->Load(std::move(row));
      if (!loaded.ok() && !absl::IsAlreadyExists(loaded.status())) return loaded.status();
      continue;
    }
    absl::Status s = table_->MergeFromDatabase(row);
    FinishWrites();
    if (!s.ok() && !absl::IsNotFound(s)) return s;
  }
  return absl::OkStatus();
}

void Dialogs::Shutdown() {
  if (writer_ != nullptr && options_.db_mode == DbMode::kWriteBack) {
    absl::Status s = writer_->Flush();
    if (!s.ok()) spdlog::error("dialog: write-back flush at shutdown failed: {}", s.ToString());
  }
  CloseDatabase();
}

// ---------------------------------------------------------------------------------------
// The module.

DialogModule::DialogModule() = default;
DialogModule::~DialogModule() = default;

namespace {

absl::StatusOr<int64_t> IntParam(std::string_view param, const ParamValue& value, int64_t min,
                                 int64_t max) {
  return ::sipd::IntParam("dialog", param, value, min, max);
}

absl::StatusOr<std::string> StringParam(std::string_view param, const ParamValue& value) {
  const std::string* v = std::get_if<std::string>(&value);
  if (v == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("dialog: parameter ", Absl(param), " must be a string"));
  }
  return *v;
}

}  // namespace

absl::Status DialogModule::SetParam(std::string_view param, const ParamValue& value) {
  if (param == "hash_size") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 1 << 20));
    options_.hash_size = static_cast<uint32_t>(v);
  } else if (param == "default_timeout") {
    SIPD_ASSIGN_OR_RETURN(options_.default_timeout, IntParam(param, value, 1, 365 * 86400));
  } else if (param == "enable_stats") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 0, 1));
    options_.enable_stats = v == 1;
  } else if (param == "db_mode") {
    SIPD_ASSIGN_OR_RETURN(int64_t mode, IntParam(param, value, 0, 3));
    if (mode == 3) {
      return absl::InvalidArgumentError(
          "dialog: db_mode 3 (write at shutdown only) is not supported by sipd; use 1 "
          "(write-through) or 2 (write-back)");
    }
    options_.db_mode = static_cast<DbMode>(mode);
  } else if (param == "db_url") {
    SIPD_ASSIGN_OR_RETURN(db_url_, StringParam(param, value));
    db_url_set_ = true;
  } else if (param == "db_update_period") {
    SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 86400));
    options_.db_update_period = static_cast<int>(v);
  } else if (param == "db_synchronous") {
    SIPD_ASSIGN_OR_RETURN(std::string v, StringParam(param, value));
    if (absl::EqualsIgnoreCase(v, "normal")) {
      options_.synchronous = sqlite::Synchronous::kNormal;
    } else if (absl::EqualsIgnoreCase(v, "full")) {
      options_.synchronous = sqlite::Synchronous::kFull;
    } else {
      return absl::InvalidArgumentError(
          "dialog: parameter db_synchronous must be \"normal\" or \"full\"");
    }
  } else if (param == "profiles_with_value" || param == "profiles_no_value") {
    SIPD_ASSIGN_OR_RETURN(std::string v, StringParam(param, value));
    // With-value profiles are listed first (list_all_profiles), whatever the order of
    // the two modparams.
    std::vector<ProfileSpec> with;
    std::vector<ProfileSpec> without;
    for (ProfileSpec& p : options_.profiles) (p.has_value ? with : without).push_back(p);
    std::vector<ProfileSpec> all = with;
    all.insert(all.end(), without.begin(), without.end());
    const bool with_value = param == "profiles_with_value";
    std::vector<ProfileSpec> parsed = all;
    SIPD_RETURN_IF_ERROR(ParseProfiles(v, with_value, parsed));
    std::vector<ProfileSpec> added(parsed.begin() + static_cast<long>(all.size()), parsed.end());
    (with_value ? with : without)
        .insert((with_value ? with : without).end(), added.begin(), added.end());
    options_.profiles = with;
    options_.profiles.insert(options_.profiles.end(), without.begin(), without.end());
  } else {
    return absl::InvalidArgumentError(absl::StrCat("dialog: unknown parameter ", Absl(param)));
  }
  return absl::OkStatus();
}

absl::Status DialogModule::Init(Core& core) {
  tm::TmApi* tm = tm::FindTmApi(core);
  if (tm == nullptr) {
    return absl::FailedPreconditionError(
        "dialog: module tm is not loaded (loadmodule \"tm\" before \"dialog\")");
  }
  if (options_.db_mode != DbMode::kNone) {
    std::string path = db_url_;
    if (absl::StartsWith(path, "sqlite://")) path = path.substr(9);
    if (!db_url_set_ || path.empty()) {
      path = "dialog.sqlite";
      // One file and one group-commit writer with usrloc, when usrloc keeps a database.
      if (auto* ul = dynamic_cast<usrloc::UsrlocModule*>(core.FindModule("usrloc"));
          ul != nullptr && ul->initialized() &&
          ul->usrloc().options().db_mode != usrloc::DbMode::kNone) {
        path = ul->usrloc().options().db_path;
      }
    }
    if (path[0] != '/') path = absl::StrCat(core.run_dir(), "/", path);
    options_.db_path = path;
    options_.add_timer = core.TimerRegistration();
  }
  dialogs_ = std::make_unique<Dialogs>(options_, core.shm(), core.stats(), clock_);
  SIPD_RETURN_IF_ERROR(dialogs_->Start());
  dialogs_->AttachTm(tm);
  if (core.events() != nullptr) SIPD_RETURN_IF_ERROR(dialogs_->PublishEvents(*core.events()));
  SIPD_RETURN_IF_ERROR(RegisterMiCommands(*dialogs_, core.mi()));
  if (options_.db_mode != DbMode::kNone) {
    core.ReportListeners({{"dialog", "sqlite", options_.db_path}});
    // No connection may cross the fork.
    dialogs_->CloseDatabase();
  }
  Dialogs* d = dialogs_.get();
  core.AddTimer("dlg-timer", std::chrono::seconds(1), [d] { d->RunTimer(); });
  spdlog::info(
      "dialog: {} buckets, default_timeout {} s, {} profiles, db_mode {}{}", options_.hash_size,
      options_.default_timeout, options_.profiles.size(), static_cast<int>(options_.db_mode),
      options_.db_mode == DbMode::kNone ? "" : absl::StrCat(", database ", options_.db_path));
  return absl::OkStatus();
}

absl::Status DialogModule::ChildInit(int) { return absl::OkStatus(); }

void DialogModule::Shutdown() {
  if (dialogs_ != nullptr) dialogs_->Shutdown();
}

}  // namespace sipd::dialog

namespace sipd {
std::unique_ptr<Module> NewDialogModule() { return std::make_unique<dialog::DialogModule>(); }
}  // namespace sipd
