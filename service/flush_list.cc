#include "service/flush_list.h"

namespace sipd::service {
namespace {

thread_local FlushList* current_list = nullptr;

}  // namespace

FlushList* FlushList::Current() { return current_list; }

void FlushList::SetCurrent(FlushList* list) { current_list = list; }

void FlushList::FlushAll() {
  flushing_.swap(calls_);
  for (Flushable* call : flushing_) call->Flush();
  flushing_.clear();
}

}  // namespace sipd::service
