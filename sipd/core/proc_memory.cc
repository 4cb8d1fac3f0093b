#include "sipd/core/proc_memory.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace sipd {

absl::StatusOr<ProcMemory> ReadProcMemory(pid_t pid) {
  if (pid <= 0) return absl::InvalidArgumentError("no process");
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  if (!status) return absl::NotFoundError(absl::StrCat("no /proc entry for pid ", pid));
  uint64_t vm_size = 0, vm_rss = 0, vm_hwm = 0, rss_anon = 0;
  std::string line;
  while (std::getline(status, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "VmSize: %llu kB", &kb) == 1) {
      vm_size = kb * 1024;
    } else if (std::sscanf(line.c_str(), "VmRSS: %llu kB", &kb) == 1) {
      vm_rss = kb * 1024;
    } else if (std::sscanf(line.c_str(), "VmHWM: %llu kB", &kb) == 1) {
      vm_hwm = kb * 1024;
    } else if (std::sscanf(line.c_str(), "RssAnon: %llu kB", &kb) == 1) {
      rss_anon = kb * 1024;
    }
  }
  ProcMemory m;
  m.total_size = vm_size;
  m.used_size = rss_anon;
  m.real_used_size = vm_rss;
  m.max_used_size = vm_hwm;
  m.free_size = vm_size > vm_rss ? vm_size - vm_rss : 0;
  std::ifstream maps(absl::StrCat("/proc/", pid, "/maps"));
  while (std::getline(maps, line)) ++m.fragments;
  return m;
}

ProcMemory ProcMemoryCache::Get(pid_t pid) {
  if (pid <= 0) return ProcMemory{};
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(pid);
  if (it != entries_.end() && now - it->second.read_at < std::chrono::seconds(1)) {
    return it->second.memory;
  }
  absl::StatusOr<ProcMemory> memory = ReadProcMemory(pid);
  Entry entry{now, memory.ok() ? *memory : ProcMemory{}};
  entries_[pid] = entry;
  return entry.memory;
}

}  // namespace sipd
