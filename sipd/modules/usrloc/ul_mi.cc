#include "sipd/modules/usrloc/ul_mi.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sipd/modules/usrloc/ul_typed.h"
#include "sipd/modules/usrloc/usrloc.h"

namespace sipd::usrloc {
namespace {

using mi::Call;
using mi::Command;
using mi::Node;
using mi::ParamSpec;
using mi::Reply;
using Arity = ParamSpec::Arity;

// Flush the ul_dump reply every this many AORs of a domain (spec 1.7).
constexpr size_t kAorsPerFlush = 50;
// ul_dump_page: AORs per page at most.
constexpr uint32_t kMaxPageSize = 1000;
// ul_dump_page: the page_token of the first page.
constexpr std::string_view kFirstPage = ".";

// Reply texts of spec 8.1.
constexpr std::string_view kTableNotFound = "Table not found";
constexpr std::string_view kDomainMissing = "Domain missing in AOR";
constexpr std::string_view kAorNotFound = "AOR not found";
constexpr std::string_view kContactNotFound = "Contact not found";
// OpenSIPS 1.11 passes a length one short of "AOR has no contacts" (spec 1.3): FIFO and
// datagram clients receive "AOR has no contact", XML-RPC and gRPC the full text.
constexpr std::string_view kAorHasNoContacts = "AOR has no contacts";
constexpr std::string_view kFailedToDeleteAor = "Failed to delete AOR";
constexpr std::string_view kAlreadySynced = "Contacts already synced";

// What ul_add stores for fields the MI cannot give (as OpenSIPS's mi_ul_cid/mi_ul_ua).
constexpr std::string_view kMiCallid = "dfjrewr12386fd6-343@opensips.mi";
constexpr std::string_view kMiUserAgent = "OpenSIPS MI Server";
constexpr uint32_t kMiCseq = 1;

void SetError(Call& call, uint32_t code, std::string_view reason) {
  call.reply() = Reply::Error(code, reason);
}

// Resolves the table and AOR arguments shared by most commands. On failure the error
// reply is set and nullptr returned.
LocationTable* TableArg(Usrloc& ul, Call& call) {
  LocationTable* table = ul.FindTable(call.arg(0));
  if (table == nullptr) SetError(call, 404, kTableNotFound);
  return table;
}

std::optional<std::string> AorArg(Usrloc& ul, Call& call, size_t index) {
  std::optional<std::string> aor = ul.FixAor(call.arg(index));
  if (!aor.has_value()) SetError(call, 400, kDomainMissing);
  return aor;
}

absl::Status UlRm(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  std::optional<std::string> aor = AorArg(ul, call, 1);
  if (!aor.has_value()) return absl::OkStatus();
  if (aor->empty()) return absl::OkStatus();  // no such AOR: nothing to delete
  auto applied = ul.Update(
      *table, *aor, [](bool, const std::vector<ContactInfo>& current, std::vector<Edit>& edits) {
        for (const ContactInfo& c : current) {
          edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = c.uri}});
        }
        return absl::OkStatus();
      });
  if (!applied.ok() || !applied->persisted.ok()) SetError(call, 500, kFailedToDeleteAor);
  return absl::OkStatus();
}

absl::Status UlRmContact(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  std::optional<std::string> aor = AorArg(ul, call, 1);
  if (!aor.has_value()) return absl::OkStatus();
  if (aor->empty()) {
    SetError(call, 404, kAorNotFound);
    return absl::OkStatus();
  }
  const std::string& uri = call.arg(2);
  auto applied = ul.Update(
      *table, *aor,
      [&](bool exists, const std::vector<ContactInfo>& current, std::vector<Edit>& edits) {
        if (!exists) return absl::NotFoundError(std::string(kAorNotFound));
        for (const ContactInfo& c : current) {
          if (c.uri == uri) {
            edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = uri}});
            return absl::OkStatus();
          }
        }
        return absl::NotFoundError(std::string(kContactNotFound));
      });
  if (!applied.ok()) {
    if (absl::IsNotFound(applied.status())) {
      SetError(call, 404, std::string(applied.status().message()));
      return absl::OkStatus();
    }
    return applied.status();  // "returned nothing" (spec 8.1)
  }
  return applied->persisted;
}

// ul_dump's reply, produced one flush (50 AORs, spec 1.7) at a time as the transport
// asks for it. Between two parts it holds a cursor, never a slot lock, so a client that
// reads slowly (or not at all) blocks nobody.
class UlDumpProducer final : public mi::ReplyProducer {
 public:
  UlDumpProducer(Usrloc& ul, bool brief) : ul_(ul), brief_(brief) {}

  absl::StatusOr<bool> Next(Call& call) override {
    const auto& tables = ul_.tables();
    while (table_ < tables.size()) {
      const LocationTable& table = *tables[table_];
      if (domain_ == nullptr) {
        domain_ = &call.reply().root.AddKid("Domain", table.name());
        domain_->AddAttribute("table", absl::StrCat(table.size()));
        domain_->is_array = true;
        // Never cleared, as in OpenSIPS: later domains are written by the final write.
        domain_->not_completed = true;
        records_ = 0;
        cursor_ = LocationTable::Cursor{};
      }
      while (!cursor_.done) {
        // Copy at most up to the next flush point, so every flush happens right after
        // the 50th, 100th, ... AOR, and no slot lock is held while building or writing.
        chunk_.clear();
        table.CopyChunk(cursor_, kAorsPerFlush - records_ % kAorsPerFlush, !brief_, chunk_);
        const int64_t now = ul_.Now();
        for (const AorSnapshot& aor : chunk_) AppendAorNode(*domain_, aor, brief_, now);
        records_ += chunk_.size();
        if (!chunk_.empty() && records_ % kAorsPerFlush == 0) return false;  // flush point
      }
      domain_->AddAttribute("records", absl::StrCat(records_));
      domain_ = nullptr;
      ++table_;
    }
    return true;
  }

 private:
  Usrloc& ul_;
  const bool brief_;
  size_t table_ = 0;
  mi::Node* domain_ = nullptr;
  size_t records_ = 0;
  LocationTable::Cursor cursor_;
  std::vector<AorSnapshot> chunk_;
};

absl::Status UlDump(Usrloc& ul, Call& call) {
  const bool brief = call.arg_count() == 1 && absl::EqualsIgnoreCase(call.arg(0), "brief");
  call.reply().root.is_array = true;
  call.StreamWith(std::make_unique<UlDumpProducer>(ul, brief));
  return absl::OkStatus();
}

absl::Status UlFlush(Usrloc& ul, Call&) {
  ul.RunTimer();
  return absl::OkStatus();
}

absl::Status UlAdd(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  std::optional<std::string> aor = AorArg(ul, call, 1);
  if (!aor.has_value()) return absl::OkStatus();
  const std::string& uri = call.arg(2);
  std::optional<uint32_t> expires = ParseUint32(call.arg(3));
  std::optional<int32_t> q = ParseQ(call.arg(4));
  // arg 5 is unused (kept for compatibility, as in OpenSIPS).
  std::optional<uint32_t> flags = ParseUint32(call.arg(6));
  std::optional<uint32_t> cflags = ParseUint32(call.arg(7));
  std::optional<uint32_t> methods = ParseUint32(call.arg(8));
  if (!expires || !q || !flags || !cflags || !methods || uri.empty() ||
      uri.size() > kMaxFieldLength || uri.find('\0') != std::string::npos || aor->empty() ||
      aor->size() > kMaxAorLength) {
    SetError(call, 400, mi::kReasonBadParameter);
    return absl::OkStatus();
  }
  const int64_t now = ul.Now();
  ContactInfo info;
  info.uri = uri;
  info.expires = *expires == 0 ? 0 : now + *expires;  // 0 = permanent
  info.q = *q;
  info.flags = *flags;
  info.cflags = *cflags;
  info.methods = *methods;
  info.callid = std::string(kMiCallid);
  info.user_agent = std::string(kMiUserAgent);
  info.cseq = kMiCseq;
  info.last_modified = now;
  auto applied = ul.Update(
      *table, *aor, [&](bool, const std::vector<ContactInfo>& current, std::vector<Edit>& edits) {
        ContactInfo contact = info;
        for (const ContactInfo& c : current) {
          if (c.uri != uri) continue;
          // An existing contact keeps its CSeq and what the MI cannot express.
          contact.cseq = c.cseq;
          contact.received = c.received;
          contact.path = c.path;
          contact.socket = c.socket;
          contact.instance = c.instance;
          contact.attr = c.attr;
          break;
        }
        edits.push_back(Edit{Edit::Kind::kUpsert, std::move(contact)});
        return absl::OkStatus();
      });
  if (!applied.ok() || !applied->persisted.ok()) {
    SetError(call, 500, mi::kReasonInternalError);
  }
  return absl::OkStatus();
}

absl::Status UlShowContact(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  std::optional<std::string> aor = AorArg(ul, call, 1);
  if (!aor.has_value()) return absl::OkStatus();
  std::optional<AorSnapshot> snapshot = table->Get(*aor);
  if (!snapshot.has_value()) {
    SetError(call, 404, kAorNotFound);
    return absl::OkStatus();
  }
  const int64_t now = ul.Now();
  Reply& reply = call.reply();
  reply.root.is_array = true;
  for (const ContactInfo& c : snapshot->contacts) {
    if (c.Valid(now)) reply.root.AddKid("Contact", FormatShowContact(c, now));
  }
  if (reply.root.kids.empty())
    call.reply() = Reply::ErrorTruncatedOnText(404, kAorHasNoContacts, 1);
  return absl::OkStatus();
}

// A page token: where the next page starts (a LocationTable::Cursor), as
// base64url("1:SLOT:HAS_LAST:HASH:AOR"). Opaque to clients; a forged one can only pick
// another starting point.
std::string EncodePageToken(const LocationTable::Cursor& cursor) {
  return absl::WebSafeBase64Escape(absl::StrCat("1:", cursor.slot, ":", cursor.has_last ? 1 : 0,
                                                ":", cursor.last_hash, ":", cursor.last_aor));
}

std::optional<LocationTable::Cursor> DecodePageToken(std::string_view token, uint32_t slots) {
  std::string text;
  if (!absl::WebSafeBase64Unescape(absl::string_view(token.data(), token.size()), &text)) {
    return std::nullopt;
  }
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(':', 4));
  LocationTable::Cursor cursor;
  int has_last = 0;
  if (parts.size() != 5 || parts[0] != "1" || !absl::SimpleAtoi(parts[1], &cursor.slot) ||
      cursor.slot >= slots || !absl::SimpleAtoi(parts[2], &has_last) || has_last < 0 ||
      has_last > 1 || !absl::SimpleAtoi(parts[3], &cursor.last_hash)) {
    return std::nullopt;
  }
  cursor.has_last = has_last == 1;
  cursor.last_aor = std::move(parts[4]);
  return cursor;
}

// sipd's ul_dump_page: one page of a table, for paged listings (the typed ListContacts).
absl::Status UlDumpPage(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  uint32_t page_size = 0;
  if (!absl::SimpleAtoi(call.arg(1), &page_size) || page_size == 0 || page_size > kMaxPageSize) {
    SetError(call, 400, mi::kReasonBadParameter);
    call.reply().bad_arguments = {
        {"page_size", absl::StrCat("an integer from 1 to ", kMaxPageSize)}};
    return absl::OkStatus();
  }
  LocationTable::Cursor cursor;
  if (call.arg(2) != kFirstPage) {
    std::optional<LocationTable::Cursor> decoded = DecodePageToken(call.arg(2), table->size());
    if (!decoded.has_value()) {
      SetError(call, 400, mi::kReasonBadParameter);
      call.reply().bad_arguments = {{"page_token", "not a token of a previous page"}};
      return absl::OkStatus();
    }
    cursor = std::move(*decoded);
  }
  const std::string prefix = call.arg_count() > 3 ? call.arg(3) : std::string();
  std::vector<AorSnapshot> aors;
  table->CopyChunk(cursor, page_size, true, aors, prefix);
  Node& domain = call.reply().root.AddKid("Domain", table->name());
  domain.AddAttribute("table", absl::StrCat(table->size()));
  domain.is_array = true;
  const int64_t now = ul.Now();
  for (const AorSnapshot& aor : aors) AppendAorNode(domain, aor, false, now);
  if (!cursor.done) call.reply().root.AddKid("Next", EncodePageToken(cursor));
  return absl::OkStatus();
}

// sipd's ul_dump_aor: one AOR as ul_dump shows it (the typed GetContacts).
absl::Status UlDumpAor(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  std::optional<std::string> aor = AorArg(ul, call, 1);
  if (!aor.has_value()) return absl::OkStatus();
  std::optional<AorSnapshot> snapshot = aor->empty() ? std::nullopt : table->Get(*aor);
  if (!snapshot.has_value()) {
    SetError(call, 404, kAorNotFound);
    return absl::OkStatus();
  }
  AppendAorNode(call.reply().root, *snapshot, false, ul.Now());
  return absl::OkStatus();
}

absl::Status UlSync(Usrloc& ul, Call& call) {
  LocationTable* table = TableArg(ul, call);
  if (table == nullptr) return absl::OkStatus();
  if (call.arg_count() == 1) return ul.SyncTable(*table);
  std::optional<std::string> aor = AorArg(ul, call, 1);
  if (!aor.has_value()) return absl::OkStatus();
  absl::Status status = ul.SyncAor(*table, *aor);
  if (absl::IsNotFound(status)) {
    SetError(call, 404, kAorNotFound);
    return absl::OkStatus();
  }
  return status;
}

}  // namespace

void AppendAorNode(Node& domain, const AorSnapshot& aor, bool brief, int64_t now) {
  Node& aor_node = domain.AddKid("AOR", aor.aor);
  aor_node.is_array = true;
  if (brief) return;
  for (const ContactInfo& c : aor.contacts) {
    Node& contact = aor_node.AddKid("Contact", c.uri);
    contact.AddAttribute("Q", FormatQ(c.q));
    std::string expires;
    if (c.expires == 0) {
      expires = "permanent";
    } else if (now > c.expires) {
      expires = "expired";
    } else {
      expires = absl::StrCat(c.expires - now);
    }
    contact.AddKid("Expires", std::move(expires));
    contact.AddKid("Callid", c.callid);
    contact.AddKid("Cseq", absl::StrCat(c.cseq));
    if (!c.user_agent.empty()) contact.AddKid("User-agent", c.user_agent);
    if (!c.received.empty()) contact.AddKid("Received", c.received);
    if (!c.path.empty()) contact.AddKid("Path", c.path);
    contact.AddKid("State", std::string(StateName(c.state)));
    contact.AddKid("Flags", absl::StrCat(c.flags));
    contact.AddKid("Cflags", FormatBranchFlags(c.cflags));
    if (!c.socket.empty()) contact.AddKid("Socket", c.socket);
    contact.AddKid("Methods", absl::StrCat(c.methods));
    if (!c.attr.empty()) contact.AddKid("Attr", c.attr);
    if (!c.instance.empty()) contact.AddKid("SIP_instance", c.instance);
  }
}

std::string FormatShowContact(const ContactInfo& c, int64_t now) {
  std::string out = absl::StrCat(
      "<", c.uri, ">;q=", FormatQ(c.q), ";expires=", static_cast<int>(c.expires - now), ";flags=0x",
      Hex(c.flags), ";cflags=0x", Hex(c.cflags), ";socket=<", c.socket.empty() ? "NULL" : c.socket,
      ">;callid=<", c.callid, ">;methods=0x", Hex(c.methods));
  if (!c.received.empty()) absl::StrAppend(&out, ";received=<", c.received, ">");
  if (!c.user_agent.empty()) absl::StrAppend(&out, ";user_agent=<", c.user_agent, ">");
  if (!c.path.empty()) absl::StrAppend(&out, ";path=<", c.path, ">");
  return out;
}

absl::Status RegisterMiCommands(Usrloc& ul, mi::Registry& registry) {
  auto bind = [&ul](absl::Status (*fn)(Usrloc&, Call&)) {
    return [&ul, fn](Call& call) { return fn(ul, call); };
  };
  const ParamSpec table{"table", Arity::kRequired, "usrloc table (domain), e.g. location"};
  const ParamSpec aor{"aor", Arity::kRequired, "address of record, user[@domain]"};
  std::vector<Command::Spec> specs = {
      {.name = "ul_rm",
       .module = "usrloc",
       .params = {table, aor},
       .flags = mi::kMutating,
       .handler = bind(UlRm),
       .typed = {RemoveAorMethod()}},
      {.name = "ul_rm_contact",
       .module = "usrloc",
       .params = {table, aor, {"contact", Arity::kRequired, "contact URI, compared exactly"}},
       .flags = mi::kMutating,
       .handler = bind(UlRmContact),
       .typed = {RemoveContactMethod()}},
      {.name = "ul_dump",
       .module = "usrloc",
       .params = {{"brief", Arity::kOptional, "`brief`: AORs only, no contacts"}},
       .flags = mi::kStreaming,
       .handler = bind(UlDump),
       .typed = {StreamContactsMethod()}},
      {.name = "ul_flush",
       .module = "usrloc",
       .flags = mi::kNoInput | mi::kMutating | mi::kDangerous | mi::kBlocking,
       .handler = bind(UlFlush),
       .typed = {FlushMethod()}},
      {.name = "ul_add",
       .module = "usrloc",
       .params = {table,
                  aor,
                  {"contact", Arity::kRequired, "contact URI"},
                  {"expires", Arity::kRequired, "seconds from now; 0 = permanent"},
                  {"q", Arity::kRequired, "q-value, e.g. 1.00 or 0.5"},
                  {"unused", Arity::kRequired, "ignored (kept for compatibility)"},
                  {"flags", Arity::kRequired, "contact flags (integer)"},
                  {"cflags", Arity::kRequired, "branch flags (integer)"},
                  {"methods", Arity::kRequired, "supported methods bitmask (integer)"}},
       .flags = mi::kMutating,
       .handler = bind(UlAdd),
       .typed = {AddContactMethod()}},
      {.name = "ul_show_contact",
       .module = "usrloc",
       .params = {table, aor},
       .handler = bind(UlShowContact)},
      {.name = "ul_sync",
       .module = "usrloc",
       .params = {table, {"aor", Arity::kOptional, "the one AOR to sync (default: all)"}},
       .flags = mi::kMutating | mi::kBlocking,
       .handler = bind(UlSync),
       // Spec 8.1: without a database the answer does not depend on the arguments.
       .answer_before_args = [&ul]() -> std::optional<Reply> {
         if (ul.options().db_mode != DbMode::kNone) return std::nullopt;
         Reply reply;
         reply.reason = std::string(kAlreadySynced);
         return reply;
       }},
      // sipd's own (not in 1.11): what the typed ListContacts and GetContacts need.
      {.name = "ul_dump_page",
       .module = "usrloc",
       .help = "lists one page of a usrloc table, as ul_dump shows it; Next:: holds the "
               "page_token of the next page",
       .params = {table,
                  {"page_size", Arity::kRequired, "AORs per page, 1 to 1000"},
                  {"page_token", Arity::kRequired, "`.` for the first page, else a Next:: value"},
                  {"aor_prefix", Arity::kOptional, "only AORs that start with it"}},
       .handler = bind(UlDumpPage),
       .typed = {ListContactsMethod()}},
      {.name = "ul_dump_aor",
       .module = "usrloc",
       .help = "shows one AOR and its contacts as ul_dump does",
       .params = {table, aor},
       .handler = bind(UlDumpAor),
       .typed = {GetContactsMethod()}},
  };
  for (auto& spec : specs) {
    absl::Status s = registry.Register(std::move(spec));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace sipd::usrloc
