#include "preload/real.h"

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

namespace smcpre::preload {
namespace detail {

constinit RealFunctions real_functions;
constinit std::atomic<bool> real_resolved{false};

namespace {
// A plain pthread mutex: statically initialized, so the first hook may run before any
// C++ initialization of this library, and it allocates nothing.
pthread_mutex_t resolve_lock = PTHREAD_MUTEX_INITIALIZER;
// The thread resolving right now. dlsym may call malloc, and an interposed malloc may
// read a file through our hooks: that nested call gets the table as filled so far
// (ENOSYS for what is still missing) instead of deadlocking on resolve_lock.
std::atomic<pid_t> resolving_tid{0};
}  // namespace

const RealFunctions& resolve_real() noexcept {
  const int saved_errno = errno;  // the hook that got here must not see dlsym's errno
  const pid_t self = gettid();
  if (resolving_tid.load(std::memory_order_relaxed) == self) return real_functions;
  pthread_mutex_lock(&resolve_lock);
  if (!real_resolved.load(std::memory_order_relaxed)) {
    resolving_tid.store(self, std::memory_order_relaxed);
    // Missing symbols simply stay null (the hook reports ENOSYS); dlsym leaves its
    // reason in dlerror(), which nobody here needs.
#define SMCPRE_REAL_RESOLVE(name) \
  real_functions.name = reinterpret_cast<decltype(&::name)>(dlsym(RTLD_NEXT, #name));
    SMCPRE_REAL_FUNCTIONS(SMCPRE_REAL_RESOLVE)
#undef SMCPRE_REAL_RESOLVE
    resolving_tid.store(0, std::memory_order_relaxed);
    real_resolved.store(true, std::memory_order_release);
  }
  pthread_mutex_unlock(&resolve_lock);
  errno = saved_errno;
  return real_functions;
}

}  // namespace detail
}  // namespace smcpre::preload
