// dialog: tracks every INVITE dialog sipd relays (OpenSIPS 1.11's dialog module without
// a script), its profiles, its persistence in SQLite, and the dlg_* / profile_* MI
// commands (spec 8.2) and the `dialog` statistics (spec 7.5).
//
// What it watches (through tm's callbacks, sipd/modules/tm/tm_api.h):
//   initial INVITE relayed      -> a dialog in state 1 (unconfirmed); the transaction's
//                                  cookie is the dialog id, sipd's Record-Route gets
//                                  ";did=HEX_ENTRY.HEX_ID"; profiles are joined
//   101-199 relayed upstream    -> 2 (early); a To-tag makes the callee leg known
//   2xx relayed upstream        -> 3 (confirmed, no ACK yet): start time, timeout =
//                                  now + default_timeout, the callee leg (To-tag, Contact,
//                                  its route set from the 2xx's Record-Route)
//   non-2xx final upstream, or the INVITE transaction ends without a 2xx
//                               -> ended (failed_dialogs)
//   ACK for the 2xx             -> 4 (confirmed)
//   in-dialog request           -> its sender's CSeq is remembered
//   BYE from either side        -> ended
//   default_timeout passes, or dlg_end_dlg
//                               -> ended; sipd sends BYE to both sides itself (through
//                                  tm, with each leg's CSeq + 1 and route set)
// In-dialog requests are matched on Call-ID and tags. A dialog that stays unconfirmed
// for kSetupLimit (10 min; tm ends the INVITE long before) is dropped as failed.
//
// modparams (OpenSIPS names where they exist):
//   hash_size            buckets of the dialog table (4096)
//   default_timeout      seconds a confirmed dialog may last (43200)
//   enable_stats         0|1: the `dialog` statistics group (1)
//   db_mode              0 none, 1 write-through (every change committed before the SIP
//                        worker goes on), 2 write-back (changes committed every
//                        db_update_period seconds); 3 is refused
//   db_url               SQLite file ("sqlite://PATH" or PATH, relative to run_dir);
//                        default: usrloc's database when usrloc keeps one (one file,
//                        one group-commit writer), else dialog.sqlite
//   db_update_period     seconds between write-back flushes (60)
//   db_synchronous       "normal" | "full" (as usrloc)
//   profiles_with_value, profiles_no_value   see profiles.h
// Only confirmed dialogs are in the database; they are loaded at start-up, so a restart
// keeps them (their timeouts go on; BYEs still work since nothing of them lived in
// another process's memory only).
//
// Processes: the table is in shared memory (dialog_table.h); the callbacks run in the SIP
// worker that meets the event, the timer ("dlg-timer", every second: timeouts,
// write-back, repairs) in the timer process, MI commands in the MI processes. No lock
// is held while a BYE is sent or a database commit is awaited.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "registry/events.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/shm.h"
#include "sipd/modules/dialog/dialog_info.h"
#include "sipd/modules/dialog/dialog_store.h"
#include "sipd/modules/dialog/dialog_table.h"
#include "sipd/modules/dialog/profiles.h"
#include "sipd/modules/sqlite/group_commit.h"
#include "sipd/modules/tm/tm_api.h"

namespace sipd::dialog {

enum class DbMode { kNone = 0, kWriteThrough = 1, kWriteBack = 2 };

// An unconfirmed/early dialog older than this is dropped (its INVITE is long gone).
inline constexpr int64_t kSetupLimit = 600;

struct Options {
  uint32_t hash_size = 4096;
  int64_t default_timeout = 43200;
  bool enable_stats = true;
  DbMode db_mode = DbMode::kNone;
  std::string db_path;
  int db_update_period = 60;
  sqlite::Synchronous synchronous = sqlite::Synchronous::kNormal;
  std::vector<ProfileSpec> profiles;
  // Where the database writer schedules its maintenance (the daemon's AddTimer; see
  // sqlite::GroupCommitWriter::Options::add_timer). Unset in tests.
  sqlite::AddTimerFn add_timer;
  // Tests: the first h_ids of the buckets (0 = random).
  uint64_t id_seed = 0;
};

// The dialog service: table, profiles, persistence, and what tm's callbacks and the MI
// commands do with them.
class Dialogs {
 public:
  // Unix time in seconds (injectable for tests).
  using Clock = std::function<int64_t()>;

  Dialogs(Options options, SharedMemory& shm, mi::StatsRegistry& stats, Clock clock = {});
  ~Dialogs();
  Dialogs(const Dialogs&) = delete;
  Dialogs& operator=(const Dialogs&) = delete;

  // Shared state, statistics, the table; in DB modes the writer (`writer` if given,
  // else one of its own for options.db_path) and the dialogs of the database.
  // REQUIRES: attendant, before the fork.
  absl::Status Start(std::shared_ptr<sqlite::GroupCommitWriter> writer = nullptr);
  // Registers the tm callbacks and the BYE completion. REQUIRES: Init time.
  void AttachTm(tm::TmApi* tm);
  // Publishes E_DLG_STATE_CHANGED (hash_entry, hash_id, callid, from_tag, to_tag,
  // old_state, new_state; old_state 0 for a new dialog) and raises it from then on, in
  // whichever process changes a dialog, after the bucket lock is released.
  // REQUIRES: attendant, before the fork.
  absl::Status PublishEvents(mi::EventRegistry& events);

  // tm callbacks.
  void OnRelay(tm::RequestEvent& event);
  void OnReply(const tm::ReplyEvent& event);
  void OnEnd(const tm::EndEvent& event);

  // dlg_end_dlg: ends a confirmed dialog and sends BYE to both sides. NotFound (no such
  // dialog), FailedPrecondition (not confirmed), Unavailable (no BYE could be sent;
  // the dialog is ended anyway).
  absl::Status EndDialog(uint32_t h_entry, uint32_t h_id, std::string_view extra_headers);

  // Timer work: timeouts (with BYEs), stale setups, write-back flush, database repair.
  void RunTimer();

  // dlg_db_sync: merges the database into memory (unknown dialogs are loaded; a known
  // dialog takes the database's state, timeout and CSeqs when they are newer).
  // FailedPrecondition without a database.
  absl::Status SyncFromDatabase();
  // dlg_restore_db: rewrites the database from the confirmed dialogs in memory.
  absl::Status RestoreDatabase();

  const Options& options() const { return options_; }
  int64_t Now() const { return clock_(); }
  DialogTable& table() { return *table_; }
  const std::vector<ProfileSpec>& profiles() const { return options_.profiles; }
  // Index of profile `name`, or nullopt.
  std::optional<uint16_t> FindProfile(std::string_view name) const;
  sqlite::GroupCommitWriter* writer() const { return writer_.get(); }

  // Before the fork (attendant): no database connection may cross it.
  void CloseDatabase();
  // Attendant, after every child has exited: write-back flushes what is left.
  void Shutdown();

 private:
  struct Shared;
  class Sink;

  // Waits for the database writes this thread queued while it held a bucket lock.
  void FinishWrites();
  absl::StatusOr<DialogTable::Transition> Apply(uint32_t h_entry, uint32_t h_id,
                                                const DialogTable::Event& event);
  // Sends BYE on both legs of an ended dialog. Returns how many went out.
  int SendByes(const DialogInfo& dialog, std::string_view extra_headers);
  absl::Status SendBye(const DialogInfo& dialog, bool to_caller, std::string_view extra_headers);
  absl::Status LoadFromDatabase();
  // Every state change passes here (E_DLG_STATE_CHANGED).
  void StateChanged(const DialogInfo& dialog, DialogState before, DialogState after);
  std::string DidParam(const DialogInfo& dialog) const;

  Options options_;
  SharedMemory& shm_;
  mi::StatsRegistry& stats_;
  Clock clock_;
  Shared* shared_ = nullptr;
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<DialogTable> table_;
  std::unique_ptr<DialogStore> store_;
  std::shared_ptr<sqlite::GroupCommitWriter> writer_;
  int client_ = -1;
  tm::TmApi* tm_ = nullptr;
  uint32_t bye_completion_ = 0;
  mi::EventRegistry* events_ = nullptr;
  mi::EventId state_changed_ = mi::kNoEvent;
};

// The `dialog` module (modparams above). Needs `tm` loaded before it.
class DialogModule : public Module {
 public:
  DialogModule();
  ~DialogModule() override;
  std::string_view name() const override { return "dialog"; }
  absl::Status SetParam(std::string_view param, const ParamValue& value) override;
  absl::Status Init(Core& core) override;
  absl::Status ChildInit(int rank) override;
  void Shutdown() override;

  // REQUIRES: Init() succeeded.
  Dialogs& dialogs() { return *dialogs_; }
  // Tests: the clock of the service created in Init().
  void set_clock(Dialogs::Clock clock) { clock_ = std::move(clock); }

 private:
  Options options_;
  std::string db_url_;
  bool db_url_set_ = false;
  Dialogs::Clock clock_;
  std::unique_ptr<Dialogs> dialogs_;
};

}  // namespace sipd::dialog

namespace sipd {
// The factory of the module list (sipd/module_list.cc).
std::unique_ptr<Module> NewDialogModule();
}  // namespace sipd
