#include "sipd/core/logging.h"

#include <osipparser2/osip_port.h>

#include <cstdarg>
#include <cstdio>
#include <memory>
#include <string>

#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

std::string PatternFor(std::string_view process_type) {
  // spdlog pattern flags start with '%': escape any in the type text.
  std::string type;
  for (char c : process_type) {
    if (c == '%') type.push_back('%');
    type.push_back(c);
  }
  // Trailing spaces of SIP receiver types would be invisible: trim them here.
  while (!type.empty() && type.back() == ' ') type.pop_back();
  return "%Y-%m-%d %H:%M:%S.%e %^%l%$ [%P] " + type + ": %v";
}

void OsipTrace(const char* file, int line, osip_trace_level_t /*level*/, const char* format,
               va_list ap) {
  if (!spdlog::should_log(spdlog::level::trace)) return;
  char text[512];
  std::vsnprintf(text, sizeof(text), format, ap);
  std::string message(text);
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
    message.pop_back();
  }
  spdlog::trace("libosip2 {}:{}: {}", file != nullptr ? file : "?", line, message);
}

}  // namespace

spdlog::level::level_enum SpdlogLevel(int opensips_level) {
  if (opensips_level <= -2) return spdlog::level::critical;
  if (opensips_level == -1) return spdlog::level::err;
  if (opensips_level <= 1) return spdlog::level::warn;
  if (opensips_level <= 3) return spdlog::level::info;
  if (opensips_level == 4) return spdlog::level::debug;
  return spdlog::level::trace;
}

void InitLogging(int opensips_level, std::string_view process_type) {
  // Multi-threaded sink: module processes (gRPC) log from several threads.
  auto logger =
      std::make_shared<spdlog::logger>("sipd", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  spdlog::set_default_logger(std::move(logger));
  spdlog::set_pattern(PatternFor(process_type));
  spdlog::flush_on(spdlog::level::trace);
  ApplyLogLevel(opensips_level);
}

void SetLogProcessType(std::string_view process_type) {
  spdlog::set_pattern(PatternFor(process_type));
}

void ApplyLogLevel(int opensips_level) { spdlog::set_level(SpdlogLevel(opensips_level)); }

void RouteOsipTraces() {
  // Enables every level below END_TRACE_LEVEL and installs the callback.
  osip_trace_initialize_func(END_TRACE_LEVEL, &OsipTrace);
}

}  // namespace sipd
