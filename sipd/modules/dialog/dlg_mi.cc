#include "sipd/modules/dialog/dlg_mi.h"

#include <time.h>

#include <charconv>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sipd/modules/dialog/dialog.h"
#include "sipd/modules/dialog/dialog_typed.h"

namespace sipd::dialog {
namespace {

using mi::Call;
using mi::Command;
using mi::Node;
using mi::ParamSpec;
using mi::Reply;
using Arity = ParamSpec::Arity;

// Dialogs per flush (spec 1.7, 8.2).
constexpr uint64_t kDialogsPerFlush = 50;

// Reply texts of spec 8.2.
constexpr std::string_view kInvalidCallId = "Invalid Call-ID specified";
constexpr std::string_view kNoSuchDialog = "No such dialog";
constexpr std::string_view kDialogNotFound = "Requested Dialog not found";
constexpr std::string_view kOperationFailed = "Operation failed";
constexpr std::string_view kNoDbSync = "Cannot sync in no-db mode";
constexpr std::string_view kSyncFailed = "Sync mem with DB failed";
constexpr std::string_view kNoDbRestore = "Cannot restore db in no-db mode!";
constexpr std::string_view kRestoreFailed = "Restore dlg DB failed!";
constexpr std::string_view kProfileNotFound = "Profile not found";
constexpr std::string_view kWithoutValue = "WITHOUT VALUE";

void SetError(Call& call, uint32_t code, std::string_view reason) {
  call.reply() = Reply::Error(code, reason);
}

std::optional<uint64_t> ParseU64(std::string_view text, int base = 10) {
  uint64_t v = 0;
  if (text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// Decimal or 0x-hex (dlg_end_dlg's h_id).
std::optional<uint64_t> ParseDecimalOrHex(std::string_view text) {
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
    return ParseU64(text.substr(2), 16);
  }
  return ParseU64(text);
}

// Streams dialog nodes, 50 per part: the whole table, a page of it, or the dialogs of
// a profile. Holds a cursor between parts, never a lock.
class DialogListProducer final : public mi::ReplyProducer {
 public:
  using Filter = std::function<bool(const DialogChunk&, const DialogChunk::Dialog&)>;
  DialogListProducer(Dialogs& dialogs, bool with_context, Filter filter, uint64_t skip,
                     uint64_t limit)
      : dialogs_(dialogs),
        with_context_(with_context),
        filter_(std::move(filter)),
        skip_(skip),
        limit_(limit) {}

  absl::StatusOr<bool> Next(Call& call) override {
    auto accept = [this](const DialogChunk& chunk, const DialogChunk::Dialog& d) {
      if (filter_ && !filter_(chunk, d)) return false;
      if (skipped_ < skip_) {
        ++skipped_;
        return false;
      }
      return true;
    };
    while (!cursor_.done && emitted_ < limit_) {
      chunk_.clear();
      const uint64_t want =
          std::min(kDialogsPerFlush - emitted_ % kDialogsPerFlush, limit_ - emitted_);
      dialogs_.table().CopyChunk(cursor_, want, accept, chunk_);
      for (const DialogChunk::Dialog& d : chunk_.dialogs()) {
        AppendDialogNode(call.reply().root, chunk_, d, with_context_, dialogs_.profiles());
      }
      emitted_ += chunk_.size();
      if (!chunk_.empty() && emitted_ % kDialogsPerFlush == 0) return false;  // flush point
    }
    return true;
  }

 private:
  Dialogs& dialogs_;
  const bool with_context_;
  const Filter filter_;
  const uint64_t skip_;
  const uint64_t limit_;
  uint64_t skipped_ = 0;
  uint64_t emitted_ = 0;
  DialogTable::Cursor cursor_;
  DialogChunk chunk_;
};

absl::Status DlgList(Dialogs& dialogs, Call& call, bool with_context) {
  Reply& reply = call.reply();
  reply.root.is_array = true;
  if (call.arg_count() == 0) {
    call.StreamWith(std::make_unique<DialogListProducer>(dialogs, with_context, nullptr, 0,
                                                         std::numeric_limits<uint64_t>::max()));
    return absl::OkStatus();
  }
  if (call.arg_count() == 2) {
    std::optional<uint64_t> index = ParseU64(call.arg(0));
    std::optional<uint64_t> count = ParseU64(call.arg(1));
    if (index.has_value() && count.has_value()) {
      // A numeric Call-ID with a numeric From-tag is taken as paging (spec 8.2).
      reply.root.AddKid("dlg_counter", absl::StrCat(dialogs.table().count()));
      call.StreamWith(
          std::make_unique<DialogListProducer>(dialogs, with_context, nullptr, *index, *count));
      return absl::OkStatus();
    }
  }
  const std::string& callid = call.arg(0);
  if (callid.empty()) {
    SetError(call, 400, kInvalidCallId);
    return absl::OkStatus();
  }
  const std::string from_tag = call.arg_count() == 2 ? call.arg(1) : std::string();
  std::optional<DialogInfo> d = dialogs.table().FindByCallId(callid, from_tag);
  if (!d.has_value() || !d->live()) {
    SetError(call, 404, kNoSuchDialog);
    return absl::OkStatus();
  }
  DialogChunk one;
  one.Add(*d);
  AppendDialogNode(reply.root, one, one.dialogs()[0], with_context, dialogs.profiles());
  return absl::OkStatus();
}

absl::Status DlgEndDlg(Dialogs& dialogs, Call& call) {
  std::optional<uint64_t> first = ParseU64(call.arg(0));
  if (!first.has_value()) {
    SetError(call, 400, mi::kReasonBadParameter);
    return absl::OkStatus();
  }
  uint32_t h_entry = 0;
  uint32_t h_id = 0;
  std::string extra;
  std::optional<uint64_t> second =
      call.arg_count() >= 2 ? ParseDecimalOrHex(call.arg(1)) : std::nullopt;
  if (second.has_value()) {
    if (*first > 0xFFFFFFFFu || *second > 0xFFFFFFFFu) {
      SetError(call, 400, mi::kReasonBadParameter);
      return absl::OkStatus();
    }
    h_entry = static_cast<uint32_t>(*first);
    h_id = static_cast<uint32_t>(*second);
    if (call.arg_count() == 3) extra = call.arg(2);
  } else {
    if (call.arg_count() == 3) {
      SetError(call, 400, mi::kReasonBadParameter);
      return absl::OkStatus();
    }
    h_entry = static_cast<uint32_t>(*first >> 32);
    h_id = static_cast<uint32_t>(*first & 0xFFFFFFFFu);
    if (call.arg_count() == 2) extra = call.arg(1);
  }
  absl::Status s = dialogs.EndDialog(h_entry, h_id, extra);
  if (absl::IsNotFound(s)) {
    SetError(call, 404, kDialogNotFound);
  } else if (!s.ok()) {
    SetError(call, 500, kOperationFailed);
  }
  return absl::OkStatus();
}

absl::Status DlgDbSync(Dialogs& dialogs, Call& call) {
  if (dialogs.options().db_mode == DbMode::kNone) {
    SetError(call, 400, kNoDbSync);
  } else if (!dialogs.SyncFromDatabase().ok()) {
    SetError(call, 400, kSyncFailed);
  }
  return absl::OkStatus();
}

absl::Status DlgRestoreDb(Dialogs& dialogs, Call& call) {
  if (dialogs.options().db_mode == DbMode::kNone) {
    SetError(call, 400, kNoDbRestore);
  } else if (!dialogs.RestoreDatabase().ok()) {
    SetError(call, 400, kRestoreFailed);
  }
  return absl::OkStatus();
}

// The profile argument; sets the error reply and returns nullopt when it is unknown.
std::optional<uint16_t> ProfileArg(Dialogs& dialogs, Call& call) {
  std::optional<uint16_t> index = dialogs.FindProfile(call.arg(0));
  if (!index.has_value()) SetError(call, 404, kProfileNotFound);
  return index;
}

absl::Status ProfileGetSize(Dialogs& dialogs, Call& call) {
  std::optional<uint16_t> index = ProfileArg(dialogs, call);
  if (!index.has_value()) return absl::OkStatus();
  std::optional<std::string> value;
  if (call.arg_count() == 2) {
    if (call.arg(1).empty()) {
      SetError(call, 400, mi::kReasonBadParameter);
      return absl::OkStatus();
    }
    value = call.arg(1);
  }
  const ProfileSpec& spec = dialogs.profiles()[*index];
  uint64_t count = 0;
  for (const auto& [v, n] : dialogs.table().ProfileCounts(*index)) {
    if (!spec.has_value || !value.has_value() || v == *value) count += n;
  }
  Node& node = call.reply().root.AddKid("profile");
  node.AddAttribute("name", spec.name);
  node.AddAttribute("value", value.value_or(""));
  node.AddAttribute("count", absl::StrCat(count));
  node.AddAttribute("shared", "no");
  return absl::OkStatus();
}

absl::Status ProfileListDlgs(Dialogs& dialogs, Call& call) {
  std::optional<uint16_t> index = ProfileArg(dialogs, call);
  if (!index.has_value()) return absl::OkStatus();
  std::optional<std::string> value;
  if (call.arg_count() == 2) {
    if (call.arg(1).empty()) {
      SetError(call, 400, mi::kReasonBadParameter);
      return absl::OkStatus();
    }
    value = call.arg(1);
  }
  const bool compare = value.has_value() && dialogs.profiles()[*index].has_value;
  const uint16_t profile = *index;
  auto filter = [profile, compare, value](const DialogChunk& chunk, const DialogChunk::Dialog& d) {
    for (const DialogChunk::Link& link : chunk.links(d)) {
      if (link.profile == profile && (!compare || chunk.str(link.value) == *value)) return true;
    }
    return false;
  };
  call.reply().root.is_array = true;
  call.StreamWith(std::make_unique<DialogListProducer>(dialogs, /*with_context=*/false, filter, 0,
                                                       std::numeric_limits<uint64_t>::max()));
  return absl::OkStatus();
}

absl::Status ProfileGetValues(Dialogs& dialogs, Call& call) {
  std::optional<uint16_t> index = ProfileArg(dialogs, call);
  if (!index.has_value()) return absl::OkStatus();
  Reply& reply = call.reply();
  reply.root.is_array = true;
  const std::map<std::string, uint64_t> counts = dialogs.table().ProfileCounts(*index);
  if (!dialogs.profiles()[*index].has_value) {
    uint64_t total = 0;
    for (const auto& [v, n] : counts) total += n;
    reply.root.AddKid("value", std::string(kWithoutValue))
        .AddAttribute("count", absl::StrCat(total));
    return absl::OkStatus();
  }
  for (const auto& [v, n] : counts) {
    reply.root.AddKid("value", v).AddAttribute("count", absl::StrCat(n));
  }
  return absl::OkStatus();
}

absl::Status ListAllProfiles(Dialogs& dialogs, Call& call) {
  for (const ProfileSpec& p : dialogs.profiles()) {
    call.reply().root.AddKid(p.name, p.has_value ? "1" : "0");
  }
  return absl::OkStatus();
}

}  // namespace

std::string FormatDate(int64_t unix_time) {
  const time_t t = static_cast<time_t>(unix_time);
  struct tm local {};
  localtime_r(&t, &local);
  char buffer[32];
  const size_t n = strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S", &local);
  return std::string(buffer, n);
}

void AppendDialogNode(Node& parent, const DialogChunk& chunk, const DialogChunk::Dialog& d,
                      bool with_context, const std::vector<ProfileSpec>& profiles) {
  auto text = [&chunk](DialogChunk::Text t) { return std::string(chunk.str(t)); };
  Node& node = parent.AddKid("dialog");
  node.kids.reserve(with_context ? 18 : 17);
  node.attributes.reserve(2);
  node.AddAttribute("hash", absl::StrCat(d.h_entry, ":", d.h_id));
  node.AddAttribute("dialog_id", absl::StrCat(d.id()));
  node.AddKid("state", absl::StrCat(static_cast<int>(d.state)));
  node.AddKid("user_flags", absl::StrCat(d.user_flags));
  node.AddKid("timestart", absl::StrCat(d.start_time));
  if (d.start_time != 0) node.AddKid("datestart", FormatDate(d.start_time));
  node.AddKid("timeout", absl::StrCat(d.timeout));
  if (d.timeout != 0) node.AddKid("dateout", FormatDate(d.timeout));
  node.AddKid("callid", text(d.callid));
  node.AddKid("from_uri", text(d.from_uri));
  node.AddKid("to_uri", text(d.to_uri));
  node.AddKid("caller_tag", text(d.caller.tag));
  node.AddKid("caller_contact", text(d.caller.contact));
  // Sic (1.11): the caller leg's CSeq under the name callee_cseq, and the other way round.
  node.AddKid("callee_cseq", absl::StrCat(d.caller.cseq));
  node.AddKid("caller_route_set", text(d.caller.route_set));
  node.AddKid("caller_bind_addr", text(d.caller.bind_addr));
  Node& callees = node.AddKid("CALLEES");
  callees.is_array = true;
  if (d.has_callee) {
    Node& callee = callees.AddKid("callee");
    callee.kids.reserve(5);
    callee.AddKid("callee_tag", text(d.callee.tag));
    callee.AddKid("callee_contact", text(d.callee.contact));
    callee.AddKid("caller_cseq", absl::StrCat(d.callee.cseq));
    callee.AddKid("callee_route_set", text(d.callee.route_set));
    callee.AddKid("callee_bind_addr", text(d.callee.bind_addr));
  }
  if (with_context) {
    Node& context = node.AddKid("context");
    if (d.links > 0) {
      Node& links = context.AddKid("profiles");
      links.is_array = true;
      for (const DialogChunk::Link& link : chunk.links(d)) {
        const std::string name =
            link.profile < profiles.size() ? profiles[link.profile].name : std::string("?");
        links.AddKid(name, text(link.value));
      }
    }
  }
}

void AppendDialogNode(Node& parent, const DialogInfo& d, bool with_context,
                      const std::vector<ProfileSpec>& profiles) {
  DialogChunk one;
  one.Add(d);
  AppendDialogNode(parent, one, one.dialogs()[0], with_context, profiles);
}

absl::Status RegisterMiCommands(Dialogs& dialogs, mi::Registry& registry) {
  auto bind = [&dialogs](absl::Status (*fn)(Dialogs&, Call&)) {
    return [&dialogs, fn](Call& call) { return fn(dialogs, call); };
  };
  const ParamSpec callid_or_index{"callid|index", Arity::kOptional,
                                  "Call-ID of one dialog, or the index of the first dialog"};
  const ParamSpec from_tag_or_count{"from_tag|count", Arity::kOptional,
                                    "From-tag of that dialog, or how many dialogs"};
  const ParamSpec profile{"profile", Arity::kRequired, "profile name"};
  std::vector<Command::Spec> specs = {
      {.name = "dlg_list",
       .module = "dialog",
       .params = {callid_or_index, from_tag_or_count},
       .flags = mi::kStreaming,
       .handler = [&dialogs](Call& call) { return DlgList(dialogs, call, false); }},
      {.name = "dlg_list_ctx",
       .module = "dialog",
       .params = {callid_or_index, from_tag_or_count},
       .flags = mi::kStreaming,
       .handler = [&dialogs](Call& call) { return DlgList(dialogs, call, true); },
       .typed = {ListDialogsMethod(), StreamDialogsMethod(), GetDialogMethod()}},
      {.name = "dlg_end_dlg",
       .module = "dialog",
       .params = {{"h_entry|dialog_id", Arity::kRequired,
                   "h_entry (with h_id), or dialog_id = (h_entry << 32) + h_id"},
                  {"h_id|extra_hdrs", Arity::kOptional, "h_id (decimal or 0x hex), or headers"},
                  {"extra_hdrs", Arity::kOptional, "headers added to both BYEs"}},
       .flags = mi::kMutating,
       .handler = bind(DlgEndDlg),
       .typed = {EndDialogMethod()}},
      {.name = "dlg_db_sync",
       .module = "dialog",
       // Whole-database maintenance, like ul_flush: admin only (registry/authorization.h).
       .flags = mi::kMutating | mi::kDangerous | mi::kBlocking,
       .handler = bind(DlgDbSync)},
      {.name = "dlg_restore_db",
       .module = "dialog",
       // Whole-database maintenance, like ul_flush: admin only (registry/authorization.h).
       .flags = mi::kMutating | mi::kDangerous | mi::kBlocking,
       .handler = bind(DlgRestoreDb)},
      {.name = "profile_get_size",
       .module = "dialog",
       .params = {profile, {"value", Arity::kOptional, "count only this value"}},
       .handler = bind(ProfileGetSize),
       .typed = {GetProfileSizeMethod()}},
      {.name = "profile_list_dlgs",
       .module = "dialog",
       .params = {profile, {"value", Arity::kOptional, "list only this value"}},
       .flags = mi::kStreaming,
       .handler = bind(ProfileListDlgs),
       .typed = {ListProfileDialogsMethod()}},
      {.name = "profile_get_values",
       .module = "dialog",
       .params = {profile, {"ignored", Arity::kOptional, "accepted and ignored (as 1.11)"}},
       .handler = bind(ProfileGetValues)},
      {.name = "list_all_profiles",
       .module = "dialog",
       .handler = bind(ListAllProfiles),
       .arg_error_code = 401,
       .typed = {ListProfilesMethod()}},
  };
  for (auto& spec : specs) {
    absl::Status s = registry.Register(std::move(spec));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace sipd::dialog
