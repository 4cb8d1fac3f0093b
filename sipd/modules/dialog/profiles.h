// Dialog profiles without a script (spec 8.2: profile_* commands, list_all_profiles).
//
// OpenSIPS 1.11 declares profiles by modparam and puts a dialog into a profile from the
// routing script (set_dlg_profile). sipd has no script, so each profile says where its
// value comes from in the initial INVITE:
//
//   modparam("dialog", "profiles_with_value", "caller/from_user; callee/ruri_user")
//   modparam("dialog", "profiles_no_value", "inbound; trunk/source_ip=10.0.0.7")
//
// A profile with value is NAME/SOURCE: every dialog joins it with the value SOURCE has
// in its INVITE (a dialog whose INVITE has an empty value, e.g. a Request-URI without a
// user part for ruri_user, stays out). A profile without value is NAME (every dialog
// joins it) or NAME/SOURCE=LITERAL (the dialogs whose INVITE has exactly that value).
// Sources: from_user, from_uri, from_domain, to_user, to_uri, to_domain, ruri_user,
// ruri, ruri_domain, source_ip (the address the INVITE came from), socket (the listen
// socket that received it, "udp:IP:PORT"). Names are letters, digits, '_' and '-', at
// most 64 bytes, unique over both lists; values compare case-sensitively (spec 8.2).
//
// Thread-safety: immutable after parsing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/modules/dialog/dialog_info.h"

namespace sipd::dialog {

enum class ValueSource : uint8_t {
  kNone,
  kFromUser,
  kFromUri,
  kFromDomain,
  kToUser,
  kToUri,
  kToDomain,
  kRuriUser,
  kRuri,
  kRuriDomain,
  kSourceIp,
  kSocket,
};

struct ProfileSpec {
  std::string name;
  bool has_value = false;
  ValueSource source = ValueSource::kNone;
  // Profiles without value: the condition SOURCE=LITERAL (source kNone: none).
  std::string literal;
};

// What the profile sources read from an initial INVITE.
struct RequestValues {
  std::string from_uri;
  std::string to_uri;
  std::string ruri;
  std::string source_ip;
  std::string socket;
};

// Parses one modparam value ("a/from_user; b/ruri_user" or "inbound; x/socket=udp:...")
// and appends to `profiles`. InvalidArgument naming the problem.
absl::Status ParseProfiles(std::string_view text, bool with_value,
                           std::vector<ProfileSpec>& profiles);

// The value of `source` for a request ("" when it has none).
std::string SourceValue(ValueSource source, const RequestValues& request);

// The profile links of a new dialog.
std::vector<ProfileLink> LinksFor(const std::vector<ProfileSpec>& profiles,
                                  const RequestValues& request);

}  // namespace sipd::dialog
