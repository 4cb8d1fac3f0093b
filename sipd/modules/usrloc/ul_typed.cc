#include "sipd/modules/usrloc/ul_typed.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "registry/typed_method.h"
#include "sipd/modules/usrloc/contact.h"
#include "sipd/usrloc/v1/usrloc.pb.h"

namespace sipd::usrloc {
namespace {

namespace ulv1 = ::sipd::usrloc::v1;
using mi::Reply;

constexpr char kService[] = "sipd.usrloc.v1.LocationService.";
constexpr int32_t kDefaultPageSize = 100;
constexpr int32_t kMaxPageSize = 1000;

std::string Method(std::string_view name) {
  return absl::StrCat(kService, absl::string_view(name.data(), name.size()));
}

using Args = absl::StatusOr<std::vector<mi::Argument>>;

// A field the request must set.
absl::Status Required(std::string_view field, const std::string& value) {
  if (!value.empty()) return absl::OkStatus();
  return mi::FieldError(field, "required");
}

absl::Status Malformed(const mi::Node& node) {
  return absl::InternalError(absl::StrCat("ul_dump line '", node.name, ":: ", node.value, "'"));
}

absl::Status ParseUint(const mi::Node& node, uint32_t* out) {
  return absl::SimpleAtoi(node.value, out) ? absl::OkStatus() : Malformed(node);
}

// "0 2" (the set bits' numbers, see FormatBranchFlags) -> 0b101.
absl::Status ParseBranchFlags(const mi::Node& node, uint32_t* out) {
  *out = 0;
  for (absl::string_view name : absl::StrSplit(node.value, ' ', absl::SkipEmpty())) {
    uint32_t bit = 0;
    if (!absl::SimpleAtoi(name, &bit) || bit > 31) return Malformed(node);
    *out |= 1u << bit;
  }
  return absl::OkStatus();
}

absl::Status ContactFromNode(const mi::Node& node, ulv1::Contact* out) {
  out->set_uri(node.value);
  for (const mi::Attribute& attr : node.attributes) {
    if (attr.name != "Q" || attr.value.empty()) continue;
    std::optional<int32_t> q = ParseQ(attr.value);
    if (!q.has_value()) return Malformed(node);
    out->set_q(static_cast<float>(*q) / kQMax);
  }
  for (const auto& kid : node.kids) {
    const std::string& name = kid->name;
    uint32_t number = 0;
    if (name == "Expires") {
      if (kid->value == "expired" || kid->value == "deleted") {
        out->set_expires_seconds(0);
      } else if (kid->value != "permanent") {
        int64_t seconds = 0;
        if (!absl::SimpleAtoi(kid->value, &seconds)) return Malformed(*kid);
        out->set_expires_seconds(seconds);
      }
    } else if (name == "Callid") {
      out->set_call_id(kid->value);
    } else if (name == "Cseq") {
      if (absl::Status s = ParseUint(*kid, &number); !s.ok()) return s;
      out->set_cseq(number);
    } else if (name == "User-agent") {
      out->set_user_agent(kid->value);
    } else if (name == "Received") {
      out->set_received(kid->value);
    } else if (name == "Path") {
      out->set_path(kid->value);
    } else if (name == "State") {
      out->set_state(kid->value == "CS_NEW"     ? ulv1::CONTACT_STATE_NEW
                     : kid->value == "CS_SYNC"  ? ulv1::CONTACT_STATE_SYNC
                     : kid->value == "CS_DIRTY" ? ulv1::CONTACT_STATE_DIRTY
                                                : ulv1::CONTACT_STATE_UNSPECIFIED);
    } else if (name == "Flags") {
      if (absl::Status s = ParseUint(*kid, &number); !s.ok()) return s;
      out->set_flags(number);
    } else if (name == "Cflags") {
      if (absl::Status s = ParseBranchFlags(*kid, &number); !s.ok()) return s;
      out->set_cflags(number);
    } else if (name == "Socket") {
      out->set_socket(kid->value);
    } else if (name == "Methods") {
      if (absl::Status s = ParseUint(*kid, &number); !s.ok()) return s;
      out->set_methods(number);
    } else if (name == "SIP_instance") {
      out->set_instance(kid->value);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status AorFromNode(const mi::Node& aor_node, const std::string& table, ulv1::Aor* out) {
  if (aor_node.name != "AOR") return Malformed(aor_node);
  out->set_aor(aor_node.value);
  out->set_table(table);
  for (const auto& contact : aor_node.kids) {
    if (contact->name != "Contact") return Malformed(*contact);
    if (absl::Status s = ContactFromNode(*contact, out->add_contacts()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::shared_ptr<const mi::TypedMethod> ListContactsMethod() {
  return mi::TypedUnary<ulv1::ListContactsRequest, ulv1::ListContactsResponse>(
      Method("ListContacts"),
      [](const ulv1::ListContactsRequest& request) -> Args {
        if (absl::Status s = Required("table", request.table()); !s.ok()) return s;
        if (request.page_size() < 0) return mi::FieldError("page_size", "must not be negative");
        const int32_t page_size = request.page_size() == 0
                                      ? kDefaultPageSize
                                      : std::min(request.page_size(), kMaxPageSize);
        std::vector<std::string> args = {request.table(), absl::StrCat(page_size),
                                         request.page_token().empty() ? "." : request.page_token()};
        if (!request.aor_prefix().empty()) args.push_back(request.aor_prefix());
        return mi::Arguments(std::move(args));
      },
      [](const ulv1::ListContactsRequest& request, const Reply& reply,
         ulv1::ListContactsResponse& out) -> absl::Status {
        for (const auto& node : reply.root.kids) {
          if (node->name == "Next") {
            out.set_next_page_token(node->value);
            continue;
          }
          for (const auto& aor : node->kids) {
            if (absl::Status s = AorFromNode(*aor, request.table(), out.add_aors()); !s.ok()) {
              return s;
            }
          }
        }
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> StreamContactsMethod() {
  return mi::TypedServerStream<ulv1::StreamContactsRequest, ulv1::StreamContactsResponse>(
      Method("StreamContacts"),
      [](const ulv1::StreamContactsRequest&) { return mi::NoArguments(); },
      /*item_depth=*/1,
      [](const ulv1::StreamContactsRequest& request, const mi::Ancestors& ancestors,
         const mi::Node& aor, ulv1::StreamContactsResponse& out) -> absl::Status {
        const std::string& table = ancestors.front()->value;
        if (!request.table().empty() && request.table() != table) return absl::OkStatus();
        return AorFromNode(aor, table, out.add_aors());
      });
}

std::shared_ptr<const mi::TypedMethod> GetContactsMethod() {
  return mi::TypedUnary<ulv1::GetContactsRequest, ulv1::GetContactsResponse>(
      Method("GetContacts"),
      [](const ulv1::GetContactsRequest& request) -> Args {
        if (absl::Status s = Required("table", request.table()); !s.ok()) return s;
        if (absl::Status s = Required("aor", request.aor()); !s.ok()) return s;
        return mi::Arguments({request.table(), request.aor()});
      },
      [](const ulv1::GetContactsRequest& request, const Reply& reply,
         ulv1::GetContactsResponse& out) -> absl::Status {
        if (reply.root.kids.size() != 1) {
          return absl::InternalError("ul_dump_aor: not one AOR node");
        }
        return AorFromNode(*reply.root.kids.front(), request.table(), out.mutable_aor());
      });
}

std::shared_ptr<const mi::TypedMethod> RemoveAorMethod() {
  return mi::TypedUnary<ulv1::RemoveAorRequest, ulv1::RemoveAorResponse>(
      Method("RemoveAor"),
      [](const ulv1::RemoveAorRequest& request) -> Args {
        if (absl::Status s = Required("table", request.table()); !s.ok()) return s;
        if (absl::Status s = Required("aor", request.aor()); !s.ok()) return s;
        return mi::Arguments({request.table(), request.aor()});
      },
      [](const ulv1::RemoveAorRequest&, const Reply&, ulv1::RemoveAorResponse&) {
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> RemoveContactMethod() {
  return mi::TypedUnary<ulv1::RemoveContactRequest, ulv1::RemoveContactResponse>(
      Method("RemoveContact"),
      [](const ulv1::RemoveContactRequest& request) -> Args {
        if (absl::Status s = Required("table", request.table()); !s.ok()) return s;
        if (absl::Status s = Required("aor", request.aor()); !s.ok()) return s;
        if (absl::Status s = Required("uri", request.uri()); !s.ok()) return s;
        return mi::Arguments({request.table(), request.aor(), request.uri()});
      },
      [](const ulv1::RemoveContactRequest&, const Reply&, ulv1::RemoveContactResponse&) {
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> AddContactMethod() {
  return mi::TypedUnary<ulv1::AddContactRequest, ulv1::AddContactResponse>(
      Method("AddContact"),
      [](const ulv1::AddContactRequest& request) -> Args {
        if (absl::Status s = Required("table", request.table()); !s.ok()) return s;
        if (absl::Status s = Required("aor", request.aor()); !s.ok()) return s;
        if (absl::Status s = Required("uri", request.uri()); !s.ok()) return s;
        const float q = request.has_q() ? request.q() : 1.0f;
        if (!(q >= 0.0f && q <= 1.0f)) return mi::FieldError("q", "must be from 0 to 1");
        return mi::Arguments(
            {request.table(), request.aor(), request.uri(), absl::StrCat(request.expires_seconds()),
             absl::StrFormat("%.3f", std::round(q * kQMax) / kQMax), "0",
             absl::StrCat(request.flags()), absl::StrCat(request.cflags()),
             absl::StrCat(request.has_methods() ? request.methods() : kAllMethods)});
      },
      [](const ulv1::AddContactRequest&, const Reply&, ulv1::AddContactResponse&) {
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> FlushMethod() {
  return mi::TypedUnary<ulv1::FlushRequest, ulv1::FlushResponse>(
      Method("Flush"), [](const ulv1::FlushRequest&) { return mi::NoArguments(); },
      [](const ulv1::FlushRequest&, const Reply&, ulv1::FlushResponse&) {
        return absl::OkStatus();
      });
}

}  // namespace sipd::usrloc
