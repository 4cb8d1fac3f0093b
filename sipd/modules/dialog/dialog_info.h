// What the dialog module knows about one dialog, as a process-local value (copied out of
// the shared table, sipd/modules/dialog/dialog_table.h).
#pragma once

#include <cstdint>
#include <optional>
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

// Limits of what one dialog may store (longer values are refused at creation, so a
// hostile INVITE cannot take the table's memory).
inline constexpr size_t kMaxFieldLength = 1024;
inline constexpr size_t kMaxRouteSetLength = 4096;
inline constexpr size_t kMaxProfileLinks = 32;

}  // namespace sipd::dialog
