// Fuzz target: the request message of a typed gRPC method (sipd.core.v1, sipd.usrloc.v1,
// sipd.dialog.v1, sipd.statistics.v1; registry/typed_method.h), as the MI gRPC process
// turns it into MI arguments: protobuf parses the bytes, then the method's ToArguments
// checks the fields (AORs, page tokens, page sizes, dialog ids, log levels, ...) and
// builds the command's arguments. The first input byte picks the method; the rest is
// the request message.
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "google/protobuf/message.h"
#include "registry/statistics.h"
#include "registry/statistics_typed.h"
#include "registry/typed_method.h"
#include "sipd/modules/core/core_typed.h"
#include "sipd/modules/dialog/dialog_typed.h"
#include "sipd/modules/usrloc/ul_typed.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_registry.h"

namespace {

struct Methods {
  Methods() {
    spdlog::set_level(spdlog::level::off);
    cells = std::vector<std::atomic<uint64_t>>(64);
    stats = std::make_unique<sipd::mi::StatsRegistry>(
        std::span<std::atomic<uint64_t>>(cells.data(), cells.size()));
    list = {sipd::ListProcessesMethod(),
            sipd::GetUptimeMethod(),
            sipd::GetVersionMethod(),
            sipd::GetLogLevelMethod(),
            sipd::SetLogLevelMethod(),
            sipd::ListCommandsMethod(*registry),
            sipd::usrloc::ListContactsMethod(),
            sipd::usrloc::StreamContactsMethod(),
            sipd::usrloc::GetContactsMethod(),
            sipd::usrloc::RemoveAorMethod(),
            sipd::usrloc::RemoveContactMethod(),
            sipd::usrloc::AddContactMethod(),
            sipd::usrloc::FlushMethod(),
            sipd::dialog::ListDialogsMethod(),
            sipd::dialog::StreamDialogsMethod(),
            sipd::dialog::GetDialogMethod(),
            sipd::dialog::EndDialogMethod(),
            sipd::dialog::GetProfileSizeMethod(),
            sipd::dialog::ListProfileDialogsMethod(),
            sipd::dialog::ListProfilesMethod(),
            sipd::mi::GetStatisticsMethod(*stats),
            sipd::mi::ResetStatisticsMethod()};
  }
  std::unique_ptr<sipd::mi::Registry> registry = sipd::fuzz::NewFuzzRegistry();
  std::vector<std::atomic<uint64_t>> cells;
  std::unique_ptr<sipd::mi::StatsRegistry> stats;
  std::vector<std::shared_ptr<const sipd::mi::TypedMethod>> list;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Methods methods;
  if (size == 0) return 0;
  const sipd::mi::TypedMethod& method = *methods.list[data[0] % methods.list.size()];
  std::unique_ptr<google::protobuf::Message> request = method.NewRequest();
  if (!request->ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  (void)method.ToArguments(*request);
  return 0;
}
