#include "config/high_fd.h"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "config/fd_budget.h"
#include "config/sys.h"

namespace smcpre::sys {

namespace {

// The highest fd used: a limit of a million would otherwise make the kernel allocate a
// fd table of that size (8 MiB) for the process, copied on every fork.
constexpr long kCeilingCap = 65536;
// Below this limit there is no room worth splitting between application and smcpre.
constexpr long kMinLimit = 256;

// Searching downwards from the ceiling starts where the last search ended: the space
// above that point was full then. Reset when the limit changes.
std::atomic<long> search_start{0};
std::atomic<long> search_ceiling{0};

// The limit is cached (config/fd_budget.h): placing an fd costs no getrlimit().
long current_ceiling() {
  return std::min(config::nofile_limit(), kCeilingCap);
}

// The upper half of the allowed space is ours to try, and only that: an application
// close to its limit keeps everything below.
long floor_of(long ceiling) {
  return ceiling / 2;
}

}  // namespace

int high_fd_floor() {
  const long ceiling = current_ceiling();
  return ceiling < kMinLimit ? -1 : static_cast<int>(floor_of(ceiling));
}

namespace {

// A close-on-exec duplicate of `fd` at or above the floor, or -1.
int dup_above_floor(int fd) {
  const long ceiling = current_ceiling();
  if (ceiling < kMinLimit) return -1;
  if (search_ceiling.exchange(ceiling) != ceiling) search_start.store(ceiling - 1);
  const long step = std::max(16L, ceiling / 64);
  for (long start = std::min(search_start.load(), ceiling - 1); start >= floor_of(ceiling);
       start -= step) {
    const int copy = fcntl(fd, F_DUPFD_CLOEXEC, start);
    if (copy >= 0) {
      search_start.store(start);
      return copy;
    }
    // EMFILE: nothing free at or above `start`; EINVAL: the limit shrank meanwhile.
    if (errno != EMFILE && errno != EINVAL) break;
  }
  return -1;
}

}  // namespace

int dup_high(int fd) {
  if (fd < 0) return fd;
  const int copy = dup_above_floor(fd);
  return copy >= 0 ? copy : fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

int move_fd_high(int fd) {
  if (fd < 0 || fd >= high_fd_floor()) return fd;
  const int moved = dup_above_floor(fd);
  if (moved >= 0) {
    close(fd);
    return moved;
  }
  return fd;
}

}  // namespace smcpre::sys
