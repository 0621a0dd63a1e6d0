#include "core/datapath/recv_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <new>

#include "config/config.h"
#include "config/log.h"
#include "core/datapath/abandoned.h"
#include "core/stats/segment.h"

namespace smcpre::core {
namespace {
std::atomic<RecvPool*> g_pool{nullptr};
std::mutex g_pool_mutex;
}  // namespace

RecvPool* RecvPool::get() {
  RecvPool* pool = g_pool.load(std::memory_order_acquire);
  if (pool != nullptr) return pool;
  std::lock_guard lock(g_pool_mutex);
  pool = g_pool.load(std::memory_order_acquire);
  if (pool == nullptr) {
    // Lives as long as the process: links of any thread may hold its buffers at exit.
    pool = create(config::current().pool_size).release();
    if (pool != nullptr) {
      SMC_LOG_DEBUG("receive pool: {} buffers of {} bytes", pool->size(), kBufferSize);
    }
    g_pool.store(pool, std::memory_order_release);
  }
  return pool;
}

void RecvPool::reset_after_fork() {
  keep_abandoned(g_pool.exchange(nullptr, std::memory_order_acq_rel));
  new (&g_pool_mutex) std::mutex();
}

std::unique_ptr<RecvPool> RecvPool::create(uint32_t count) {
  if (count == 0) return nullptr;
  const size_t page = 4096;
  const size_t mapped = (size_t{count} * kBufferSize + page - 1) / page * page;
  void* mem = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    SMC_LOG_WARN("receive pool: cannot map {} bytes: errno {}", mapped, errno);
    return nullptr;
  }
  // A device may pin these pages; a fork child must not copy-on-write-split them.
  if (::madvise(mem, mapped, MADV_DONTFORK) != 0) {
    SMC_LOG_WARN("receive pool: madvise(MADV_DONTFORK): errno {}", errno);
    ::munmap(mem, mapped);
    return nullptr;
  }
  return std::unique_ptr<RecvPool>(new RecvPool(static_cast<uint8_t*>(mem), mapped, count));
}

RecvPool::RecvPool(uint8_t* base, size_t mapped, uint32_t count)
    : base_(base), mapped_(mapped), count_(count), next_(new std::atomic<uint32_t>[count]) {
  // Stack order: index 0 on top, so that buffers in use stay few and close together.
  for (uint32_t i = 0; i < count; ++i) next_[i].store(i + 1 < count ? i + 2 : 0);
  head_.store(1);
  free_.store(count);
  low_water_.store(count);
}

RecvPool::~RecvPool() {
  ::munmap(base_, mapped_);
}

bool RecvPool::take(uint32_t* index) {
  uint64_t old = head_.load(std::memory_order_acquire);
  while (true) {
    const uint32_t top = static_cast<uint32_t>(old);
    if (top == 0) return false;
    // Possibly stale if another thread took `top` meanwhile: the tag then differs and the
    // exchange fails.
    const uint32_t next = next_[top - 1].load(std::memory_order_relaxed);
    const uint64_t updated = (((old >> 32) + 1) << 32) | next;
    if (head_.compare_exchange_weak(old, updated, std::memory_order_acquire,
                                    std::memory_order_acquire)) {
      *index = top - 1;
      break;
    }
  }
  const int64_t left = free_.fetch_sub(1, std::memory_order_relaxed) - 1;
  stats::lower_to(low_water_, static_cast<uint64_t>(std::max<int64_t>(0, left)));
  return true;
}

void RecvPool::give(uint32_t index) {
  uint64_t old = head_.load(std::memory_order_relaxed);
  uint64_t updated;
  do {
    next_[index].store(static_cast<uint32_t>(old), std::memory_order_relaxed);
    updated = (((old >> 32) + 1) << 32) | (index + 1);
  } while (!head_.compare_exchange_weak(old, updated, std::memory_order_release,
                                        std::memory_order_relaxed));
  free_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace smcpre::core
