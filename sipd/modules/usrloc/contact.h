// The usrloc data model as the rest of sipd sees it: a contact (one binding of an
// address-of-record), a snapshot of one AOR, and the helpers that format them the way
// OpenSIPS 1.11 usrloc does (q-values, states, branch flags).
//
// These are plain process-local values. The shared-memory representation lives in
// location_table.cc and is never exposed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sipd::usrloc {

// q is kept as an integer 0..1000 (OpenSIPS qvalue_t); -1 means "not given".
inline constexpr int32_t kQUnspecified = -1;
inline constexpr int32_t kQMax = 1000;

// Longest accepted string field of a contact (URI, Call-ID, Path, Received, ...).
// Longer User-Agent values are truncated; the other fields are rejected by the callers.
inline constexpr size_t kMaxFieldLength = 512;
// Longest accepted AOR.
inline constexpr size_t kMaxAorLength = 255;

// Every method bit (OpenSIPS ALL_METHODS): a contact that did not send Allow.
inline constexpr uint32_t kAllMethods = 0xFFFFFFFFu;

// Database state of a contact (the `State` line of ul_dump).
enum class ContactState {
  kNew,    // CS_NEW: not in the database (or no database at all)
  kSync,   // CS_SYNC: the database holds this exact contact
  kDirty,  // CS_DIRTY: in the database, but changed since
};

struct ContactInfo {
  std::string uri;
  std::string callid;
  std::string user_agent;
  std::string received;
  std::string path;
  // The listen socket the contact registered through, `udp:IP:PORT`; empty = none.
  std::string socket;
  std::string instance;  // +sip.instance
  std::string attr;
  // Absolute expiry (unix seconds); 0 = permanent.
  int64_t expires = 0;
  int32_t q = kQUnspecified;
  uint32_t cseq = 0;
  uint32_t flags = 0;
  uint32_t cflags = 0;
  uint32_t methods = kAllMethods;
  int64_t last_modified = 0;
  // Output only (filled by the table when it copies a contact out).
  ContactState state = ContactState::kNew;

  // OpenSIPS VALID_CONTACT: permanent, or expiring strictly in the future.
  bool Valid(int64_t now) const { return expires == 0 || expires > now; }

  friend bool operator==(const ContactInfo&, const ContactInfo&) = default;
};

// One address-of-record with its contacts (ordered by q, highest first).
struct AorSnapshot {
  std::string aor;
  // Global change counter value of the last change of this AOR (see LocationTable).
  uint64_t version = 0;
  std::vector<ContactInfo> contacts;
};

// Parses a SIP q-value (RFC 3261 qvalue: "0", "0.5", "1", "1.000", ...) into 0..1000.
std::optional<int32_t> ParseQ(std::string_view text);
// Formats q as OpenSIPS q2str: "" (unspecified), "1", "0", "0.5", "0.25", "0.125".
std::string FormatQ(int32_t q);

// Parses a decimal unsigned 32-bit value (digits only, like OpenSIPS str2int).
std::optional<uint32_t> ParseUint32(std::string_view text);

// `CS_NEW`, `CS_SYNC`, `CS_DIRTY`.
std::string_view StateName(ContactState state);

// The `Cflags` text of ul_dump: the names of the set branch flags separated by single
// spaces. sipd has no routing script that could name flags, so a flag's name is its bit
// number (cflags 5 -> "0 2").
std::string FormatBranchFlags(uint32_t cflags);

// Uppercase hex without leading zeros ("0", "FFFFFFFF").
std::string Hex(uint32_t value);

}  // namespace sipd::usrloc
