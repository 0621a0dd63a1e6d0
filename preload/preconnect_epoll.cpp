// epoll registrations made before connect(): see preconnect_epoll.h.
#include "preload/preconnect_epoll.h"

#include <algorithm>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

#include "config/log.h"
#include "preload/fd_bits.h"

namespace smcpre::preload {
namespace {

constinit FdBits g_fresh;

// Records by fd. Touched only for fresh sockets that some epoll set watches: a proxy's
// upstream connections, between their registration and their connect().
struct Records {
  std::mutex mutex;
  std::unordered_map<int, std::vector<Tracked::EpollRegistration>> by_fd;  // under mutex
};

Records& records() {
  // Never destroyed: a hook may run in another thread while the process exits.
  static Records* r = new Records;
  return *r;
}

}  // namespace

void note_fresh_tcp_socket(int fd) noexcept {
  forget_fresh_socket(fd);  // a number reused: whatever its last socket left is stale
  g_fresh.mark(fd);
}

void forget_fresh_socket(int fd) noexcept {
  if (!g_fresh.test(fd)) return;
  g_fresh.forget(fd);
  Records& r = records();
  std::lock_guard lock(r.mutex);
  r.by_fd.erase(fd);
}

void note_preconnect_registration(int epfd, int op, int fd, const epoll_event* event) noexcept {
  if (!g_fresh.test(fd)) return;
  Records& r = records();
  std::lock_guard lock(r.mutex);
  try {
    auto& regs = r.by_fd[fd];
    auto it = std::find_if(regs.begin(), regs.end(),
                           [&](const Tracked::EpollRegistration& reg) { return reg.epfd == epfd; });
    if (op == EPOLL_CTL_DEL) {
      if (it != regs.end()) regs.erase(it);
    } else if (event != nullptr) {
      if (it != regs.end()) {
        it->event = *event;
      } else {
        regs.push_back({epfd, *event});
      }
    }
    if (regs.empty()) r.by_fd.erase(fd);
  } catch (const std::bad_alloc&) {
    log_safely([&] {
      SMC_LOG_WARN(
          "preload: no memory to record fd {}'s epoll registration before connect; "
          "if it turns SMC, that set will not see it",
          fd);
    });
  }
}

std::vector<Tracked::EpollRegistration> take_preconnect_registrations(int fd) noexcept {
  if (!g_fresh.test(fd)) return {};
  g_fresh.forget(fd);
  Records& r = records();
  std::lock_guard lock(r.mutex);
  auto it = r.by_fd.find(fd);
  if (it == r.by_fd.end()) return {};
  std::vector<Tracked::EpollRegistration> taken = std::move(it->second);
  r.by_fd.erase(it);
  return taken;
}

}  // namespace smcpre::preload
