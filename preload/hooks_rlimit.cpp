// setrlimit and prlimit: smcpre caches RLIMIT_NOFILE (config/fd_budget.h), so that
// deciding whether a connection may take descriptors, and placing them at the top of the
// fd space, costs no getrlimit(). A change of the limit made through these calls is seen
// at once; one made by another process (prlimit(1) on our pid) only by a later call here.

// No _FILE_OFFSET_BITS=64 redirects (setrlimit -> setrlimit64), which would give two hooks
// one symbol. Both names are hooked anyway.
#undef _FILE_OFFSET_BITS

#include <dlfcn.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "config/fd_budget.h"
#include "preload/interpose.h"

namespace smcpre::preload {
namespace {

using SetrlimitFn = int (*)(__rlimit_resource_t, const rlimit*);
using Setrlimit64Fn = int (*)(__rlimit_resource_t, const rlimit64*);
using PrlimitFn = int (*)(pid_t, __rlimit_resource, const rlimit*, rlimit*);
using Prlimit64Fn = int (*)(pid_t, __rlimit_resource, const rlimit64*, rlimit64*);

// The next definition of `name` (libc's), looked up on first use.
template <typename Fn>
Fn next(std::atomic<Fn>* cache, const char* name) {
  Fn fn = cache->load(std::memory_order_acquire);
  if (fn == nullptr) {
    fn = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
    cache->store(fn, std::memory_order_release);
  }
  return fn;
}

void after(int rc, int resource, pid_t pid, const void* changed) {
  if (rc != 0 || resource != RLIMIT_NOFILE || changed == nullptr) return;
  if (pid != 0 && pid != ::getpid()) return;
  const int saved = errno;
  config::nofile_limit_changed();
  errno = saved;
}

template <typename Fn, typename Limit>
int set_limit(std::atomic<Fn>* cache, const char* name, __rlimit_resource_t resource,
              const Limit* limit) {
  Fn fn = next(cache, name);
  if (fn == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  const int rc = fn(resource, limit);
  after(rc, resource, 0, limit);
  return rc;
}

template <typename Fn, typename Limit>
int pr_limit(std::atomic<Fn>* cache, const char* name, pid_t pid, __rlimit_resource resource,
             const Limit* limit, Limit* old) {
  Fn fn = next(cache, name);
  if (fn == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  const int rc = fn(pid, resource, limit, old);
  after(rc, resource, pid, limit);
  return rc;
}

std::atomic<SetrlimitFn> g_setrlimit{nullptr};
std::atomic<Setrlimit64Fn> g_setrlimit64{nullptr};
std::atomic<PrlimitFn> g_prlimit{nullptr};
std::atomic<Prlimit64Fn> g_prlimit64{nullptr};

}  // namespace
}  // namespace smcpre::preload

using namespace smcpre::preload;

// The prototypes are glibc's own (sys/resource.h), *64 variants included: a program
// built with _FILE_OFFSET_BITS=64 calls those.
SMCPRE_HOOK int setrlimit(__rlimit_resource_t resource, const rlimit* limit) noexcept {
  return set_limit(&g_setrlimit, "setrlimit", resource, limit);
}
SMCPRE_HOOK int setrlimit64(__rlimit_resource_t resource, const rlimit64* limit) noexcept {
  return set_limit(&g_setrlimit64, "setrlimit64", resource, limit);
}
SMCPRE_HOOK int prlimit(pid_t pid, __rlimit_resource resource, const rlimit* limit,
                        rlimit* old) noexcept {
  return pr_limit(&g_prlimit, "prlimit", pid, resource, limit, old);
}
SMCPRE_HOOK int prlimit64(pid_t pid, __rlimit_resource resource, const rlimit64* limit,
                          rlimit64* old) noexcept {
  return pr_limit(&g_prlimit64, "prlimit64", pid, resource, limit, old);
}
