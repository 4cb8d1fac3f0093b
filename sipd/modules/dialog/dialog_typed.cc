#include "sipd/modules/dialog/dialog_typed.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "registry/typed_method.h"
#include "sipd/dialog/v1/dialog.pb.h"

namespace sipd::dialog {
namespace {

namespace dlgv1 = ::sipd::dialog::v1;
using mi::Node;
using mi::Reply;
using Args = absl::StatusOr<std::vector<mi::Argument>>;

constexpr char kService[] = "sipd.dialog.v1.DialogService.";
constexpr int32_t kDefaultPageSize = 100;
constexpr int32_t kMaxPageSize = 1000;

std::string Method(std::string_view name) {
  return absl::StrCat(kService, absl::string_view(name.data(), name.size()));
}

// A field the request must set.
absl::Status Required(std::string_view field, const std::string& value) {
  if (!value.empty()) return absl::OkStatus();
  return mi::FieldError(field, "required");
}

absl::Status Malformed(const Node& node) {
  return absl::InternalError(absl::StrCat("dialog line '", node.name, ":: ", node.value, "'"));
}

// An unsigned decimal, all of `text` (as dlg_list reads index and count).
template <typename T>
std::optional<T> ParseUnsigned(std::string_view text) {
  T v = 0;
  if (text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

template <typename T>
absl::Status ParseKid(const Node& node, T* out) {
  std::optional<T> v = ParseUnsigned<T>(node.value);
  if (!v.has_value()) return Malformed(node);
  *out = *v;
  return absl::OkStatus();
}

// A unix time kid ("0" = not set) into `out`, left absent for 0.
absl::Status ParseTime(const Node& node,
                       google::protobuf::Timestamp* (dlgv1::Dialog::*mutable_ts)(),
                       dlgv1::Dialog* out) {
  int64_t seconds = 0;
  if (absl::Status s = ParseKid(node, &seconds); !s.ok()) return s;
  if (seconds != 0) (out->*mutable_ts)()->set_seconds(seconds);
  return absl::OkStatus();
}

absl::Status CalleeFromNode(const Node& callee, dlgv1::DialogLeg* out) {
  for (const auto& kid : callee.kids) {
    const std::string& name = kid->name;
    if (name == "callee_tag") {
      out->set_tag(kid->value);
    } else if (name == "callee_contact") {
      out->set_contact(kid->value);
    } else if (name == "caller_cseq") {  // sic (1.11): the callee leg's own CSeq
      uint32_t cseq = 0;
      if (absl::Status s = ParseKid(*kid, &cseq); !s.ok()) return s;
      out->set_cseq(cseq);
    } else if (name == "callee_route_set") {
      out->set_route_set(kid->value);
    } else if (name == "callee_bind_addr") {
      out->set_bind_address(kid->value);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DialogFromNode(const Node& node, dlgv1::Dialog* out) {
  if (node.name != "dialog") return Malformed(node);
  for (const mi::Attribute& attr : node.attributes) {
    if (attr.name == "hash") {
      out->set_id(attr.value);
    } else if (attr.name == "dialog_id") {
      std::optional<uint64_t> id = ParseUnsigned<uint64_t>(attr.value);
      if (!id.has_value()) return Malformed(node);
      out->set_dialog_id(*id);
    }
  }
  for (const auto& kid : node.kids) {
    const std::string& name = kid->name;
    if (name == "state") {
      uint32_t state = 0;
      if (absl::Status s = ParseKid(*kid, &state); !s.ok()) return s;
      if (!dlgv1::DialogState_IsValid(static_cast<int>(state)) || state == 0) {
        return Malformed(*kid);
      }
      out->set_state(static_cast<dlgv1::DialogState>(state));
    } else if (name == "user_flags") {
      uint32_t flags = 0;
      if (absl::Status s = ParseKid(*kid, &flags); !s.ok()) return s;
      out->set_user_flags(flags);
    } else if (name == "timestart") {
      if (absl::Status s = ParseTime(*kid, &dlgv1::Dialog::mutable_start_time, out); !s.ok()) {
        return s;
      }
    } else if (name == "timeout") {
      if (absl::Status s = ParseTime(*kid, &dlgv1::Dialog::mutable_timeout_time, out); !s.ok()) {
        return s;
      }
    } else if (name == "callid") {
      out->set_call_id(kid->value);
    } else if (name == "from_uri") {
      out->set_from_uri(kid->value);
    } else if (name == "to_uri") {
      out->set_to_uri(kid->value);
    } else if (name == "caller_tag") {
      out->mutable_caller()->set_tag(kid->value);
    } else if (name == "caller_contact") {
      out->mutable_caller()->set_contact(kid->value);
    } else if (name == "callee_cseq") {  // sic (1.11): the caller leg's CSeq
      uint32_t cseq = 0;
      if (absl::Status s = ParseKid(*kid, &cseq); !s.ok()) return s;
      out->mutable_caller()->set_cseq(cseq);
    } else if (name == "caller_route_set") {
      out->mutable_caller()->set_route_set(kid->value);
    } else if (name == "caller_bind_addr") {
      out->mutable_caller()->set_bind_address(kid->value);
    } else if (name == "CALLEES") {
      // At most one callee leg in sipd (dlg_mi.h); the first one if a reply had more.
      if (!kid->kids.empty()) {
        if (absl::Status s = CalleeFromNode(*kid->kids.front(), out->mutable_callee()); !s.ok()) {
          return s;
        }
      }
    } else if (name == "context") {
      for (const auto& part : kid->kids) {
        if (part->name != "profiles") continue;
        for (const auto& link : part->kids) {
          dlgv1::ProfileLink* p = out->add_profiles();
          p->set_profile(link->name);
          p->set_value(link->value);
        }
      }
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<const mi::TypedMethod> ListDialogsMethod() {
  return mi::TypedUnary<dlgv1::ListDialogsRequest, dlgv1::ListDialogsResponse>(
      Method("ListDialogs"),
      [](const dlgv1::ListDialogsRequest& request) -> Args {
        if (request.page_size() < 0) return mi::FieldError("page_size", "must not be negative");
        const int32_t page_size = request.page_size() == 0
                                      ? kDefaultPageSize
                                      : std::min(request.page_size(), kMaxPageSize);
        uint64_t offset = 0;
        if (!request.page_token().empty()) {
          std::optional<uint64_t> token = ParseUnsigned<uint64_t>(request.page_token());
          if (!token.has_value()) {
            return mi::FieldError("page_token", "not a next_page_token of ListDialogs");
          }
          offset = *token;
        }
        return mi::Arguments({absl::StrCat(offset), absl::StrCat(page_size)});
      },
      [](const dlgv1::ListDialogsRequest& request, const Reply& reply,
         dlgv1::ListDialogsResponse& out) -> absl::Status {
        for (const auto& node : reply.root.kids) {
          if (node->name == "dlg_counter") {
            int64_t total = 0;
            if (absl::Status s = ParseKid(*node, &total); !s.ok()) return s;
            out.set_total_size(total);
            continue;
          }
          if (absl::Status s = DialogFromNode(*node, out.add_dialogs()); !s.ok()) return s;
        }
        // The arguments above were valid, so the token parses (or is empty).
        const uint64_t offset = ParseUnsigned<uint64_t>(request.page_token()).value_or(0);
        const int32_t page_size = request.page_size() == 0
                                      ? kDefaultPageSize
                                      : std::min(request.page_size(), kMaxPageSize);
        const uint64_t next = offset + static_cast<uint64_t>(out.dialogs_size());
        if (out.dialogs_size() == page_size && next < static_cast<uint64_t>(out.total_size())) {
          out.set_next_page_token(absl::StrCat(next));
        }
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> StreamDialogsMethod() {
  return mi::TypedServerStream<dlgv1::StreamDialogsRequest, dlgv1::StreamDialogsResponse>(
      Method("StreamDialogs"), [](const dlgv1::StreamDialogsRequest&) { return mi::NoArguments(); },
      /*item_depth=*/0,
      [](const dlgv1::StreamDialogsRequest&, const mi::Ancestors&, const Node& dialog,
         dlgv1::StreamDialogsResponse& out) { return DialogFromNode(dialog, out.add_dialogs()); });
}

std::shared_ptr<const mi::TypedMethod> GetDialogMethod() {
  return mi::TypedUnary<dlgv1::GetDialogRequest, dlgv1::GetDialogResponse>(
      Method("GetDialog"),
      [](const dlgv1::GetDialogRequest& request) -> Args {
        if (absl::Status s = Required("call_id", request.call_id()); !s.ok()) return s;
        if (request.from_tag().empty()) return mi::Arguments({request.call_id()});
        if (ParseUnsigned<uint64_t>(request.call_id()).has_value() &&
            ParseUnsigned<uint64_t>(request.from_tag()).has_value()) {
          return mi::FieldError("from_tag",
                                "a numeric call_id with a numeric from_tag is read by dlg_list as "
                                "paging (index, count); leave from_tag empty");
        }
        return mi::Arguments({request.call_id(), request.from_tag()});
      },
      [](const dlgv1::GetDialogRequest&, const Reply& reply,
         dlgv1::GetDialogResponse& out) -> absl::Status {
        if (reply.root.kids.size() != 1) {
          return absl::InternalError("dlg_list_ctx callid: not one dialog node");
        }
        return DialogFromNode(*reply.root.kids.front(), out.mutable_dialog());
      });
}

std::shared_ptr<const mi::TypedMethod> EndDialogMethod() {
  return mi::TypedUnary<dlgv1::EndDialogRequest, dlgv1::EndDialogResponse>(
      Method("EndDialog"),
      [](const dlgv1::EndDialogRequest& request) -> Args {
        if (absl::Status s = Required("id", request.id()); !s.ok()) return s;
        const std::string_view id = request.id();
        const size_t colon = id.find(':');
        if (colon == std::string_view::npos ||
            !ParseUnsigned<uint32_t>(id.substr(0, colon)).has_value() ||
            !ParseUnsigned<uint32_t>(id.substr(colon + 1)).has_value()) {
          return mi::FieldError("id", "not \"h_entry:h_id\" (Dialog.id)");
        }
        std::vector<std::string> args = {std::string(id.substr(0, colon)),
                                         std::string(id.substr(colon + 1))};
        if (!request.extra_headers().empty()) args.push_back(request.extra_headers());
        return mi::Arguments(std::move(args));
      },
      [](const dlgv1::EndDialogRequest&, const Reply&, dlgv1::EndDialogResponse&) {
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> GetProfileSizeMethod() {
  return mi::TypedUnary<dlgv1::GetProfileSizeRequest, dlgv1::GetProfileSizeResponse>(
      Method("GetProfileSize"),
      [](const dlgv1::GetProfileSizeRequest& request) -> Args {
        if (absl::Status s = Required("profile", request.profile()); !s.ok()) return s;
        if (request.value().empty()) return mi::Arguments({request.profile()});
        return mi::Arguments({request.profile(), request.value()});
      },
      [](const dlgv1::GetProfileSizeRequest&, const Reply& reply,
         dlgv1::GetProfileSizeResponse& out) -> absl::Status {
        if (reply.root.kids.size() != 1 || reply.root.kids.front()->name != "profile") {
          return absl::InternalError("profile_get_size: not one profile node");
        }
        const Node& node = *reply.root.kids.front();
        for (const mi::Attribute& attr : node.attributes) {
          if (attr.name != "count") continue;
          std::optional<uint64_t> count = ParseUnsigned<uint64_t>(attr.value);
          if (!count.has_value()) return Malformed(node);
          out.set_count(*count);
          return absl::OkStatus();
        }
        return Malformed(node);
      });
}

std::shared_ptr<const mi::TypedMethod> ListProfileDialogsMethod() {
  return mi::TypedServerStream<dlgv1::ListProfileDialogsRequest, dlgv1::ListProfileDialogsResponse>(
      Method("ListProfileDialogs"),
      [](const dlgv1::ListProfileDialogsRequest& request) -> Args {
        if (absl::Status s = Required("profile", request.profile()); !s.ok()) return s;
        if (request.value().empty()) return mi::Arguments({request.profile()});
        return mi::Arguments({request.profile(), request.value()});
      },
      /*item_depth=*/0,
      [](const dlgv1::ListProfileDialogsRequest&, const mi::Ancestors&, const Node& dialog,
         dlgv1::ListProfileDialogsResponse& out) {
        return DialogFromNode(dialog, out.add_dialogs());
      });
}

std::shared_ptr<const mi::TypedMethod> ListProfilesMethod() {
  return mi::TypedUnary<dlgv1::ListProfilesRequest, dlgv1::ListProfilesResponse>(
      Method("ListProfiles"), [](const dlgv1::ListProfilesRequest&) { return mi::NoArguments(); },
      [](const dlgv1::ListProfilesRequest&, const Reply& reply,
         dlgv1::ListProfilesResponse& out) -> absl::Status {
        for (const auto& node : reply.root.kids) {
          if (node->value != "0" && node->value != "1") return Malformed(*node);
          dlgv1::Profile* p = out.add_profiles();
          p->set_name(node->name);
          p->set_has_value(node->value == "1");
        }
        return absl::OkStatus();
      });
}

}  // namespace sipd::dialog
