// User-space epoll registrations for SMC sockets: see epoll_set.h.
#include "core/epoll_set.h"

#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>

#include <cerrno>
#include <new>

#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"

namespace smcpre::core {
namespace {

// What epoll_ctl accepts alongside EPOLLEXCLUSIVE (fs/eventpoll.c's EPOLLEXCLUSIVE_OK_BITS).
constexpr uint32_t kExclusiveOk =
    EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE;

// The connection's readiness as epoll bits, masked by what the member asked for (ERR and
// HUP are always reported, as by the kernel).
uint32_t ready_mask(const Readiness& r, uint32_t events) {
  uint32_t mask = 0;
  if (r.readable) mask |= EPOLLIN | EPOLLRDNORM;
  if (r.writable) mask |= EPOLLOUT | EPOLLWRNORM;
  if (r.rdhup) mask |= EPOLLRDHUP;
  if (r.hangup) mask |= EPOLLHUP;
  if (r.error) mask |= EPOLLERR;
  return mask & (events | EPOLLERR | EPOLLHUP);
}

}  // namespace

void EpollMember::readiness_changed() noexcept {
  if (auto set = set_.lock()) set->queue(shared_from_this());
}

void EpollMember::socket_released() noexcept {
  if (auto set = set_.lock()) set->forget(shared_from_this());
}

uint64_t EpollSet::next_cookie() {
  // The notification's epoll data must not look like any of the application's: 64
  // random bits (an address or an fd number in the application's data is never that).
  uint64_t cookie = 0;
  if (::getrandom(&cookie, sizeof cookie, GRND_NONBLOCK) != sizeof cookie || cookie == 0) {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    cookie = (uint64_t(now.tv_nsec) * 0x9e3779b97f4a7c15ULL) ^ uint64_t(now.tv_sec) ^
             0x736d637072652121ULL;
  }
  return cookie;
}

std::shared_ptr<EpollSet> EpollSet::create(int epfd, std::string* error) {
  const int own = sys::dup_high(epfd);
  if (own < 0) {
    *error = "cannot duplicate the epoll set: errno " + std::to_string(errno);
    return nullptr;
  }
  const int notify = sys::move_fd_high(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (notify < 0) {
    *error = "cannot create an eventfd: errno " + std::to_string(errno);
    sys::close(own);
    return nullptr;
  }
  std::shared_ptr<EpollSet> set;
  try {
    set = std::shared_ptr<EpollSet>(new EpollSet(own, notify));
  } catch (const std::bad_alloc&) {
    sys::close(notify);
    sys::close(own);
    *error = "out of memory";
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = set->cookie_;
  if (sys::epoll_ctl(own, EPOLL_CTL_ADD, notify, &ev) != 0) {
    *error = "cannot register the eventfd in the set: errno " + std::to_string(errno);
    return nullptr;  // the destructor closes both
  }
  return set;
}

EpollSet::~EpollSet() {
  // Closing the eventfd takes it out of the kernel's set (this was its only fd).
  if (notify_fd_ >= 0) sys::close(notify_fd_);
  if (epfd_ >= 0) sys::close(epfd_);
}

void EpollSet::forget_in_fork_child() {
  new (&mutex_) std::mutex();  // a parent thread may have held it at the fork
  retired_.store(true, std::memory_order_release);
  sys::close(notify_fd_);
  sys::close(epfd_);
  notify_fd_ = -1;
  epfd_ = -1;
}

int EpollSet::add(int fd, const std::shared_ptr<Socket>& socket, const epoll_event& event,
                  bool armed) {
  if ((event.events & EPOLLEXCLUSIVE) && (event.events & ~kExclusiveOk)) return EINVAL;
  std::shared_ptr<EpollMember> member;
  try {
    member = std::make_shared<EpollMember>(weak_from_this(), fd, socket);
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  }
  member->event_ = event;
  member->event_.events |= EPOLLERR | EPOLLHUP;
  member->disarmed_ = !armed;
  {
    std::lock_guard lock(mutex_);
    if (retired()) return kUseKernel;
    auto it = members_.find(fd);
    if (it != members_.end()) {
      if (it->second->socket_ == socket) return EEXIST;
      // The fd number was closed without EPOLL_CTL_DEL while a duplicate kept the old
      // socket open, and now names another socket. The kernel would keep both entries;
      // this set keys by number, and the one the application can still name wins.
      unlist_locked(*it->second);
      members_.erase(it);
    }
    try {
      members_.emplace(fd, member);
    } catch (const std::bad_alloc&) {
      return ENOMEM;
    }
  }
  // Outside the set's lock: a change notified meanwhile takes the connection's watcher
  // lock, then this set's.
  if (!socket->add_readiness_watcher(member)) {
    std::lock_guard lock(mutex_);
    unlist_locked(*member);
    members_.erase(fd);
    return kUseKernel;  // not on SMC (any more)
  }
  std::lock_guard lock(mutex_);
  if (!member->removed_) queue_locked(member);  // as the kernel's ep_insert polls at once
  return 0;
}

int EpollSet::modify(int fd, const epoll_event& event) {
  std::lock_guard lock(mutex_);
  auto it = members_.find(fd);
  if (it == members_.end()) return ENOENT;
  EpollMember& m = *it->second;
  if ((event.events & EPOLLEXCLUSIVE) || (m.event_.events & EPOLLEXCLUSIVE)) return EINVAL;
  m.event_ = event;
  m.event_.events |= EPOLLERR | EPOLLHUP;
  m.disarmed_ = false;
  queue_locked(it->second);
  return 0;
}

int EpollSet::remove(int fd) {
  std::lock_guard lock(mutex_);
  auto it = members_.find(fd);
  if (it == members_.end()) return ENOENT;
  unlist_locked(*it->second);
  members_.erase(it);
  return 0;
}

void EpollSet::unlist_locked(EpollMember& member) {
  member.removed_ = true;
  // Off the ready list at once: a set nobody waits on any more must not keep a closed
  // socket's connection alive.
  if (member.queued_) {
    std::erase_if(ready_, [&](const auto& m) { return m.get() == &member; });
    member.queued_ = false;
  }
}

bool EpollSet::contains(int fd) const {
  std::lock_guard lock(mutex_);
  return members_.count(fd) != 0;
}

void EpollSet::forget(const std::shared_ptr<EpollMember>& member) {
  std::lock_guard lock(mutex_);
  if (member->removed_) return;
  unlist_locked(*member);
  auto it = members_.find(member->fd_);
  if (it != members_.end() && it->second == member) members_.erase(it);
}

void EpollSet::queue(const std::shared_ptr<EpollMember>& member) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (member->removed_) return;
    queue_locked(member);
    wake = blocked_ > 0 && !notified_;
    if (wake) notified_ = true;
  }
  if (wake) {
    const uint64_t one = 1;
    (void)sys::write(notify_fd_, &one, sizeof one);
  }
}

void EpollSet::queue_locked(const std::shared_ptr<EpollMember>& member) {
  if (member->queued_ || member->disarmed_) return;
  try {
    ready_.push_back(member);
    member->queued_ = true;
  } catch (const std::bad_alloc&) {
    // Not queued: the next harvest misses this change. Rare enough to say so.
    SMC_LOG_WARN("epoll: no memory to queue fd {}: an event may come late", member->fd_);
  }
}

bool EpollSet::any_queued() const {
  std::lock_guard lock(mutex_);
  return !ready_.empty();
}

int EpollSet::harvest(epoll_event* out, int max) {
  if (max <= 0) return 0;
  std::lock_guard lock(mutex_);
  int n = 0;
  // Each queued member is looked at once per harvest; level-triggered ones that report
  // go to the back, so that a later harvest serves the others first.
  for (size_t left = ready_.size(); left > 0 && n < max; --left) {
    std::shared_ptr<EpollMember> m = std::move(ready_.front());
    ready_.pop_front();
    m->queued_ = false;
    if (m->removed_ || m->disarmed_) continue;
    const uint32_t mask = ready_mask(m->socket_->poll_state(), m->event_.events);
    if (mask == 0) continue;
    out[n].events = mask;
    out[n].data = m->event_.data;
    ++n;
    if (m->event_.events & EPOLLONESHOT) {
      m->disarmed_ = true;
    } else if (!(m->event_.events & EPOLLET)) {
      try {
        ready_.push_back(m);
        m->queued_ = true;
      } catch (const std::bad_alloc&) {
        // Reported now; the next change queues it again.
      }
    }
  }
  return n;
}

bool EpollSet::begin_blocking() {
  std::lock_guard lock(mutex_);
  ++blocked_;
  return ready_.empty();
}

void EpollSet::end_blocking() {
  std::lock_guard lock(mutex_);
  --blocked_;
}

int EpollSet::filter_notifications(epoll_event* events, int n) {
  int kept = 0;
  bool notified = false;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.u64 == cookie_) {
      notified = true;
    } else {
      events[kept++] = events[i];
    }
  }
  if (notified) {
    // Drained first, the flag cleared after: a change in between finds the flag still
    // up and writes nothing, but its member is queued for the harvest that follows.
    uint64_t count = 0;
    (void)sys::read(notify_fd_, &count, sizeof count);
    std::lock_guard lock(mutex_);
    notified_ = false;
  }
  return kept;
}

std::vector<EpollSet::Registration> EpollSet::take_members_for_kernel() {
  std::vector<Registration> regs;
  {
    std::lock_guard lock(mutex_);
    retired_.store(true, std::memory_order_release);
    regs.reserve(members_.size());
    for (auto& [fd, m] : members_) {
      regs.push_back({fd, m->socket_, m->event_, !m->disarmed_});
      m->removed_ = true;
    }
    members_.clear();
    ready_.clear();
  }
  sys::epoll_ctl(epfd_, EPOLL_CTL_DEL, notify_fd_, nullptr);
  return regs;
}

}  // namespace smcpre::core
