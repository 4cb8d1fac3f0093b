// What the dialog module knows about one dialog, as a process-local value (copied out of
// the shared table, sipd/modules/dialog/dialog_table.h).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sipd::dialog {

// The states of OpenSIPS 1.11 (spec 8.2: dlg_list `state`).
enum class DialogState : uint8_t {
  kUnconfirmed = 1,     // INVITE relayed, no reply with a To-tag yet
  kEarly = 2,           // a provisional reply (101-199) came back
  kConfirmedNoAck = 3,  // a 2xx came back, no ACK yet
  kConfirmed = 4,       // the ACK for the 2xx passed
  kDeleted = 5,         // ended (BYE, timeout, dlg_end_dlg, failed setup)
};

// One side of the dialog, as the 1.11 `dlg_leg`.
struct LegInfo {
  std::string tag;
  // The remote target (Contact URI) of this side.
  std::string contact;
  // The route set towards this side, as Route header values joined with ","; empty if
  // the side is reached directly.
  std::string route_set;
  // The local socket sipd talks to this side through ("udp:IP:PORT"); may be empty for
  // the callee (tm does not tell which socket a reply came on).
  std::string bind_addr;
  // The last CSeq number this side used in the dialog.
  uint32_t cseq = 0;
  friend bool operator==(const LegInfo&, const LegInfo&) = default;
};

// The value a dialog has in one profile (spec 8.2, profiles). `value` is empty for
// profiles without values.
struct ProfileLink {
  uint16_t profile = 0;  // index in the module's profile list
  std::string value;
  friend bool operator==(const ProfileLink&, const ProfileLink&) = default;
};

struct DialogInfo {
  uint32_t h_entry = 0;
  uint32_t h_id = 0;
  DialogState state = DialogState::kUnconfirmed;
  uint32_t user_flags = 0;
  // Unix times; 0 = not set. start_time is set when the dialog is confirmed (2xx),
  // timeout is start_time + lifetime.
  int64_t start_time = 0;
  int64_t timeout = 0;
  std::string callid;
  std::string from_uri;
  std::string to_uri;
  LegInfo caller;
  // Where BYEs to the caller go when its route set is empty: the address its INVITE
  // came from ("sip:IP:PORT;transport=tcp"), which also finds its TCP connection.
  std::string caller_next_hop;
  std::optional<LegInfo> callee;
  std::vector<ProfileLink> profiles;
  // A change counter (shared by all dialogs): the order of the dialog's versions.
  uint64_t version = 0;

  // (h_entry << 32) + h_id, the `dialog_id` of dlg_list.
  uint64_t id() const { return (static_cast<uint64_t>(h_entry) << 32) | h_id; }
  bool live() const { return state != DialogState::kDeleted; }
  bool confirmed() const {
    return state == DialogState::kConfirmedNoAck || state == DialogState::kConfirmed;
  }
};

// Dialogs copied out of the table for listing (dlg_list, profile_list_dlgs): the strings
// of every dialog of the chunk share one byte buffer, so a chunk of 50 dialogs costs a
// handful of allocations instead of several hundred. Reused from chunk to chunk.
class DialogChunk {
 public:
  // A string of the chunk: bytes [offset, offset + size) of its buffer.
  struct Text {
    uint32_t offset = 0;
    uint32_t size = 0;
  };
  struct Leg {
    Text tag;
    Text contact;
    Text route_set;
    Text bind_addr;
    uint32_t cseq = 0;
  };
  struct Link {
    uint16_t profile = 0;
    Text value;
  };
  struct Dialog {
    uint32_t h_entry = 0;
    uint32_t h_id = 0;
    DialogState state = DialogState::kUnconfirmed;
    uint32_t user_flags = 0;
    int64_t start_time = 0;
    int64_t timeout = 0;
    Text callid;
    Text from_uri;
    Text to_uri;
    Leg caller;
    bool has_callee = false;
    Leg callee;
    uint32_t first_link = 0;
    uint32_t links = 0;
    uint64_t id() const { return (static_cast<uint64_t>(h_entry) << 32) | h_id; }
  };

  void clear() {
    bytes_.clear();
    dialogs_.clear();
    links_.clear();
  }
  size_t size() const { return dialogs_.size(); }
  bool empty() const { return dialogs_.empty(); }
  const std::vector<Dialog>& dialogs() const { return dialogs_; }
  std::string_view str(Text t) const { return std::string_view(bytes_).substr(t.offset, t.size); }
  std::span<const Link> links(const Dialog& d) const {
    return std::span<const Link>(links_).subspan(d.first_link, d.links);
  }

  // Appends a copy of `d`.
  void Add(const DialogInfo& d);
  // For the table's copy: strings, links, and dropping the last dialog again.
  Text AddText(std::string_view s);
  Dialog& AddDialog() { return dialogs_.emplace_back(); }
  void AddLink(uint16_t profile, std::string_view value) {
    links_.push_back(Link{profile, AddText(value)});
  }
  size_t link_count() const { return links_.size(); }
  // Removes the last dialog and everything added since `bytes`/`links` (sizes before it).
  void DropLast(size_t bytes, size_t links) {
    dialogs_.pop_back();
    bytes_.resize(bytes);
    links_.resize(links);
  }
  size_t byte_count() const { return bytes_.size(); }

 private:
  std::string bytes_;
  std::vector<Dialog> dialogs_;
  std::vector<Link> links_;
};

inline DialogChunk::Text DialogChunk::AddText(std::string_view s) {
  Text t{static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(s.size())};
  bytes_.append(s.data(), s.size());
  return t;
}

inline void DialogChunk::Add(const DialogInfo& d) {
  const size_t first_link = links_.size();
  for (const ProfileLink& p : d.profiles) AddLink(p.profile, p.value);
  Dialog& out = AddDialog();
  out.h_entry = d.h_entry;
  out.h_id = d.h_id;
  out.state = d.state;
  out.user_flags = d.user_flags;
  out.start_time = d.start_time;
  out.timeout = d.timeout;
  out.callid = AddText(d.callid);
  out.from_uri = AddText(d.from_uri);
  out.to_uri = AddText(d.to_uri);
  auto leg = [this](const LegInfo& l) {
    return Leg{AddText(l.tag), AddText(l.contact), AddText(l.route_set), AddText(l.bind_addr),
               l.cseq};
  };
  out.caller = leg(d.caller);
  if (d.callee.has_value()) {
    out.has_callee = true;
    out.callee = leg(*d.callee);
  }
  out.first_link = static_cast<uint32_t>(first_link);
  out.links = static_cast<uint32_t>(links_.size() - first_link);
}

// Limits of what one dialog may store (longer values are refused at creation, so a
// hostile INVITE cannot take the table's memory).
inline constexpr size_t kMaxFieldLength = 1024;
inline constexpr size_t kMaxRouteSetLength = 4096;
inline constexpr size_t kMaxProfileLinks = 32;

}  // namespace sipd::dialog
