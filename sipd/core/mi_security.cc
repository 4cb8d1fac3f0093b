#include "sipd/core/mi_security.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "registry/authorization.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

std::string Errno() { return std::strerror(errno); }

absl::StatusOr<bool> BoolParam(std::string_view param, const ParamValue& value) {
  const int64_t* number = std::get_if<int64_t>(&value);
  if (number != nullptr && (*number == 0 || *number == 1)) return *number == 1;
  const std::string* text = std::get_if<std::string>(&value);
  if (text != nullptr) {
    const std::string lower = absl::AsciiStrToLower(*text);
    if (lower == "yes" || lower == "on" || lower == "true") return true;
    if (lower == "no" || lower == "off" || lower == "false") return false;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("mi: parameter '", std::string(param), "' must be 0/1 or yes/no"));
}

absl::StatusOr<std::string> StringParam(std::string_view param, const ParamValue& value) {
  const std::string* text = std::get_if<std::string>(&value);
  if (text == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi: parameter '", std::string(param), "' must be a string"));
  }
  return *text;
}

// A file holding secrets must be a regular file of ours that nobody else can read.
absl::Status CheckPrivateFile(const std::string& path, const struct stat& st,
                              const std::string& what) {
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(what, " ", path, " is not a regular file"));
  }
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(what, " ", path, " belongs to uid ",
                                                      st.st_uid, ", not to the sipd user (uid ",
                                                      geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", path, " has mode ", mode, ": others may read it; run chmod 600 ", path));
  }
  return absl::OkStatus();
}

bool IsSha256Hex(std::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The argument as the audit log shows it: quoted, control bytes escaped, long values cut.
std::string AuditValue(std::string_view value) {
  constexpr size_t kMax = 256;
  std::string out = "\"";
  for (size_t i = 0; i < value.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (value.size() > kMax) out += "...";
  out += "\"";
  return out;
}

bool IsSecretArgument(const mi::Command& command, size_t index) {
  const auto& params = command.params();
  if (params.empty()) return false;
  if (index < params.size()) return params[index].secret;
  return params.back().arity == mi::ParamSpec::Arity::kRepeated && params.back().secret;
}

}  // namespace

std::string Sha256Hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(text.data(), text.size(), digest, &size, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

absl::Status SetMiSecurityParam(std::string_view param, const ParamValue& value,
                                MiSecurityOptions* options) {
  if (param == "tokens_file") {
    absl::StatusOr<std::string> path = StringParam(param, value);
    if (!path.ok()) return path.status();
    options->tokens_file = *path;
    return absl::OkStatus();
  }
  if (param == "audit_log") {
    absl::StatusOr<std::string> path = StringParam(param, value);
    if (!path.ok()) return path.status();
    options->audit_log = *path;
    return absl::OkStatus();
  }
  if (param == "require_auth" || param == "admin_token") {
    absl::StatusOr<bool> on = BoolParam(param, value);
    if (!on.ok()) return on.status();
    (param == "require_auth" ? options->require_auth : options->admin_token) = *on;
    return absl::OkStatus();
  }
  if (param == "local_role") {
    absl::StatusOr<std::string> text = StringParam(param, value);
    if (!text.ok()) return text.status();
    std::optional<mi::Role> role = mi::ParseRole(*text);
    if (!role.has_value()) {
      return absl::InvalidArgumentError("mi: local_role must be read, operate or admin");
    }
    options->local_role = *role;
    return absl::OkStatus();
  }
  if (param == "unix_roles" || param == "cert_roles") {
    absl::StatusOr<std::string> text = StringParam(param, value);
    if (!text.ok()) return text.status();
    const char separator = param == "unix_roles" ? ':' : '=';
    for (absl::string_view piece : absl::StrSplit(*text, ';', absl::SkipWhitespace())) {
      const std::string item(absl::StripAsciiWhitespace(piece));
      const size_t at = item.rfind(separator);
      std::optional<mi::Role> role =
          at == std::string::npos ? std::nullopt : mi::ParseRole(item.substr(at + 1));
      const std::string who = at == std::string::npos ? item : item.substr(0, at);
      if (!role.has_value() || who.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("mi: ", std::string(param), ": '", item,
                                                       "' is not WHO", std::string(1, separator),
                                                       "read|operate|admin"));
      }
      if (param == "unix_roles") {
        uid_t uid = 0;
        if (std::from_chars(who.data(), who.data() + who.size(), uid).ptr !=
            who.data() + who.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("mi: unix_roles: '", who, "' is not a numeric uid"));
        }
        options->unix_roles.emplace_back(uid, *role);
      } else {
        options->cert_roles.emplace_back(std::string(absl::StripAsciiWhitespace(who)), *role);
      }
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "mi: unknown parameter '", std::string(param),
      "' (known: tokens_file, require_auth, admin_token, audit_log, unix_roles, cert_roles, "
      "local_role)"));
}

absl::StatusOr<std::unique_ptr<MiSecurity>> MiSecurity::Create(const MiSecurityOptions& options,
                                                               const std::string& run_dir,
                                                               mi::StatsRegistry& stats) {
  std::unique_ptr<MiSecurity> security(new MiSecurity());
  security->options_ = options;
  security->own_uid_ = geteuid();
  if (!options.tokens_file.empty()) {
    absl::Status loaded = security->LoadTokensFile(options.tokens_file);
    if (!loaded.ok()) return loaded;
  }
  if (options.admin_token) {
    security->admin_token_path_ = run_dir + "/admin.token";
    absl::Status admin = security->LoadOrCreateAdminToken(security->admin_token_path_);
    if (!admin.ok()) return admin;
  }
  security->audit_log_path_ =
      options.audit_log.empty() ? run_dir + "/audit.log" : options.audit_log;
  stats.AddGroup("mi");
  security->audit_counter_ = stats.FindCounter("mi_audit");
  if (!security->audit_counter_.valid()) {
    absl::StatusOr<mi::Counter> counter = stats.AddCounter("mi", "mi_audit", mi::kStatNoReset);
    if (!counter.ok()) return counter.status();
    security->audit_counter_ = *counter;
  }
  return security;
}

MiSecurity::~MiSecurity() {
  if (audit_fd_ >= 0 && audit_fd_pid_ == getpid()) close(audit_fd_);
}

absl::Status MiSecurity::LoadTokensFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("mi: tokens_file ", path, ": ", Errno()));
  }
  if (absl::Status s = CheckPrivateFile(path, st, "mi: tokens_file"); !s.ok()) return s;
  std::ifstream in(path);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text.front() == '#') continue;
    std::vector<std::string> fields = absl::StrSplit(text, ' ', absl::SkipWhitespace());
    std::optional<mi::Role> role = fields.size() == 3 ? mi::ParseRole(fields[1]) : std::nullopt;
    const std::string hash = fields.size() == 3 ? absl::AsciiStrToLower(fields[2]) : "";
    if (!role.has_value() || !IsSha256Hex(hash)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mi: tokens_file ", path, ":", number,
          ": expected `NAME ROLE SHA256` (ROLE read|operate|admin, SHA256 = 64 hex digits of "
          "sha256sum of the token)"));
    }
    tokens_[hash] = TokenEntry{fields[0], *role};
  }
  spdlog::info("mi: {} token(s) from {}", tokens_.size(), path);
  return absl::OkStatus();
}

absl::Status MiSecurity::LoadOrCreateAdminToken(const std::string& path) {
  std::string token;
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (absl::Status s = CheckPrivateFile(path, st, "mi: admin token"); !s.ok()) return s;
    std::ifstream in(path);
    std::getline(in, token);
    token = std::string(absl::StripAsciiWhitespace(token));
  }
  if (token.size() < 32) {
    unsigned char bytes[32];
    if (getrandom(bytes, sizeof(bytes), 0) != static_cast<ssize_t>(sizeof(bytes))) {
      return absl::InternalError(absl::StrCat("mi: getrandom: ", Errno()));
    }
    static constexpr char kHex[] = "0123456789abcdef";
    token.clear();
    for (unsigned char b : bytes) {
      token.push_back(kHex[b >> 4]);
      token.push_back(kHex[b & 15]);
    }
    const std::string temp = path + ".tmp";
    unlink(temp.c_str());
    const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      return absl::FailedPreconditionError(absl::StrCat("mi: cannot create ", temp, ": ", Errno()));
    }
    const std::string line = token + "\n";
    const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    close(fd);
    if (!written || rename(temp.c_str(), path.c_str()) != 0) {
      unlink(temp.c_str());
      return absl::FailedPreconditionError(absl::StrCat("mi: cannot write ", path, ": ", Errno()));
    }
    spdlog::info("mi: created admin token {}", path);
  }
  tokens_[Sha256Hex(token)] = TokenEntry{"admin", mi::Role::kAdmin};
  return absl::OkStatus();
}

absl::Status MiSecurity::Identify(mi::CallContext& context) const {
  mi::Peer& peer = context.peer;
  if (!peer.token.empty()) {
    auto it = tokens_.find(Sha256Hex(peer.token));
    if (it == tokens_.end()) return absl::UnauthenticatedError("invalid token");
    peer.principal = it->second.name;
    peer.role = it->second.role;
    return absl::OkStatus();
  }
  if (!peer.tls_subject.empty()) {
    peer.principal = "cert:" + peer.tls_subject;
    peer.role = mi::Role::kRead;
    for (const auto& [subject, role] : options_.cert_roles) {
      if (subject == peer.tls_subject) peer.role = role;
    }
    return absl::OkStatus();
  }
  if (peer.uid_known()) {
    peer.principal = absl::StrCat("uid:", peer.uid);
    peer.role = mi::Role::kRead;
    if (peer.uid == 0 || peer.uid == own_uid_) peer.role = mi::Role::kAdmin;
    for (const auto& [uid, role] : options_.unix_roles) {
      if (uid == peer.uid) peer.role = role;
    }
    return absl::OkStatus();
  }
  if (options_.require_auth) {
    return absl::UnauthenticatedError("authentication required (require_auth is on)");
  }
  if (peer.role != mi::Role::kUnset) return absl::OkStatus();  // the transport's own setting
  if (!peer.local) {
    return absl::UnauthenticatedError("authentication required for callers from other hosts");
  }
  peer.role = options_.local_role;
  return absl::OkStatus();
}

absl::Status MiSecurity::Authorize(mi::CallContext& context, const mi::Command& command) const {
  if (absl::Status identified = Identify(context); !identified.ok()) return identified;
  return mi::CheckRole(context.peer.role, command);
}

absl::Status MiSecurity::PublishEvents(mi::EventRegistry& events) {
  absl::StatusOr<mi::EventId> id = events.Publish(
      {.name = "E_MI_AUDIT",
       .module = "mi",
       .help = "a mutating MI command was called (allowed or not): the audit record",
       .params = {{"principal", "token name, certificate subject or uid:N (- if anonymous)"},
                  {"role", "the caller's role"},
                  {"transport", "the MI transport"},
                  {"peer", "the caller's address"},
                  {"command", "the command"},
                  {"args", "its arguments, secret ones as ***"},
                  {"code", "the MI reply code (0 = the caller went away)"}},
       // Principals, peers and arguments of everybody: for administrators only.
       .required_role = mi::Role::kAdmin});
  if (!id.ok()) return id.status();
  events_ = &events;
  audit_event_ = *id;
  return absl::OkStatus();
}

void MiSecurity::Audit(const mi::CallContext& context, const mi::Command& command,
                       const mi::Request& request, uint32_t code) const {
  char when[32];
  const std::time_t now = std::time(nullptr);
  struct tm utc;
  gmtime_r(&now, &utc);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
  const mi::Peer& peer = context.peer;
  std::string line =
      absl::StrCat(when, " principal=", peer.principal.empty() ? "-" : peer.principal,
                   " role=", std::string(mi::RoleName(peer.role)),
                   " transport=", std::string(mi::TransportName(context.transport)),
                   " peer=", AuditValue(peer.address), " command=", command.name(), " args=[");
  for (size_t i = 0; i < request.args.size(); ++i) {
    if (i > 0) line += ", ";
    const mi::Argument& arg = request.args[i];
    if (!arg.name.empty()) absl::StrAppend(&line, arg.name, "::");
    line += IsSecretArgument(command, i) ? "***" : AuditValue(arg.value);
  }
  absl::StrAppend(&line, "] code=", code, "\n");
  audit_counter_.Inc();
  if (events_ != nullptr && events_->Wanted(audit_event_)) {
    const size_t args_begin = line.find(" args=[") + 7;
    const size_t args_end = line.rfind("] code=");
    events_->Raise(
        audit_event_,
        {peer.principal.empty() ? std::string_view("-") : peer.principal, mi::RoleName(peer.role),
         mi::TransportName(context.transport), peer.address, command.name(),
         std::string_view(line).substr(args_begin, args_end - args_begin), code});
  }
  std::lock_guard<std::mutex> lock(audit_mu_);
  if (audit_fd_ < 0 || audit_fd_pid_ != getpid()) {
    // Opened once per process (not inherited across fork: each process has its own).
    audit_fd_ = open(audit_log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    audit_fd_pid_ = getpid();
    if (audit_fd_ < 0) {
      spdlog::error("mi: cannot open audit log {}: {}", audit_log_path_, Errno());
      return;
    }
  }
  if (write(audit_fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    spdlog::error("mi: audit log {}: write failed: {}", audit_log_path_, Errno());
  }
}

}  // namespace sipd
