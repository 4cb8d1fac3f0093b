#include "sipd/modules/siptrace/siptrace.h"

#include <sqlite3.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "registry/events.h"
#include "registry/status_macros.h"
#include "sipd/core/shm.h"
#include "sipd/modules/sqlite/statement.h"
#include "sipd/modules/tm/sip_message.h"
#include "sipd/modules/tm/tm_api.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

using mi::Call;
using Arity = mi::ParamSpec::Arity;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS sip_trace (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time_stamp INTEGER NOT NULL,
  time_us INTEGER NOT NULL,
  callid TEXT NOT NULL,
  traced_user TEXT NOT NULL,
  msg TEXT NOT NULL,
  method TEXT NOT NULL,
  status TEXT NOT NULL,
  fromip TEXT NOT NULL,
  toip TEXT NOT NULL,
  fromtag TEXT NOT NULL,
  direction TEXT NOT NULL
);
)sql";

constexpr const char* kInsert =
    "INSERT INTO sip_trace (time_stamp, time_us, callid, traced_user, msg, method, status, "
    "fromip, toip, fromtag, direction) VALUES (?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?)";

struct Flags {
  std::atomic<bool> on{false};
  std::atomic<bool> to_database{true};
  std::atomic<bool> database_ok{false};
};

class SiptraceModule final : public Module, public tm::Tracer {
 public:
  ~SiptraceModule() override { Close(); }
  std::string_view name() const override { return "siptrace"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    if (param == "trace_on") {
      const int64_t* n = std::get_if<int64_t>(&value);
      if (n == nullptr || (*n != 0 && *n != 1)) {
        return absl::InvalidArgumentError("siptrace: trace_on must be 0 or 1");
      }
      trace_on_ = *n == 1;
      return absl::OkStatus();
    }
    if (param == "db_path") {
      const std::string* s = std::get_if<std::string>(&value);
      if (s == nullptr || s->empty()) {
        return absl::InvalidArgumentError("siptrace: db_path must be a file name");
      }
      db_path_ = *s;
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrCat("siptrace: unknown parameter ", std::string(param)));
  }

  absl::Status Init(Core& core) override {
    tm::TmApi* tm = tm::FindTmApi(core);
    if (tm == nullptr) {
      return absl::FailedPreconditionError(
          "siptrace: module tm is required (loadmodule \"tm\" before \"siptrace\")");
    }
    if (db_path_.empty()) db_path_ = core.run_dir() + "/siptrace.sqlite";
    flags_ = core.shm().Construct<Flags>();
    flags_->on.store(trace_on_);
    SIPD_ASSIGN_OR_RETURN(traced_requests_, core.stats().AddCounter("siptrace", "traced_requests"));
    SIPD_ASSIGN_OR_RETURN(traced_replies_, core.stats().AddCounter("siptrace", "traced_replies"));
    // The table is created now, in the attendant, so a bad path fails start-up; the
    // connection is closed before the fork.
    absl::Status opened = Open();
    Close();
    if (!opened.ok()) return opened;
    flags_->database_ok.store(true);
    core.ReportListeners({Listener{"siptrace", "sqlite", db_path_}});
    if (mi::EventRegistry* events = core.events(); events != nullptr) {
      SIPD_ASSIGN_OR_RETURN(
          trace_event_,
          events->Publish({.name = "E_SIP_TRACE",
                           .module = "siptrace",
                           .help = "a SIP message tm received or sent while sip_trace is on",
                           .params = {{"callid", "the Call-ID"},
                                      {"method", "the request's method, or the CSeq method"},
                                      {"status", "the reply's code (empty for a request)"},
                                      {"fromip", "proto:IP:PORT of the sender"},
                                      {"toip", "proto:IP:PORT of the receiver"},
                                      {"fromtag", "the From tag"},
                                      {"direction", "in or out (seen from sipd)"},
                                      {"msg", "the message (cut at 8 KB)"}},
                           // Whole SIP messages (credentials, bodies, addresses of
                           // everybody): for administrators only, as E_MI_AUDIT.
                           .required_role = mi::Role::kAdmin}));
      events_ = events;
    }
    tm->SetTracer(this);

    auto flag_command = [this](std::string name, std::atomic<bool> Flags::*flag) {
      return mi::Command::Spec{
          .name = std::move(name),
          .module = "siptrace",
          .params = {{"state", Arity::kOptional, "on or off"}},
          .flags = mi::kMutating,
          .handler = [this, flag](Call& call) {
            if (call.arg_count() == 0) {
              call.reply().root.AddKid("", (flags_->*flag).load() ? "on" : "off");
              return absl::OkStatus();
            }
            const std::string state = absl::AsciiStrToLower(call.arg(0));
            if (state != "on" && state != "off") {
              call.reply() = mi::Reply::Error(400, mi::kReasonBadParameter);
              return absl::OkStatus();
            }
            if (flag == &Flags::to_database && state == "on" && !flags_->database_ok.load()) {
              call.reply() = mi::Reply::Error(501, mi::kReasonInternalError);
              return absl::OkStatus();
            }
            (flags_->*flag).store(state == "on");
            return absl::OkStatus();
          }};
    };
    SIPD_RETURN_IF_ERROR(core.mi().Register(flag_command("sip_trace", &Flags::on)));
    SIPD_RETURN_IF_ERROR(
        core.mi().Register(flag_command("trace_to_database", &Flags::to_database)));
    spdlog::info("siptrace: {} into {}", trace_on_ ? "tracing" : "not tracing", db_path_);
    return absl::OkStatus();
  }

  // --- tm::Tracer ---
  bool enabled() const override {
    return flags_ != nullptr && flags_->on.load(std::memory_order_relaxed) &&
           (flags_->to_database.load(std::memory_order_relaxed) || EventWanted());
  }

  void Trace(const tm::TraceRecord& r) override {
    auto message = tm::SipMessage::Parse(r.bytes);
    const bool request = message.ok() && message->is_request();
    std::string_view call_id = message.ok() ? message->call_id() : std::string_view();
    std::string_view from_tag = message.ok() ? message->from_tag() : std::string_view();
    std::string method;
    std::string status;
    if (message.ok()) {
      if (request) {
        method = std::string(message->method_text());
      } else {
        method = std::string(message->cseq_method_text());
        status = absl::StrCat(message->status());
      }
    }
    const std::string proto(tm::ProtoName(r.proto));
    const std::string peer = absl::StrCat(proto, ":", r.peer_ip, ":", r.peer_port);
    const std::string local = absl::StrCat(proto, ":", r.local_ip, ":", r.local_port);
    const std::string_view from = r.incoming ? peer : local;
    const std::string_view to = r.incoming ? local : peer;
    const std::string_view direction = r.incoming ? "in" : "out";
    bool traced = false;
    if (EventWanted()) {
      // The event queue takes at most 16 KB per event: a huge message is cut.
      constexpr size_t kMaxEventMessage = 8192;
      events_->Raise(trace_event_, {call_id, method, status, from, to, from_tag, direction,
                                    r.bytes.substr(0, kMaxEventMessage)});
      traced = true;
    }
    if (flags_->to_database.load(std::memory_order_relaxed)) {
      traced = Insert(r.bytes, call_id, method, status, from, to, from_tag, direction) || traced;
    }
    if (traced) (request ? traced_requests_ : traced_replies_).Inc();
  }

 private:
  bool EventWanted() const { return events_ != nullptr && events_->Wanted(trace_event_); }

  // One row of sip_trace; false if it could not be written (logged).
  bool Insert(std::string_view bytes, std::string_view call_id, std::string_view method,
              std::string_view status, std::string_view from, std::string_view to,
              std::string_view from_tag, std::string_view direction) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pid_ != getpid()) {
      Close();  // inherited from the parent: never use it
      pid_ = getpid();
      if (absl::Status s = Open(); !s.ok()) {
        spdlog::error("siptrace: {}", std::string(s.message()));
        Close();
        return false;
      }
    }
    if (insert_ == nullptr) return false;
    timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    sqlite3_reset(insert_);
    sqlite3_bind_int64(insert_, 1, now.tv_sec);
    sqlite3_bind_int64(insert_, 2, now.tv_nsec / 1000);
    // Bound without copies: the step below runs while the caller's bytes live.
    using sqlite::BindText;
    BindText(insert_, 3, call_id);
    BindText(insert_, 4, bytes);
    BindText(insert_, 5, method);
    BindText(insert_, 6, status);
    BindText(insert_, 7, from);
    BindText(insert_, 8, to);
    BindText(insert_, 9, from_tag);
    BindText(insert_, 10, direction);
    if (sqlite3_step(insert_) != SQLITE_DONE) {
      spdlog::warn("siptrace: insert failed: {}", sqlite3_errmsg(db_));
      return false;
    }
    return true;
  }

  absl::Status Open() {
    if (sqlite3_open_v2(db_path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        nullptr) != SQLITE_OK) {
      return absl::UnavailableError(absl::StrCat("siptrace: cannot open ", db_path_, ": ",
                                                 db_ != nullptr ? sqlite3_errmsg(db_) : "?"));
    }
    sqlite3_busy_timeout(db_, 1000);
    char* error = nullptr;
    const std::string setup =
        absl::StrCat("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;", kSchema);
    if (sqlite3_exec(db_, setup.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      const std::string why = error != nullptr ? error : "?";
      sqlite3_free(error);
      return absl::UnavailableError(absl::StrCat("siptrace: ", db_path_, ": ", why));
    }
    if (sqlite3_prepare_v2(db_, kInsert, -1, &insert_, nullptr) != SQLITE_OK) {
      return absl::UnavailableError(
          absl::StrCat("siptrace: ", db_path_, ": ", sqlite3_errmsg(db_)));
    }
    return absl::OkStatus();
  }

  void Close() {
    if (insert_ != nullptr) sqlite3_finalize(insert_);
    insert_ = nullptr;
    if (db_ != nullptr) sqlite3_close(db_);
    db_ = nullptr;
  }

  bool trace_on_ = false;
  std::string db_path_;
  Flags* flags_ = nullptr;
  mi::EventRegistry* events_ = nullptr;
  mi::EventId trace_event_ = -1;
  mi::Counter traced_requests_;
  mi::Counter traced_replies_;
  std::mutex mutex_;  // process-local: the connection is used by one thread at a time
  pid_t pid_ = 0;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
};

}  // namespace

std::unique_ptr<Module> NewSiptraceModule() { return std::make_unique<SiptraceModule>(); }

}  // namespace sipd
