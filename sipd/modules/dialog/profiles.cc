#include "sipd/modules/dialog/profiles.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sipd/modules/tm/sip_message.h"

namespace sipd::dialog {
namespace {

constexpr size_t kMaxProfileName = 64;

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

const std::pair<std::string_view, ValueSource> kSources[] = {
    {"from_user", ValueSource::kFromUser},     {"from_uri", ValueSource::kFromUri},
    {"from_domain", ValueSource::kFromDomain}, {"to_user", ValueSource::kToUser},
    {"to_uri", ValueSource::kToUri},           {"to_domain", ValueSource::kToDomain},
    {"ruri_user", ValueSource::kRuriUser},     {"ruri", ValueSource::kRuri},
    {"ruri_domain", ValueSource::kRuriDomain}, {"source_ip", ValueSource::kSourceIp},
    {"socket", ValueSource::kSocket},
};

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxProfileName) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

std::optional<ValueSource> ParseSource(std::string_view text) {
  for (const auto& [name, source] : kSources) {
    if (name == text) return source;
  }
  return std::nullopt;
}

std::string UriPart(std::string_view uri, ValueSource part) {
  absl::StatusOr<tm::SipUri> parsed = tm::ParseUri(uri);
  if (!parsed.ok()) return part == ValueSource::kNone ? std::string(uri) : std::string();
  switch (part) {
    case ValueSource::kFromUser:
    case ValueSource::kToUser:
    case ValueSource::kRuriUser:
      return std::string(parsed->user);
    case ValueSource::kFromDomain:
    case ValueSource::kToDomain:
    case ValueSource::kRuriDomain:
      return absl::AsciiStrToLower(Absl(parsed->host));
    default:
      return std::string(uri);
  }
}

}  // namespace

absl::Status ParseProfiles(std::string_view text, bool with_value,
                           std::vector<ProfileSpec>& profiles) {
  const char* param = with_value ? "profiles_with_value" : "profiles_no_value";
  for (absl::string_view item : absl::StrSplit(Absl(text), ';', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    ProfileSpec spec;
    spec.has_value = with_value;
    const size_t slash = item.find('/');
    spec.name = std::string(absl::StripAsciiWhitespace(item.substr(0, slash)));
    if (!ValidName(spec.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("dialog: ", param, ": bad profile name '", spec.name, "'"));
    }
    for (const ProfileSpec& other : profiles) {
      if (other.name == spec.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("dialog: profile '", spec.name, "' declared twice"));
      }
    }
    std::string_view rest;
    if (slash != absl::string_view::npos) {
      absl::string_view r = absl::StripAsciiWhitespace(item.substr(slash + 1));
      rest = std::string_view(r.data(), r.size());
    }
    if (with_value) {
      std::optional<ValueSource> source = ParseSource(rest);
      if (!source.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dialog: ", param, ": profile '", spec.name,
            "' needs /SOURCE, one of from_user, from_uri, from_domain, to_user, to_uri, "
            "to_domain, ruri_user, ruri, ruri_domain, source_ip, socket"));
      }
      spec.source = *source;
    } else if (!rest.empty()) {
      const size_t eq = rest.find('=');
      std::optional<ValueSource> source =
          eq == std::string_view::npos ? std::nullopt : ParseSource(rest.substr(0, eq));
      if (!source.has_value() || eq + 1 >= rest.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("dialog: ", param, ": profile '", spec.name,
                         "' takes no value; write NAME or NAME/SOURCE=VALUE"));
      }
      spec.source = *source;
      spec.literal = std::string(rest.substr(eq + 1));
    }
    profiles.push_back(std::move(spec));
  }
  return absl::OkStatus();
}

std::string SourceValue(ValueSource source, const RequestValues& r) {
  switch (source) {
    case ValueSource::kNone:
      return {};
    case ValueSource::kFromUser:
    case ValueSource::kFromDomain:
      return UriPart(r.from_uri, source);
    case ValueSource::kFromUri:
      return r.from_uri;
    case ValueSource::kToUser:
    case ValueSource::kToDomain:
      return UriPart(r.to_uri, source);
    case ValueSource::kToUri:
      return r.to_uri;
    case ValueSource::kRuriUser:
    case ValueSource::kRuriDomain:
      return UriPart(r.ruri, source);
    case ValueSource::kRuri:
      return r.ruri;
    case ValueSource::kSourceIp:
      return r.source_ip;
    case ValueSource::kSocket:
      return r.socket;
  }
  return {};
}

std::vector<ProfileLink> LinksFor(const std::vector<ProfileSpec>& profiles,
                                  const RequestValues& request) {
  std::vector<ProfileLink> links;
  for (size_t i = 0; i < profiles.size() && links.size() < kMaxProfileLinks; ++i) {
    const ProfileSpec& p = profiles[i];
    const auto index = static_cast<uint16_t>(i);
    if (p.has_value) {
      std::string value = SourceValue(p.source, request);
      if (!value.empty() && value.size() <= kMaxFieldLength) {
        links.push_back(ProfileLink{index, std::move(value)});
      }
    } else if (p.source == ValueSource::kNone || SourceValue(p.source, request) == p.literal) {
      links.push_back(ProfileLink{index, {}});
    }
  }
  return links;
}

}  // namespace sipd::dialog
