// The usrloc MI commands (spec section 8.1): ul_rm, ul_rm_contact, ul_dump, ul_flush,
// ul_add, ul_show_contact, ul_sync, in OpenSIPS's export order, module "usrloc".
#pragma once

#include "absl/status/status.h"
#include "registry/command.h"
#include "registry/tree.h"
#include "sipd/modules/usrloc/contact.h"

namespace sipd::usrloc {

class Usrloc;

// REQUIRES: `usrloc` outlives the registry's use of the commands.
absl::Status RegisterMiCommands(Usrloc& usrloc, mi::Registry& registry);

// The `AOR` node of ul_dump (with its Contact kids unless `brief`), appended to `domain`.
void AppendAorNode(mi::Node& domain, const AorSnapshot& aor, bool brief, int64_t now);

// The value of one ul_show_contact `Contact` node.
std::string FormatShowContact(const ContactInfo& contact, int64_t now);

}  // namespace sipd::usrloc
