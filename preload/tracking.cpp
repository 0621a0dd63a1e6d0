// The process-wide table of tracked fds and the operations the hooks perform on it (declared
// in interpose.h; the table itself is fd_table.h).
#include <new>
#include <utility>

#include "preload/interpose.h"

namespace smcpre::preload {

namespace detail {
// Constant-initialized (no constructor runs at load) and never destroyed before exit
// matters: its chunks are leaked on purpose, see fd_table.h.
constinit TrackedTable tracked_table;
}  // namespace detail

std::shared_ptr<Tracked> prepare_entry(int fd) noexcept {
  if (!fds().reserve(fd)) return nullptr;
  try {
    return std::make_shared<Tracked>();
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

void track(int fd, std::shared_ptr<Tracked> entry) noexcept {
  ensure_process_handlers();
  TrackedTable::Removed stale = fds().install(fd, std::move(entry));
  if (stale.entry != nullptr) {
    log_stale_fd(fd);
    dispose(std::move(stale), -1);
  }
}

void forget_stale(int fd) noexcept {
  if (fds().lookup(fd) == nullptr || !in_owner_process()) return;
  TrackedTable::Removed stale = fds().remove(fd);
  if (stale.entry != nullptr) {
    log_stale_fd(fd);
    dispose(std::move(stale), -1);
  }
}

void untrack(int fd) noexcept {
  dispose(fds().remove(fd), fd);
}

void dispose(TrackedTable::Removed removed, int release_fd) noexcept {
  if (removed.entry == nullptr || !removed.last) return;
  std::shared_ptr<core::Socket> socket = removed.entry->socket;
  if (socket == nullptr || release_fd < 0) return;  // listeners unpublish when destroyed
  engine_call("release", 0, [&] {
    // Out of every user-space epoll set first, as the kernel drops a closed file.
    socket->drop_readiness_watchers();
    socket->release(release_fd);
    return 0;
  });
}

}  // namespace smcpre::preload
