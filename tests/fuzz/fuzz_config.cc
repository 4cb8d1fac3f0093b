// Fuzz target: the configuration parser (sipd/core/config.h) with every module factory,
// so modparam values reach the modules' SetParam.
#include <cstdint>
#include <string_view>

#include "sipd/core/config.h"
#include "sipd/module_list.h"
#include "spdlog/spdlog.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);  // modules log what they refuse
    return true;
  }();
  (void)quiet;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)sipd::ParseConfig(text, "fuzz.cfg", &sipd::CreateModule);
  return 0;
}
