// A kernel object whose poll/epoll readiness mirrors an SMC connection's.
//
// An SMC connection's data never passes through its TCP socket, so the kernel cannot tell
// poll, select or epoll when it is readable. A ReadinessMirror is one end (app_fd) of an
// AF_UNIX stream socketpair that the interposer registers in the application's epoll sets
// and poll arrays in place of the TCP socket; the engine drives the other end (engine_fd)
// so that app_fd's poll mask is the one kernel TCP would report for the connection. The
// kernel then does everything else exactly as it does for TCP: level and edge triggering,
// EPOLLONESHOT, several epoll sets, several waiting threads, and removal from every epoll
// set when the mirror is destroyed.
//
// The recipe (each row checked against kernel TCP on loopback in test_readiness_mirror):
//
//   state                        TCP reports                 the mirror does
//   data to read                 IN                          1 byte queued engine_fd -> app_fd
//   more data while readable     a new EPOLLET edge          1 more byte (at most 16 queued)
//   nothing to read              -                           app_fd's queue read dry
//   send space                   OUT                         engine_fd has read everything
//                                                            app_fd sent (but the primer)
//   no send space                -                           a quarter of app_fd's (small)
//                                                            SO_SNDBUF sent app_fd -> engine_fd
//   peer done writing (FIN)      IN RDHUP                    shutdown(engine_fd, SHUT_WR)
//   both directions closed       IN OUT RDHUP HUP            shutdown(engine_fd, SHUT_RDWR)
//   reset, error not yet read    IN OUT RDHUP HUP ERR        close(engine_fd) while it holds
//                                                            unread bytes: the kernel sets
//                                                            ECONNRESET on app_fd
//   reset, error already read    IN OUT RDHUP HUP            SO_ERROR read on app_fd (or
//                                                            engine_fd closed empty)
//
// (RDNORM and WRNORM come with IN and OUT in both.) Two differences remain that the
// caller must hide: an AF_UNIX socket reports POLLWRBAND/EPOLLWRBAND with OUT and TCP
// never does, so the interposer must not ask app_fd for WRBAND; and TCP's POLLPRI (urgent
// data) has no equivalent here.
//
// Once closed, app_fd can no longer send, so on the way to closed one byte ("the primer")
// is left queued app_fd -> engine_fd: a later reset then still leaves ECONNRESET. It is
// small enough that app_fd stays writable (checked in create()). Bytes queued app_fd ->
// engine_fd are always read all at once: an skb's memory, which is what decides OUT, is
// freed only when all its bytes are read.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

namespace smcpre::core {

// What the connection's readiness is now, in kernel TCP's terms. peer_done, closed and
// reset only ever go from false to true (as in TCP); a later apply() with one of them
// false again changes nothing.
struct MirrorState {
  bool readable = false;        // data to read (not EOF/error alone)
  bool writable = false;        // a send would not block: ring space, or our write side is shut
  bool peer_done = false;       // no more data will come: the peer is done writing or we shut
                                // down reading (RDHUP, IN)
  bool closed = false;          // both directions closed (HUP, OUT; implies peer_done)
  bool reset = false;           // aborted / link down (HUP, and ERR until error_reported); final
  bool error_reported = false;  // after reset: recv or SO_ERROR has returned the error, so
                                // ERR goes away as TCP's does once sk_err is read
};

class ReadinessMirror {
 public:
  // nullptr with *error on failure (fd limits, memory): the caller falls back.
  static std::unique_ptr<ReadinessMirror> create(std::string* error);
  // Closes both ends, app_fd first (so that the reset primer is never seen): the kernel
  // drops app_fd from every epoll set, with no event, unless another process holds a copy
  // of it (fork).
  ~ReadinessMirror();
  ReadinessMirror(const ReadinessMirror&) = delete;
  ReadinessMirror& operator=(const ReadinessMirror&) = delete;

  int app_fd() const { return app_fd_; }

  // Brings app_fd's mask to `state`. new_data: more bytes arrived although the connection
  // was already readable; one more byte is queued so that an EPOLLET waiter gets a new
  // edge, as TCP gives one per arriving segment. Thread-safe; idempotent; never blocks;
  // no syscall when nothing changes. A failed syscall (no memory) is logged and retried
  // by the next call.
  //
  // Concurrent callers must read the state they pass under one lock of their own (taken
  // around the call): otherwise an older view applied last would win.
  //
  // lazy_unreadable: if the only change would be IN going off, leave IN on and set
  // *deferred (the caller must apply again, non-lazily, before anyone waits on app_fd).
  void apply(const MirrorState& state, bool new_data, bool lazy_unreadable = false,
             bool* deferred = nullptr);

  // Called in the parent after every fork(): mirrors that existed then may have a copy of
  // engine_fd in the child, so a reset must shut it down explicitly (see do_reset).
  static void note_fork() noexcept;

  // Whether a change must show at once (doc/design.md §6.2). A mirror matters only to a
  // thread blocked in the kernel on it: an application's own waits look at the
  // connections themselves while they poll (core/readiness_wait.h). So while no thread of
  // the process is in such a kernel wait, a change is only noted, and a waiter about to
  // block first brings every noted mirror up to date (flush_stale_mirrors). Exceptions
  // are the waits smcpre cannot see: a mirror that existed at a fork (the child holds a
  // copy of the sets it is in), and any mirror once one may be watched from a nested
  // epoll set or from a set another process shares (watched_unseen).
  // forks_at_creation: forks_at_creation() of the mirror in question, a copy kept by its
  // owner (a syncing thread must not touch a mirror another thread may be destroying).
  static bool must_show_now(uint64_t forks_at_creation) noexcept;
  // Whether another process or a wait smcpre cannot see may be watching: then not even a
  // drained connection's IN may linger (Connection::sync_mirror's lazy).
  static bool watched_elsewhere(uint64_t forks_at_creation) noexcept;
  uint64_t forks_at_creation() const noexcept { return forks_at_creation_; }
  // A thread enters (+1) or leaves (-1) a kernel wait that may watch mirrors. Sequentially
  // consistent with the stale list's flag: a change noted while a waiter enters is either
  // found by the waiter's flush or shown at once by the changer, who looks again.
  static void count_kernel_waiter(int delta) noexcept;
  // From now on every mirror of the process shows each change at once.
  static void watched_unseen() noexcept;

 private:
  // What app_fd shows. `readable` is the bytes queued to app_fd being > 0.
  uint64_t forks_at_creation_ = 0;
  struct Shown {
    bool writable = true;
    bool peer_done = false;
    bool closed = false;
    bool reset = false;  // engine_fd is closed
    bool error = false;  // app_fd has ECONNRESET pending (ERR)
  };

  ReadinessMirror(int app_fd, int engine_fd);

  // The steps of apply(), each a no-op when app_fd already shows what is asked. A failed
  // syscall is logged and leaves shown_ as it was, so that the next apply() retries.
  void set_readable(bool readable, bool new_data);
  void queue_byte();
  bool set_writable(bool writable);
  bool drain_send_queue();
  bool ensure_primer();
  void do_reset(bool error_reported);
  void clear_error();

  std::mutex mutex_;
  const int app_fd_;
  int engine_fd_;          // -1 once closed (reset)
  Shown shown_;            // under mutex_
  unsigned in_bytes_ = 0;  // bytes queued engine_fd -> app_fd, under mutex_
  size_t out_bytes_ = 0;   // bytes queued app_fd -> engine_fd incl. the primer, under mutex_
  size_t fill_bytes_ = 0;  // a quarter of app_fd's send buffer: enough to make it unwritable
};

}  // namespace smcpre::core
