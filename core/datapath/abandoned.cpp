#include "core/datapath/abandoned.h"

#include <atomic>
#include <new>

namespace smcpre::core {
namespace {

struct Kept {
  const void* object;
  Kept* next;
};

// Pushed lock-free: a lock could have been copied held by a parent thread.
std::atomic<Kept*> g_kept{nullptr};

}  // namespace

void keep_abandoned(const void* object) noexcept {
  if (object == nullptr) return;
  Kept* node = new (std::nothrow) Kept{object, g_kept.load(std::memory_order_relaxed)};
  if (node == nullptr) return;
  while (!g_kept.compare_exchange_weak(node->next, node, std::memory_order_release,
                                       std::memory_order_relaxed)) {
  }
}

}  // namespace smcpre::core
