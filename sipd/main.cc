// sipd: the SIP daemon. See sipd/core/daemon.h for the process model.
//
//   sipd -V            print the version and exit
//   sipd -c [-f FILE]  check the configuration and exit 0 (valid) or 1 (error on stderr)
//   sipd [-f FILE]     run in the foreground (default FILE: etc/sipd.cfg)
#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "generated/sipd_version.h"
#include "sipd/core/config.h"
#include "sipd/core/daemon.h"
#include "sipd/core/logging.h"
#include "sipd/module_list.h"
#include "spdlog/spdlog.h"
#ifdef SIPD_HAVE_CORE_COMMANDS
#include "sipd/modules/core/core_commands.h"
#endif

namespace {

// "x86_64/linux", as OpenSIPS prints it.
std::string Platform() {
  utsname u{};
  if (uname(&u) != 0) return "unknown/unknown";
  std::string os = u.sysname;
  std::transform(os.begin(), os.end(), os.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::string(u.machine) + "/" + os;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);

  CLI::App app{"sipd - SIP server with an OpenSIPS 1.11 style management interface"};
  std::string config_file = "etc/sipd.cfg";
  bool check_only = false;
  bool show_version = false;
  app.add_option("-f,--config", config_file, "configuration file")->capture_default_str();
  app.add_flag("-c,--check", check_only, "check the configuration file and exit");
  app.add_flag("-V,--version", show_version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (show_version) {
    std::printf("sipd %s (%s)\n", SIPD_VERSION, Platform().c_str());
    return 0;
  }

  sipd::ParseOptions parse_options;
  for (const sipd::ModuleEntry& entry : sipd::ModuleTable()) {
    parse_options.known_modules.emplace_back(entry.name);
  }
  std::sort(parse_options.known_modules.begin(), parse_options.known_modules.end());
  absl::StatusOr<sipd::Config> config =
      sipd::LoadConfigFile(config_file, &sipd::CreateModule, parse_options);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  if (check_only) {
    std::fprintf(stderr, "config file %s is valid\n", config_file.c_str());
    return 0;
  }

  sipd::InitLogging(config->log_level, "attendant");
  sipd::Daemon::Options options;
  options.argv = std::move(args);
#ifdef SIPD_HAVE_CORE_COMMANDS
  options.register_core_commands = [](sipd::Core& core) {
    return sipd::RegisterCoreCommands(core);
  };
#endif
  sipd::Daemon daemon(*std::move(config), std::move(options));
  absl::Status status = daemon.Initialize();
  if (!status.ok()) {
    spdlog::critical("start-up failed: {}", std::string(status.message()));
    return 1;
  }
  return daemon.Run();
}
