#include <charconv>
#include <exception>

#include "absl/strings/str_cat.h"
#include "sipd/api/module.h"
#include "sipd/modules/tm/tm_api.h"
#include "spdlog/spdlog.h"

namespace sipd::tm {
namespace {

// Runs every callback; one that throws is logged and does not stop the others.
template <typename Fn, typename Event>
void RunAll(const std::vector<Fn>& fns, Event& event, const char* what) {
  for (const Fn& fn : fns) {
    try {
      fn(event);
    } catch (const std::exception& e) {
      spdlog::error("tm: {} callback failed: {}", what, e.what());
    } catch (...) {
      spdlog::error("tm: {} callback failed with an unknown exception", what);
    }
  }
}

}  // namespace

std::string_view ProtoName(Proto proto) { return proto == Proto::kTcp ? "tcp" : "udp"; }

std::string TransactionId::ToString() const { return absl::StrCat(index, ":", label); }

std::optional<TransactionId> TransactionId::Parse(std::string_view text) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  TransactionId id;
  const char* begin = text.data();
  const char* middle = text.data() + colon;
  const char* end = text.data() + text.size();
  if (colon == 0 || std::from_chars(begin, middle, id.index).ptr != middle) return std::nullopt;
  if (middle + 1 == end || std::from_chars(middle + 1, end, id.label).ptr != end) {
    return std::nullopt;
  }
  return id;
}

void Callbacks::RunRelay(RequestEvent& event) const { RunAll(relay_, event, "relay"); }
void Callbacks::RunReply(const ReplyEvent& event) const { RunAll(reply_, event, "reply"); }
void Callbacks::RunEnd(const EndEvent& event) const { RunAll(end_, event, "end"); }

TmApi* FindTmApi(Core& core) { return dynamic_cast<TmApi*>(core.FindModule("tm")); }

}  // namespace sipd::tm
