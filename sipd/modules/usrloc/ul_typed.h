// The typed face of the usrloc MI commands: sipd.usrloc.v1.LocationService
// (proto/sipd/usrloc/v1/usrloc.proto). Each function returns the typed method that
// RegisterMiCommands() declares on one command (registry/typed_method.h): conversions
// between the typed messages and that command's arguments and reply tree, nothing else.
//
//   ListContacts   ul_dump_page table page_size page_token [aor_prefix]
//   StreamContacts ul_dump (pulled; items = the AOR nodes, filtered by table)
//   GetContacts    ul_dump_aor table aor
//   RemoveAor      ul_rm table aor
//   RemoveContact  ul_rm_contact table aor uri
//   AddContact     ul_add table aor uri expires q 0 flags cflags methods
//   Flush          ul_flush
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "registry/command.h"
#include "registry/tree.h"

namespace sipd::usrloc {

namespace v1 {
class Aor;
}  // namespace v1

std::shared_ptr<const mi::TypedMethod> ListContactsMethod();
std::shared_ptr<const mi::TypedMethod> StreamContactsMethod();
std::shared_ptr<const mi::TypedMethod> GetContactsMethod();
std::shared_ptr<const mi::TypedMethod> RemoveAorMethod();
std::shared_ptr<const mi::TypedMethod> RemoveContactMethod();
std::shared_ptr<const mi::TypedMethod> AddContactMethod();
std::shared_ptr<const mi::TypedMethod> FlushMethod();

// An `AOR:: aor` node of ul_dump (with its Contact kids) as a typed Aor of `table`.
// InternalError naming the line that does not parse.
absl::Status AorFromNode(const mi::Node& aor_node, const std::string& table, v1::Aor* out);

}  // namespace sipd::usrloc
