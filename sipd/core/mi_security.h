// MI security: who the caller is, what they may do, and a record of what they did.
// The Dispatcher calls Authorize() and Audit() on every call (its hooks), so no transport
// decides anything; transports only pass the credentials they received in the
// CallContext (registry/call_context.h).
//
// Who the caller is (first match wins):
//   1. a bearer token (gRPC `authorization: Bearer`, XML-RPC Basic/Bearer): its SHA-256
//      must be in the tokens file or be the admin token's; principal = the token's name;
//      an unknown token is refused (401), never downgraded;
//   2. a verified TLS client certificate: principal = `cert:<subject>`, role from
//      cert_roles (default read);
//   3. a unix peer (SO_PEERCRED, the FIFO's reply-FIFO owner): root and the user sipd
//      runs as are admin, uids listed in unix_roles get theirs, every other user read;
//      principal = `uid:<n>`;
//   4. a role the transport was configured with (mi_datagram's udp_role);
//   5. nobody: local_role (default `read`) for a local caller (loopback, unix socket),
//      401 for anyone else, and 401 for everyone when require_auth is on.
// What they may do: registry/authorization.h (read / operate / admin from the command's
// flags).
//
// At start the attendant creates run_dir/admin.token (64 hex chars, mode 0600, kept
// across restarts; a file with a looser mode or another owner stops start-up), so the
// local administrator's tools (sipctl, the Python client, opensipsctl) get admin by
// reading it.
//
// The audit log (run_dir/audit.log by default, mode 0600, append-only, one line per
// record written with a single write()) records every call of a mutating command, allowed
// or not: time, principal, role, transport, peer, command, arguments (parameters declared
// secret as ***), MI code (0 = the caller went away). Each record also counts in
// statistic mi:mi_audit and is raised as event E_MI_AUDIT (subscribing to it needs admin).
//
// Tokens and roles are read once, at start (tokens_file, unix_roles, cert_roles): they do
// not change while sipd runs (SIGHUP reloads nothing), so a gRPC stream authorized when
// it opened stays authorized; revoking a token takes a restart.
//
// Thread/process-safety: built in the attendant before the fork; read-only afterwards.
// Audit() opens the log once per process and may be called from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/call_context.h"
#include "registry/command.h"
#include "registry/events.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"

namespace sipd {

struct MiSecurityOptions {
  // `name role sha256-hex-of-token` per line, `#` comments; must be mode 0600 or
  // stricter and owned by the sipd user. Empty = no tokens but the admin token.
  std::string tokens_file;
  // Even `read` needs credentials.
  bool require_auth = false;
  // Create/keep run_dir/admin.token.
  bool admin_token = true;
  // Empty = run_dir/audit.log.
  std::string audit_log;
  // uid -> role for unix peers that are neither root nor the sipd user.
  std::vector<std::pair<uid_t, mi::Role>> unix_roles;
  // Certificate subject -> role for mTLS clients.
  std::vector<std::pair<std::string, mi::Role>> cert_roles;
  // The role of a local caller (loopback, unix socket) without credentials.
  mi::Role local_role = mi::Role::kRead;
};

// Applies `modparam("mi", PARAM, VALUE)`: tokens_file, require_auth (0/1), admin_token
// (0/1), audit_log, unix_roles ("uid:role; uid:role"), cert_roles ("subject=role; ..."),
// local_role (read|operate|admin).
absl::Status SetMiSecurityParam(std::string_view param, const ParamValue& value,
                                MiSecurityOptions* options);

// Lowercase hex SHA-256 of `text`.
std::string Sha256Hex(std::string_view text);

class MiSecurity {
 public:
  // Reads the tokens file, creates or reads run_dir/admin.token, registers mi:mi_audit.
  // FailedPrecondition naming the file and what to do for a file with a loose mode, a
  // foreign owner or a bad line.
  static absl::StatusOr<std::unique_ptr<MiSecurity>> Create(const MiSecurityOptions& options,
                                                            const std::string& run_dir,
                                                            mi::StatsRegistry& stats);
  ~MiSecurity();

  // The Dispatcher's authorize hook (see file comment); fills principal and role.
  absl::Status Authorize(mi::CallContext& context, const mi::Command& command) const;
  // The Dispatcher's audit hook.
  void Audit(const mi::CallContext& context, const mi::Command& command, const mi::Request& request,
             uint32_t code) const;

  // Publishes E_MI_AUDIT (principal, role, transport, peer, command, args, code: the audit
  // record's fields) in `events` and raises it with every record from then on.
  // REQUIRES: attendant, before the fork.
  absl::Status PublishEvents(mi::EventRegistry& events);

  const std::string& admin_token_path() const { return admin_token_path_; }
  const std::string& audit_log_path() const { return audit_log_path_; }

 private:
  struct TokenEntry {
    std::string name;
    mi::Role role = mi::Role::kRead;
  };

  MiSecurity() = default;
  absl::Status LoadTokensFile(const std::string& path);
  absl::Status LoadOrCreateAdminToken(const std::string& path);
  // Fills principal/role from the credentials; Unauthenticated when they do not hold.
  absl::Status Identify(mi::CallContext& context) const;

  MiSecurityOptions options_;
  uid_t own_uid_ = 0;
  // SHA-256 hex of a token -> who it is.
  std::map<std::string, TokenEntry> tokens_;
  std::string admin_token_path_;
  std::string audit_log_path_;
  mi::Counter audit_counter_;
  mi::EventRegistry* events_ = nullptr;
  mi::EventId audit_event_ = -1;
  mutable std::mutex audit_mu_;
  mutable int audit_fd_ = -1;
  mutable pid_t audit_fd_pid_ = 0;
};

}  // namespace sipd
