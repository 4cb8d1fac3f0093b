// What drives grpc.health.v1 (service/health_service.h): checks run again and again,
// not a status set once at start.
//
// Every `interval` (1 s; every interval / 10 while a subsystem is not serving, so that
// start-up and recovery show within 100 ms) a thread of its own runs each subsystem's checks (those
// the modules declared in the registry, mi::HealthCheck, e.g. "sipd.usrloc": the database takes
// writes; and those the transport adds, e.g. "sipd.sip": every SIP receiver alive and not
// overloaded) and sets that name SERVING when all its checks pass, NOT_SERVING otherwise; a change
// is logged with the reason. The MI services this server offers
// ("sipd.mi.v1.Management" and each typed service) are SERVING while the server runs.
// "" (the server as a whole) is SERVING when every subsystem is.
//
// Thread-safety: Start() and Stop() from one thread; the checks run one at a time on
// the monitor's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "registry/command.h"
#include "service/health_service.h"

namespace sipd::service {

class HealthMonitor {
 public:
  HealthMonitor(HealthService& health, std::vector<mi::HealthCheck> checks,
                std::vector<std::string> services, std::chrono::milliseconds interval);
  ~HealthMonitor() { Stop(); }
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;

  // Sets every status once (so the first Check after start is already the truth), then
  // starts the thread.
  void Start();
  // Stops the thread (statuses stay as they are). Idempotent.
  void Stop();

 private:
  // Runs every check and sets the statuses; returns whether everything serves.
  bool RunOnce();

  HealthService& health_;
  const std::vector<mi::HealthCheck> checks_;
  const std::vector<std::string> services_;
  const std::chrono::milliseconds interval_;
  // Last reported status per subsystem, to log changes; only the monitor's thread (or
  // Start()) touches it.
  std::map<std::string, bool> last_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sipd::service
