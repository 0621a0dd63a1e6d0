// Shared pieces of the hooks: the process-wide fd table of tracked objects, errno
// discipline, exception-proof calls into the engine, and the bodies that several
// exported names share (read and __read_chk, poll and __poll_chk, ...).
#pragma once

#include <cxxabi.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "core/engine.h"
#include "preload/fd_table.h"
#include "preload/real.h"

// Marks a hook: C linkage, exported from libsmcpre.so (everything else is hidden).
#define SMCPRE_HOOK extern "C" __attribute__((visibility("default")))

namespace smcpre::preload {

// What an fd refers to. Every fd dup'd from one tracked fd shares one Tracked; exactly
// one of the three pointers is set.
struct Tracked {
  std::shared_ptr<core::Socket> socket;       // a connection
  std::shared_ptr<core::Listener> listener;   // a listening socket
  std::shared_ptr<core::EpollSet> epoll_set;  // an epoll set with user-space members
  std::atomic<int> fd_refs{0};                // maintained by FdTable

  // epoll registrations of a socket that may still turn SMC (an undecided server
  // socket): made on the kernel socket, moved to its readiness mirror when it does.
  struct EpollRegistration {
    int epfd;
    epoll_event event;
  };
  std::mutex epoll_mutex;
  std::vector<EpollRegistration> epoll_registrations;  // under epoll_mutex
  std::atomic<bool> epoll_pending{false};
};

// Moves `t`'s recorded epoll registrations (see Tracked) to its readiness mirror once the
// socket is on SMC, or forgets them once it is TCP for good. Cheap when there are none.
void settle_epoll_registrations(Tracked& t, int fd) noexcept;
// The same, with t.epoll_mutex held by the caller.
void settle_epoll_registrations_locked(Tracked& t, int fd) noexcept;

using TrackedTable = FdTable<Tracked>;

namespace detail {
[[gnu::visibility("hidden")]] extern constinit TrackedTable tracked_table;
}

inline TrackedTable& fds() noexcept {
  return detail::tracked_table;
}

// The entry of `fd` if it is a tracked connection (not a listener), else null. The
// result keeps the Socket alive even if another thread closes fd meanwhile.
inline std::shared_ptr<Tracked> tracked_socket(int fd) noexcept {
  std::shared_ptr<Tracked> t = fds().lookup(fd);
  if (t != nullptr && t->socket == nullptr) return nullptr;
  return t;
}

// Saves errno on construction; restore() puts it back. Hooks restore it before handing
// over to a real function or returning success, so that engine work in between never
// shows through: errno is exactly what the real call (or the engine's failure) left.
class SavedErrno {
 public:
  SavedErrno() noexcept : value_(errno) {}
  void restore() const noexcept { errno = value_; }

 private:
  int value_;
};

// --- tracking (fd_table.cpp) ---------------------------------------------------------

// Prepares tracking of `fd` before the engine is asked: the table chunk and the entry
// are allocated here, so that nothing can fail after the engine said yes. Null if fd
// cannot be tracked (fd >= TrackedTable::kMaxFds, out of memory).
std::shared_ptr<Tracked> prepare_entry(int fd) noexcept;

// Tracks `fd` as one more fd referring to `entry` (prepared for fd, or shared with a
// dup'd fd), dropping a stale entry the slot may still hold. The slot must be reserved.
void track(int fd, std::shared_ptr<Tracked> entry) noexcept;

// A new fd appeared (socket(), accept(), dup()) that is not to be tracked: drops an
// entry its number may still have from an fd closed behind our back (a raw syscall,
// fclose of an fdopen'd socket). Such an entry is not released: the number names
// another file now.
void forget_stale(int fd) noexcept;

// The application closes `fd` (or dup2 closes it implicitly): stops tracking it and
// disposes of the entry.
void untrack(int fd) noexcept;

// Ends an fd's reference to a tracked object. When it was the last fd of a Socket,
// Socket::release(release_fd) runs: release_fd must still refer to that socket.
void dispose(TrackedTable::Removed removed, int release_fd) noexcept;

// False in a child that shares our memory but not our fd table's owner: a vfork()
// child (or clone(CLONE_VM) without atfork handlers). Closing or replacing fds there
// must not touch the parent's table. Costs a getpid(); only on tracked fds.
bool in_owner_process() noexcept;

// Another process now holds (or will hold after its exec) this process's descriptors: a
// vfork child seen running our hooks, a posix_spawn(). Sockets that exist now are shared
// from here on (hooks_process.cpp).
void note_other_process() noexcept;

// Registers the fork-child and exit handlers once and records the owner process
// (hooks_process.cpp). Called whenever an object gets tracked.
void ensure_process_handlers() noexcept;

// Runs a logging statement so that it neither throws into a hook nor leaves errno
// changed behind it. Thread cancellation (a log file write is a cancellation point)
// passes through.
template <typename F>
void log_safely(F&& f) {
  SavedErrno saved;
  try {
    f();
  } catch (const abi::__forced_unwind&) {
    throw;
  } catch (...) {  // a log line is not worth failing the application's call
  }
  saved.restore();
}

// --- sockets passed between processes (inherited.cpp) ---------------------------------

// recvmsg() returned descriptors (SCM_RIGHTS): untouched TCP connections among them are
// tracked as undecided server sockets, this process's to decide.
void adopt_received_fds(const msghdr* msg) noexcept;
// sendmsg() passes descriptors: tracked sockets among them may be served elsewhere now.
void note_sent_fds(const msghdr* msg) noexcept;

// --- engine calls that never throw ---------------------------------------------------

// Logs an exception that escaped the engine (always an engine bug) (interpose.cpp).
void log_engine_exception(const char* call, const char* what);
// Logs that `fd` still had an entry although it was closed behind our back.
void log_stale_fd(int fd);

// Runs f() and returns its result, or `on_error` if the engine threw: no exception may
// unwind into the application. Thread cancellation (abi::__forced_unwind) passes
// through, as it must.
template <typename R, typename F>
R engine_call(const char* call, R on_error, F&& f) {
  try {
    return f();
  } catch (const abi::__forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    log_engine_exception(call, e.what());
  } catch (...) {
    log_engine_exception(call, "unknown exception");
  }
  return on_error;
}

inline core::Path route_recv(core::Socket& s, int fd, int flags) {
  return engine_call("route_recv", core::Path::kKernel, [&] { return s.route_recv(fd, flags); });
}
inline core::Path route_send(core::Socket& s, int fd, int flags) {
  return engine_call("route_send", core::Path::kKernel, [&] { return s.route_send(fd, flags); });
}
// The SMC data path: bytes or -1/errno; an engine exception becomes EIO.
ssize_t smc_recv(core::Socket& s, const iovec* iov, int iovcnt, int flags);
ssize_t smc_send(core::Socket& s, const iovec* iov, int iovcnt, int flags);

// --- shared hook bodies ----------------------------------------------------------------

// Bodies shared by a hook and its _FORTIFY_SOURCE variant (hooks_io.cpp).
ssize_t read_impl(int fd, void* buf, size_t count);
ssize_t recv_impl(int fd, void* buf, size_t len, int flags);
ssize_t recvfrom_impl(int fd, void* buf, size_t len, int flags, sockaddr* src_addr,
                      socklen_t* addrlen);

// poll/ppoll and __poll_chk/__ppoll_chk (hooks_poll.cpp).
int poll_impl(pollfd* fds, nfds_t nfds, int timeout_ms);
int ppoll_impl(pollfd* fds, nfds_t nfds, const timespec* timeout, const sigset_t* sigmask);

}  // namespace smcpre::preload
