// The per-socket half of the engine's face (core/engine.h, which hands these out): one
// Socket per TCP connection that smcpre tracks. The interposer keeps them in its fd table
// (dup'd fds share one object) and asks, per call, where the bytes go.
//
// The fd the application holds is and stays the kernel's TCP socket; the engine only
// decides whether the *bytes* travel over it (Path::kKernel) or over SMC (Path::kSmc).
//
// A leaf (it includes nothing of the engine): the connection code uses Readiness without
// depending on the entry points, which depend on it.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>

namespace smcpre::core {

enum class Path { kKernel, kSmc };

// Result of Socket::poll_state().
struct Readiness {
  bool readable = false;  // data, EOF or error pending
  bool writable = false;  // send space or error pending
  bool hangup = false;    // both directions closed / reset
  bool rdhup = false;     // no more data will come (peer done writing, reading shut, reset)
  bool error = false;
};

// Hears of every change of an SMC socket's readiness (any thread, possibly with engine
// locks held: it must only note the change). core/epoll_set.h's members are the ones.
class ReadinessWatcher {
 public:
  virtual void readiness_changed() noexcept = 0;
  // The application closed the socket's last fd: the watcher is forgotten.
  virtual void socket_released() noexcept = 0;

 protected:
  ~ReadinessWatcher() = default;
};

class Socket {
 public:
  virtual ~Socket() = default;

  // Resolves a pending server-side decision or a pending fallback clean-up, then says
  // where a receive (or send) on `fd` goes. May block on a blocking socket for at most
  // the handshake timeout. Never fails: any trouble ends in Path::kKernel.
  virtual Path route_recv(int fd, int flags) = 0;
  virtual Path route_send(int fd, int flags) = 0;

  // SMC path only. Same contract as recvmsg/sendmsg on a TCP socket (MSG_PEEK,
  // MSG_WAITALL, MSG_DONTWAIT, MSG_NOSIGNAL honoured): returns bytes or -1 with errno.
  // send raises SIGPIPE like TCP unless MSG_NOSIGNAL.
  virtual ssize_t recv(const iovec* iov, int iovcnt, int flags) = 0;
  virtual ssize_t send(const iovec* iov, int iovcnt, int flags) = 0;

  // SMC path: SMC shutdown semantics (SHUT_WR sends peer_done_writing). Returns 0 or
  // -1/errno like shutdown(2). On the kernel path the interposer calls the real one.
  virtual int shutdown(int how) = 0;

  // The application closes its last fd referring to this socket. The engine keeps a
  // private duplicate of the TCP socket until SMC close has finished, so the caller may
  // close `fd` right after this returns. A socket that another process may hold too
  // (fork, SCM_RIGHTS, exec) is left alone unless it is on SMC here: the kernel closes
  // the connection only with its last descriptor, wherever that is.
  virtual void release(int fd) = 0;

  // Another process holds this socket too (it was sent with SCM_RIGHTS, or came from
  // another process): closing our descriptors must not touch the connection.
  virtual void mark_shared() = 0;

  // In a fork child, once per socket, before any other thread exists: an undecided
  // socket (or one still swallowing late CLC bytes) becomes the child's to decide, as
  // fork-per-connection servers hand connections over; a decided one stays the parent's.
  virtual void after_fork_in_child() = 0;

  // getsockopt(SO_ERROR) when smcpre owns the answer (pending SMC error): returns true
  // and fills *error (clearing it like the kernel does).
  virtual bool take_so_error(int* error) = 0;

  // Current readiness of an SMC-path socket (for poll/select over SMC sockets).
  virtual Readiness poll_state() = 0;

  // The kernel path moved `bytes` of the application's data (route_* said kKernel and the
  // real call returned them): counted in the connection's published line.
  virtual void count_kernel_bytes(bool received, uint64_t bytes) = 0;

  virtual bool is_smc() const = 0;
  // Not decided yet (a server socket before the CLC Proposal or the first write).
  virtual bool undecided() const = 0;

  // ioctl SIOCINQ (FIONREAD) and SIOCOUTQ on an SMC-path socket: bytes ready to read, and
  // bytes written but not yet in the peer's ring. False when the kernel socket answers.
  virtual bool queue_sizes(uint64_t* inq, uint64_t* outq) = 0;

  // An SMC-path socket's readiness mirror (core/datapath/readiness_mirror.h), which poll and epoll
  // watch in its place; -1 if it is not on SMC or no mirror can be made.
  virtual int readiness_fd() = 0;
  // The mirror is (about to be) watched edge-triggered: see Connection::want_readiness_edges.
  virtual void want_readiness_edges() = 0;

  // SMC path: `watcher` hears of each change of this socket's readiness from now on, until
  // it expires or drop_readiness_watchers(). False if the socket is not on SMC.
  virtual bool add_readiness_watcher(std::weak_ptr<ReadinessWatcher> watcher) = 0;
  // The application's last fd is being closed: every watcher is told and forgotten (as
  // the kernel drops a closed file from its epoll sets).
  virtual void drop_readiness_watchers() = 0;

  // The application changed the file status flags (fcntl F_SETFL, ioctl FIONBIO):
  // O_NONBLOCK decides whether SMC-path calls wait.
  virtual void on_status_flags(int flags) = 0;

  // setsockopt() succeeded on the kernel socket: SO_RCVTIMEO / SO_SNDTIMEO bound how long
  // SMC-path calls wait (EAGAIN when they expire, as with TCP).
  virtual void on_sockopt(int level, int name, const void* value, socklen_t length) = 0;
};

}  // namespace smcpre::core
