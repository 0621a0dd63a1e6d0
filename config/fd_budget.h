// How many file descriptors smcpre may take for itself.
//
// Every descriptor smcpre holds (a readiness mirror's two ends, a TCP watch, a closed
// socket kept until its peer closes, a link's eventfds and memfds) counts against the
// application's RLIMIT_NOFILE. Taken without a bound, they made an event loop that TCP
// serves at 90% of its limit fail accept() with EMFILE. So smcpre holds at most a share
// of the limit (1/16: 64 of 1024), and takes nothing more once the application's own
// descriptors come within that share of the limit: an application that stays below
// limit - share never meets EMFILE because of smcpre. A connection that cannot have
// its descriptors stays TCP (fallback reason NO_FDS).
//
// Accounting is by reservation, made before a connection or a link group goes SMC and
// held for its lifetime (so that a readiness mirror made later, at the first epoll_ctl,
// is already paid for), plus charges for descriptors made on the way (shm memory areas).
#pragma once

#include <utility>

namespace smcpre::config {

// The soft RLIMIT_NOFILE (RLIM_INFINITY as a large number): read once, and again only
// after the application changed it (the preload hooks of setrlimit and prlimit call
// nofile_limit_changed()). A relaxed load, no syscall.
long nofile_limit();
void nofile_limit_changed();

// The most smcpre may hold under `limit` (0 when the limit is too small to share).
long fd_share(long limit);
// Descriptors smcpre holds by its own count.
long fds_held();

// Descriptors reserved for smcpre; given back on destruction. Move-only.
class FdReservation {
 public:
  FdReservation() = default;
  FdReservation(FdReservation&& other) noexcept : count_(std::exchange(other.count_, 0)) {}
  FdReservation& operator=(FdReservation&& other) noexcept {
    if (this != &other) {
      reset();
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  FdReservation(const FdReservation&) = delete;
  FdReservation& operator=(const FdReservation&) = delete;
  ~FdReservation() { reset(); }

  explicit operator bool() const { return count_ > 0; }
  int count() const { return count_; }
  void reset();

 private:
  friend FdReservation reserve_fds(int count, int app_fd);
  explicit FdReservation(int count) : count_(count) {}
  int count_ = 0;
};

// Reserves `count` descriptors if that keeps smcpre within its share and leaves the
// application its headroom; an empty reservation otherwise. `app_fd` is a descriptor
// the application has just been given (its socket): the kernel hands out the lowest free
// number and smcpre's own sit at the top, so it tells how many the application holds.
FdReservation reserve_fds(int count, int app_fd);

// Counts descriptors made without a reservation (never refused: the caller has one
// already, or does without if creating the descriptor fails); uncharge_fds when closed.
void charge_fds(int count);
void uncharge_fds(int count);

}  // namespace smcpre::config
