#include "sipd/module_list.h"

// One #include per module factory (each module adds its own line).
#include "legacy-transports/datagram/datagram_module.h"
#include "legacy-transports/fifo/fifo_module.h"
#include "legacy-transports/xmlrpc/mi_xmlrpc_module.h"
#include "service/mi_grpc_module.h"
#include "sipd/modules/dialog/dialog.h"
#include "sipd/modules/event_datagram/event_datagram.h"
#include "sipd/modules/httpd/httpd_module.h"
#include "sipd/modules/mi_selftest/mi_selftest.h"
#include "sipd/modules/registrar/registrar.h"
#include "sipd/modules/siptrace/siptrace.h"
#include "sipd/modules/tm/tm.h"
#include "sipd/modules/usrloc/usrloc.h"

namespace sipd {

const std::vector<ModuleEntry>& ModuleTable() {
  static const std::vector<ModuleEntry> kModules = {
      // {"name", &NewXxxModule},  (one line per module)
      {"mi_xmlrpc", &NewMiXmlrpcModule},
      {"mi_fifo", &NewMiFifoModule},
      {"mi_datagram", &NewMiDatagramModule},
      {"mi_grpc", &NewMiGrpcModule},
      {"usrloc", &NewUsrlocModule},
      {"registrar", &NewRegistrarModule},
      {"mi_selftest", &NewMiSelftestModule},
      {"event_datagram", &NewEventDatagramModule},
      {"tm", &NewTmModule},
      {"siptrace", &NewSiptraceModule},
      {"dialog", &NewDialogModule},
      {"httpd", &NewHttpdModule},
  };
  return kModules;
}

std::unique_ptr<Module> CreateModule(std::string_view name) {
  for (const ModuleEntry& entry : ModuleTable()) {
    if (entry.name == name) return entry.factory();
  }
  return nullptr;
}

}  // namespace sipd
