#include "core/datapath/progress.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>

#include "config/config.h"
#include "config/high_fd.h"
#include "config/log.h"
#include "config/sys.h"
#include "core/datapath/abandoned.h"
#include "core/datapath/backlog.h"
#include "core/datapath/connection_events.h"
#include "core/datapath/link_group.h"
#include "core/datapath/recv_pool.h"
#include "core/stats/segment.h"

namespace smcpre::core {
namespace {

// An application thread that polled this recently is assumed to poll again soon (the gap
// between two requests of a ping-pong); the background thread does not arm meanwhile.
constexpr int64_t kAppPollGraceNs = 200'000;
// How long the background thread reaps busy links back to back before its housekeeping.
constexpr int64_t kBusyPollSliceNs = 10'000'000;
// While application threads poll, the background thread still looks every millisecond.
constexpr int kBusyTimeoutMs = 1;
constexpr int kIdleTimeoutMs = 1000;
// How often connections waiting for the peer's close are looked at.
constexpr int kClosePollMs = 100;
// How often sockets in a lingering close are looked at.
constexpr int kLingerPollMs = 10;
// How long after a peer's TCP FIN its SMC close may still arrive (it travels another
// path: a peer that closed in order and exited at once sends both).
constexpr int64_t kTcpEndGraceNs = 250'000'000;
// Epoll data of a TCP watch: its id with the top bit set (user-space pointers, the data
// of link notification fds, never have it).
constexpr uint64_t kTcpWatchTag = uint64_t{1} << 63;
// Epoll data of a device's asynchronous event fd: its index in devices_, this bit set.
constexpr uint64_t kDeviceTag = uint64_t{1} << 62;

// The process-wide receive path counters (the links publish their own).
void publish_receive_stats() {
  stats::ProcessCounters& p = stats::segment().process;
  if (RecvPool* pool = RecvPool::get()) {
    stats::set(p.pool_size, pool->size());
    stats::set(p.pool_free, pool->free_count());
    stats::set(p.pool_low_water, pool->low_water());
    stats::set(p.pool_exhausted, pool->exhausted());
  }
  Backlog* backlog = Backlog::get();
  stats::set(p.backlog_workers, backlog != nullptr ? backlog->worker_count() : 0);
}

}  // namespace

ProgressThread::ProgressThread() = default;

ProgressThread::~ProgressThread() {
  stop();
}

bool ProgressThread::ensure_started() {
  if (thread_.joinable()) return true;
  if (epoll_fd_ < 0) epoll_fd_ = sys::move_fd_high(sys::epoll_create1(EPOLL_CLOEXEC));
  if (kick_fd_ < 0) kick_fd_ = sys::move_fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (epoll_fd_ < 0 || kick_fd_ < 0) {
    SMC_LOG_ERROR("progress thread: cannot create epoll/eventfd: errno {}", errno);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the kick fd
  sys::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, kick_fd_, &ev);
  try {
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    SMC_LOG_ERROR("progress thread: cannot start");
    return false;
  }
  return true;
}

bool ProgressThread::add_link(std::shared_ptr<LinkGroup> group) {
  std::lock_guard lock(mutex_);
  if (!ensure_started()) return false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = group.get();
  if (sys::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, group->link().qp().notify_fd(), &ev) != 0) {
    SMC_LOG_ERROR("progress thread: epoll_ctl add failed: errno {}", errno);
    return false;
  }
  rdma::Device* device = &group->device();
  if (device->async_fd() >= 0 &&
      std::find(devices_.begin(), devices_.end(), device) == devices_.end()) {
    epoll_event dev{};
    dev.events = EPOLLIN;
    dev.data.u64 = kDeviceTag | devices_.size();
    if (sys::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, device->async_fd(), &dev) == 0) {
      devices_.push_back(device);
    } else {
      SMC_LOG_WARN("progress thread: cannot watch {}'s events: errno {}", device->name(), errno);
    }
  }
  groups_.push_back(std::move(group));
  publish_links_locked();
  uint64_t one = 1;
  sys::write(kick_fd_, &one, sizeof one);
  return true;
}

void ProgressThread::linger(std::unique_ptr<Lingerer> what) {
  std::lock_guard lock(mutex_);
  if (!ensure_started()) return;
  lingering_.push_back(std::move(what));
  uint64_t one = 1;
  sys::write(kick_fd_, &one, sizeof one);
}

void ProgressThread::watch_deadline(std::weak_ptr<DeadlineOwner> owner, int64_t deadline_ns) {
  std::lock_guard lock(mutex_);
  if (!ensure_started()) return;
  deadlines_.push_back({std::move(owner), deadline_ns});
  uint64_t one = 1;
  sys::write(kick_fd_, &one, sizeof one);
}

int64_t ProgressThread::run_deadlines() {
  std::vector<Timed> due;
  int64_t next = -1;
  const int64_t now = now_ns();
  {
    std::lock_guard lock(mutex_);
    for (auto it = deadlines_.begin(); it != deadlines_.end();) {
      if (it->owner.expired()) {
        it = deadlines_.erase(it);
      } else if (it->deadline_ns <= now) {
        due.push_back(std::move(*it));
        it = deadlines_.erase(it);
      } else {
        if (next < 0 || it->deadline_ns < next) next = it->deadline_ns;
        ++it;
      }
    }
  }
  std::vector<Timed> again;
  for (Timed& t : due) {
    auto owner = t.owner.lock();
    if (!owner) continue;
    const int64_t deadline = owner->on_deadline(now);
    if (deadline < 0) continue;
    if (next < 0 || deadline < next) next = deadline;
    again.push_back({t.owner, deadline});
  }
  if (!again.empty()) {
    std::lock_guard lock(mutex_);
    for (Timed& t : again) deadlines_.push_back(std::move(t));
  }
  return next;
}

void ProgressThread::watch_close(std::weak_ptr<ConnectionEvents> connection, int64_t deadline_ns) {
  std::lock_guard lock(mutex_);
  if (!ensure_started()) return;
  closing_.push_back({std::move(connection), deadline_ns});
}

uint64_t ProgressThread::watch_tcp(std::weak_ptr<ConnectionEvents> connection, int fd) {
  {
    std::lock_guard lock(mutex_);
    if (!ensure_started()) {
      sys::close(fd);
      return 0;
    }
  }
  std::lock_guard lock(watch_mutex_);
  const uint64_t id = next_watch_id_++;
  epoll_event ev{};
  // Level-triggered on the peer's FIN or a reset only, never on data: none should come
  // after the handshake, and the socket is not ours to read.
  ev.events = EPOLLRDHUP | EPOLLHUP | EPOLLERR;
  ev.data.u64 = id | kTcpWatchTag;
  if (sys::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    SMC_LOG_WARN("progress thread: cannot watch a TCP socket: errno {}", errno);
    sys::close(fd);
    return 0;
  }
  tcp_watches_.emplace(id, TcpWatch{std::move(connection), fd});
  return id;
}

void ProgressThread::unwatch_tcp(uint64_t id) {
  std::lock_guard lock(watch_mutex_);
  auto it = tcp_watches_.find(id);
  if (it == tcp_watches_.end()) return;
  sys::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  sys::close(it->second.fd);
  tcp_watches_.erase(it);
}

void ProgressThread::on_tcp_event(uint64_t id) {
  std::shared_ptr<ConnectionEvents> connection;
  {
    std::lock_guard lock(watch_mutex_);
    auto it = tcp_watches_.find(id);
    if (it == tcp_watches_.end()) return;  // unwatched meanwhile
    sys::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
    sys::close(it->second.fd);
    connection = it->second.connection.lock();
    tcp_watches_.erase(it);
  }
  if (!connection) return;
  std::lock_guard lock(mutex_);
  tcp_ended_.push_back({connection, now_ns() + kTcpEndGraceNs});
}

void ProgressThread::reap_tcp_ended() {
  const int64_t now = now_ns();
  for (auto it = tcp_ended_.begin(); it != tcp_ended_.end();) {
    std::shared_ptr<ConnectionEvents> connection = it->connection.lock();
    if (connection && now < it->deadline_ns && !connection->peer_gone_or_closed()) {
      ++it;
      continue;
    }
    if (connection) connection->on_tcp_ended();
    it = tcp_ended_.erase(it);
  }
}

void ProgressThread::reap_closing() {
  const int64_t now = now_ns();
  for (auto it = closing_.begin(); it != closing_.end();) {
    std::shared_ptr<ConnectionEvents> connection = it->connection.lock();
    if (connection && !connection->finished() && now < it->deadline_ns) {
      ++it;
      continue;
    }
    if (connection && !connection->finished()) connection->close_timed_out();
    it = closing_.erase(it);
  }
}

void ProgressThread::reap_lingering() {
  const int64_t now = now_ns();
  std::erase_if(lingering_, [now](const std::unique_ptr<Lingerer>& l) { return !l->linger(now); });
}

void ProgressThread::publish_links_locked() {
  auto snapshot = std::make_shared<const LinkGroups>(groups_);
  std::lock_guard lock(snapshot_mutex_);
  snapshot_ = std::move(snapshot);
}

std::shared_ptr<const ProgressThread::LinkGroups> ProgressThread::links_for_app_polling() const {
  std::lock_guard lock(snapshot_mutex_);
  return snapshot_;
}

void ProgressThread::on_app_sleep() {
  if (armed_.load(std::memory_order_acquire) || kick_fd_ < 0) return;
  uint64_t one = 1;
  sys::write(kick_fd_, &one, sizeof one);
}

void ProgressThread::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  uint64_t one = 1;
  sys::write(kick_fd_, &one, sizeof one);
  thread_.join();
}

namespace {

// Whether the process may run on at most two CPUs. There the background thread never
// polls busy links back to back: the CPU it would take is the one the application or
// its peer needs (on two cores, a spinning progress thread took 44-46% of a stream's
// CPU and was the first cause of tail latency). It reaps what it was woken for, arms the
// notifications and sleeps; the application threads poll while they wait.
bool few_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return false;
  return CPU_COUNT(&set) <= 2;
}

}  // namespace

void ProgressThread::run() {
  pthread_setname_np(pthread_self(), "smcpre-progress");
  const bool never_busy_poll = few_cpus();
  epoll_event events[32];
  while (!stopping_.load(std::memory_order_relaxed)) {
    bool app_polling = false;
    bool busy = false;  // completions on a link no application thread polls
    int64_t deadline = -1;
    {
      std::lock_guard lock(mutex_);
      const int64_t now = now_ns();
      for (auto it = groups_.begin(); it != groups_.end();) {
        LinkGroup& group = **it;
        Link& link = group.link();
        // A failed link whose connections are all gone is released here, the one place
        // that may destroy a group without anyone else still polling it.
        if (link.failed() && group.connection_count() == 0) {
          sys::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, link.qp().notify_fd(), nullptr);
          it = groups_.erase(it);
          publish_links_locked();
          continue;
        }
        // Busy: completions that no application thread is taking in (none waits on the
        // link or has reaped it lately).
        if (link.progress() && link.app_pollers.load(std::memory_order_relaxed) == 0 &&
            now - link.last_app_poll_ns.load(std::memory_order_relaxed) >= kAppPollGraceNs) {
          busy = true;
        }
        group.maintain(now, config::current());
        link.publish_stats(group.connection_count(), group.peer_qp_num());
        // A queue short of buffers (the pool ran empty) is topped up as they come back:
        // look again soon rather than sleep until a completion that may not come.
        if (link.needs_refill() && !link.failed()) app_polling = true;
        if (link.app_pollers.load(std::memory_order_relaxed) > 0 ||
            now - link.last_app_poll_ns.load(std::memory_order_relaxed) < kAppPollGraceNs) {
          app_polling = true;
        }
        int64_t d = link.qp().next_deadline_ns();
        if (d >= 0 && (deadline < 0 || d < deadline)) deadline = d;
        ++it;
      }
      publish_receive_stats();
      if (never_busy_poll) busy = false;
      if (!app_polling && !busy) {
        // Arm, then look once more: a completion that arrived before arming would
        // otherwise wait for the next one.
        // Not a failed link: its queue pair signals at once when armed in error (there
        // are flush completions to take), and nothing more will come on it; arming it
        // would wake this thread again at once, for good (a spin while the application
        // keeps connections of a peer that has gone).
        for (auto& group : groups_) {
          if (!group->link().failed()) group->link().qp().arm_recv_notify();
        }
        armed_.store(true, std::memory_order_release);
        for (auto& group : groups_) group->link().progress();
      }
    }
    int timeout_ms = app_polling ? kBusyTimeoutMs : kIdleTimeoutMs;
    if (busy) {
      poll_while_busy();
      // Then the housekeeping below and a look at the other fds, without sleeping: the
      // next pass decides whether to go on polling or to arm and sleep.
      timeout_ms = 0;
    }
    {
      std::lock_guard lock(mutex_);
      reap_lingering();
      reap_closing();
      reap_tcp_ended();
      if (!lingering_.empty() || !tcp_ended_.empty()) {
        timeout_ms = std::min(timeout_ms, kLingerPollMs);
      }
      if (!closing_.empty()) timeout_ms = std::min(timeout_ms, kClosePollMs);
    }
    if (const int64_t next = run_deadlines(); next >= 0 && (deadline < 0 || next < deadline)) {
      deadline = next;
    }
    if (deadline >= 0) {
      int64_t left_ms = (deadline - now_ns() + 999'999) / 1'000'000;
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left_ms, 0, timeout_ms));
    }
    int n = sys::epoll_wait(epoll_fd_, events, 32, timeout_ms);
    armed_.store(false, std::memory_order_release);
    if (n <= 0) continue;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 & kTcpWatchTag) on_tcp_event(events[i].data.u64 & ~kTcpWatchTag);
    }
    std::lock_guard lock(mutex_);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 & kTcpWatchTag) continue;
      if (events[i].data.u64 & kDeviceTag) {
        const uint64_t index = events[i].data.u64 & ~kDeviceTag;
        if (index < devices_.size()) devices_[index]->handle_async_events();
        continue;
      }
      auto* target = static_cast<LinkGroup*>(events[i].data.ptr);
      if (target == nullptr) {
        uint64_t value;
        sys::read(kick_fd_, &value, sizeof value);
        continue;
      }
      for (auto& group : groups_) {
        if (group.get() == target) group->link().qp().consume_notify();
      }
    }
  }
}

namespace {
std::atomic<ProgressThread*> g_progress{nullptr};
}  // namespace

void ProgressThread::poll_while_busy() {
  // Messages are coming faster than wake-ups can follow (a wake-up costs tens of
  // microseconds here, doc/design.md §6.1): sleeping on the notification between them would let
  // the receive queues run dry and the peers meet RNR. So reap back to back, for as long
  // as there is something to reap, and for the polling budget after the last completion.
  auto groups = links_for_app_polling();
  if (!groups) return;
  const int64_t window = int64_t{config::current().spin_us} * 1000;
  const int64_t start = now_ns();
  int64_t last_found = start;
  // Bounded, so that the housekeeping (closes, TCP watches, new links) is not held up.
  while (!stopping_.load(std::memory_order_relaxed) && last_found - start < kBusyPollSliceNs) {
    bool found = false;
    for (const auto& group : *groups) {
      Link& link = group->link();
      if (link.app_pollers.load(std::memory_order_relaxed) == 0) found |= link.progress();
    }
    const int64_t now = now_ns();
    if (found) {
      last_found = now;
    } else if (now - last_found >= window) {
      return;
    }
    pause_polling(now - last_found);
  }
}

namespace {

std::mutex g_progress_mutex;
}  // namespace

ProgressThread& progress_thread() {
  // Deliberately never destroyed: the thread may outlive static destruction order at
  // exit, and after fork() the child must not join a thread it does not have.
  ProgressThread* p = g_progress.load(std::memory_order_acquire);
  if (p) return *p;
  std::lock_guard lock(g_progress_mutex);
  p = g_progress.load(std::memory_order_acquire);
  if (!p) {
    p = new ProgressThread();
    g_progress.store(p, std::memory_order_release);
  }
  return *p;
}

ProgressThread* existing_progress_thread() {
  return g_progress.load(std::memory_order_acquire);
}

void reset_progress_thread_after_fork() {
  // The parent's thread does not exist here; its object (and any lock it held) is
  // abandoned, and a new thread starts with the child's first link.
  keep_abandoned(g_progress.exchange(nullptr, std::memory_order_acq_rel));
  new (&g_progress_mutex) std::mutex();
}

}  // namespace smcpre::core
