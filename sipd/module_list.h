// The modules sipd can `loadmodule`, by name. Modules are linked into the sipd binary
// (no dlopen); sipd/module_list.cc holds the table.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sipd/api/module.h"

namespace sipd {

struct ModuleEntry {
  std::string_view name;
  std::unique_ptr<Module> (*factory)();
};

// Every known module, in table order.
const std::vector<ModuleEntry>& ModuleTable();

// A new instance of the named module, or nullptr if sipd has no such module.
std::unique_ptr<Module> CreateModule(std::string_view name);

}  // namespace sipd
