// Which epoll sets keep their SMC members in user memory (core/epoll_set.h), and their
// move to the kernel's readiness mirrors when smcpre can no longer see every wait on them.
//
// A set gets its user-space object with its first SMC member, and only while it is one
// that smcpre sees every wait on: created through the hooks, not shared with another
// process, not nested in another set or in poll/select. The object hangs off the fd
// table (Tracked::epoll_set), so dup'd set fds share it and the last close ends it.
// Once nested, or before a fork, the members move to the kernel as mirrors and the set
// stays there: the old, proven path of readiness mirrors.
#include <pthread.h>

#include <mutex>
#include <vector>

#include "config/log.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"

namespace smcpre::preload {
namespace {

// Every user-space set of the process, for the move before a fork. Heap-allocated and
// never freed, like the engine's process-wide lists.
std::mutex g_sets_mutex;
std::vector<std::weak_ptr<core::EpollSet>>& g_sets =
    *new std::vector<std::weak_ptr<core::EpollSet>>;

void move_to_kernel(core::EpollSet& set) noexcept {
  std::vector<core::EpollSet::Registration> regs;
  try {
    regs = set.take_members_for_kernel();
  } catch (const std::exception&) {
    log_safely([] { SMC_LOG_ERROR("preload: out of memory moving an epoll set to the kernel"); });
    return;
  }
  for (auto& reg : regs) {
    if (!register_mirror(set.kernel_fd(), *reg.socket, reg.event, reg.armed)) {
      log_safely([&] {
        SMC_LOG_WARN("preload: fd {} cannot be watched in the kernel's epoll set", reg.fd);
      });
    }
  }
}

}  // namespace

bool register_mirror(int epfd, core::Socket& socket, epoll_event event, bool armed) noexcept {
  const int mirror = engine_call("readiness_fd", -1, [&] {
    if (event.events & EPOLLET) socket.want_readiness_edges();
    const int fd = socket.readiness_fd();
    core::Engine::flush_stale_mirrors();
    return fd;
  });
  // A one-shot registration that has fired stays disarmed on the mirror until the
  // application re-arms it (EPOLL_CTL_MOD, which then reaches the mirror).
  if (!armed) event.events &= EPOLLONESHOT | EPOLLET | EPOLLWAKEUP;
  return mirror >= 0 && real().epoll_ctl(epfd, EPOLL_CTL_ADD, mirror, &event) == 0;
}

std::shared_ptr<core::EpollSet> user_epoll_set(int epfd, bool create) noexcept {
  if (fds().any()) {
    if (std::shared_ptr<Tracked> t = fds().lookup(epfd)) {
      if (t->epoll_set == nullptr || t->epoll_set->retired()) return nullptr;
      return t->epoll_set;
    }
  }
  if (!create || !epoll_instances().test(epfd) || shared_epoll_sets().test(epfd)) return nullptr;
  if (!in_owner_process()) return nullptr;  // a vfork child: the table is the parent's
  static std::mutex create_mutex;           // two threads adding to a new set make one object
  std::lock_guard lock(create_mutex);
  if (std::shared_ptr<Tracked> t = fds().lookup(epfd)) {
    return t->epoll_set != nullptr && !t->epoll_set->retired() ? t->epoll_set : nullptr;
  }
  std::shared_ptr<Tracked> entry = prepare_entry(epfd);
  if (entry == nullptr) return nullptr;
  std::string error;
  entry->epoll_set = engine_call("epoll_set", std::shared_ptr<core::EpollSet>{},
                                 [&] { return core::EpollSet::create(epfd, &error); });
  if (entry->epoll_set == nullptr) {
    log_safely([&] {
      SMC_LOG_WARN("preload: epoll set {} keeps SMC sockets in the kernel: {}", epfd, error);
    });
    return nullptr;
  }
  try {
    std::lock_guard sets_lock(g_sets_mutex);
    std::erase_if(g_sets, [](const auto& w) { return w.expired(); });
    g_sets.push_back(entry->epoll_set);
  } catch (const std::bad_alloc&) {
    return nullptr;  // unknown to the fork handler: not used (the reservation stays empty)
  }
  std::shared_ptr<core::EpollSet> set = entry->epoll_set;
  track(epfd, std::move(entry));
  return set;
}

void move_user_epoll_set_to_kernel(int epfd) noexcept {
  shared_epoll_sets().mark(epfd);  // and no new user-space members from now on
  if (!fds().any()) return;
  std::shared_ptr<Tracked> t = fds().lookup(epfd);
  if (t != nullptr && t->epoll_set != nullptr && !t->epoll_set->retired()) {
    move_to_kernel(*t->epoll_set);
  }
}

void move_all_user_epoll_sets_to_kernel() noexcept {
  std::vector<std::shared_ptr<core::EpollSet>> sets;
  {
    std::lock_guard lock(g_sets_mutex);
    for (const auto& w : g_sets) {
      if (auto set = w.lock()) {
        try {
          sets.push_back(std::move(set));
        } catch (const std::bad_alloc&) {
        }
      }
    }
  }
  for (const auto& set : sets) {
    if (!set->retired()) move_to_kernel(*set);
  }
}

}  // namespace smcpre::preload
