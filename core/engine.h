// The engine's face towards the interposer, and the one core header preload/ includes
// (doc/design.md §1.7, checked by scripts/check-layers): the process-wide entry points
// (Engine), the per-socket interface they hand out (core/socket.h), and the clock and
// spin hint the hooks' own waits use (core/datapath/wait.h). Everything behind it -- connections,
// link groups, the progress thread, readiness mirrors -- may change shape without
// preload/ noticing.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>

#include "core/datapath/wait.h"
#include "core/epoll_set.h"
#include "core/readiness_set.h"
#include "core/socket.h"

namespace smcpre::core {

class Listener;

// What connect() does about a destination (Engine::plan_connect).
struct ConnectPlan {
  bool eligible = false;     // the registry, SMCPRE_PEERS or a policy rule say propose
  bool option_only = false;  // a same-host listener the option program armed: propose
                             // only if its SYN-ACK announces SMC
  bool marked = false;       // the option program announces SMC in the SYN; its record decides
  uint32_t reason = 0;       // why not eligible (core/wire/decline.h)
  // Whether the connection must be completed and decided after connect().
  bool decides_after_connect() const { return eligible || marked; }
};

// Process-wide entry points. All of them are cheap no-ops (returning nullptr) when
// smcpre is disabled for the process.
class Engine {
 public:
  // listen() succeeded on a TCP socket: publish it in the host-wide listener registry,
  // unless the option program armed it (clients then learn of it from its SYN-ACK, and
  // one without the program must not propose to it). The object unpublishes itself when
  // destroyed (the listener's last fd was closed).
  static std::shared_ptr<Listener> on_listen(int fd);

  // Before listen() on TCP socket `fd`: unless a policy rule keeps the listener on TCP,
  // marks it for the option program (doc/design.md §2.9), which then answers SYNs that
  // announce SMC with a SYN-ACK that does too.
  static void before_listen(int fd);

  // Before connect() of socket `fd` to `addr` (doc/design.md §2.1, §2.9), decided before
  // the connect because a server may accept, close its listener and unpublish it before
  // connect() returns on our side. A destination the policy or SMCPRE_EXCLUDE does not rule
  // out is marked for the option program when it is active, but a non-blocking connect
  // only when the destination is known to run smcpre (eligible, or a same-host listener
  // the program armed): only then does connect() wait for the connection, so that the
  // record can decide before the application's first byte.
  static ConnectPlan plan_connect(int fd, const sockaddr* addr, socklen_t len, bool nonblocking);
  // A connect() to a destination that was not eligible succeeded (or is in progress): it
  // counts as a fallback for that reason.
  static void on_not_proposed(uint32_t reason);
  // A planned connect() that will not reach on_connected (failed, interrupted, or still in
  // progress after the wait): the option program's mark is taken back.
  static void on_connect_abandoned(int fd, const ConnectPlan& plan);

  // A connect() on `fd` that `plan` marked or found eligible succeeded (a non-blocking
  // one completed within the handshake timeout). With
  // the option program's record, SMC is proposed only if the server's SYN-ACK carried the
  // option; without one, if the destination was eligible. Proposing runs the client CLC
  // handshake (blocking, bounded by the handshake timeout) and returns the socket, on SMC
  // or fallen back to TCP; not proposing returns nullptr and counts the reason (as does a
  // disabled smcpre).
  static std::shared_ptr<Socket> on_connected(int fd,
                                              const ConnectPlan& plan = {true, false, false, 0});

  // accept()/accept4() on a published listener returned `fd`. The server side decides
  // lazily, on the first data call, whether the peer proposed SMC (doc/design.md §2.2).
  static std::shared_ptr<Socket> on_accepted(int fd, const std::shared_ptr<Listener>& listener);

  // A connected TCP socket this process got from another one, with no smcpre state: an
  // fd inherited across exec() or received by SCM_RIGHTS. If nobody has read from or
  // written to it yet (core/stream_start.h), it is an undecided server socket, to be
  // decided here on the first data call; else nullptr (it stays the kernel's).
  static std::shared_ptr<Socket> on_inherited(int fd);

  // Another process holds (or will hold after its exec) this process's descriptors: a
  // posix_spawn() or a vfork child. Sockets that existed before are shared from now on.
  static void note_other_process();
  // Called in the child after fork(): engine threads are gone there; inherited
  // connections stay owned by the parent and become inert in the child, except undecided
  // ones (Socket::after_fork_in_child).
  static void after_fork_in_child();
  // Listeners renew their registry entries in the child (one of the process objects).
  static void renew_listeners_in_fork_child();
  // Called in the parent after fork(), before fork() returns there and before anything
  // else the parent does about it: readiness mirrors that existed then may have a copy in
  // the child (their reset must shut them down explicitly), sockets that existed before
  // are held by the child too (note_other_process), and listeners take a registry lock of
  // their own, the one they shared with the child staying the child's.
  static void after_fork_in_parent();

  // The process exits (library destructor): connections it left open get the orderly
  // close the kernel would give their TCP sockets.
  static void at_exit();

  // Before any kernel wait on readiness mirrors (poll, select, an epoll_ctl that
  // registers one): mirrors left readable after a read drained their connection are
  // brought up to date, so that no wait sees a stale IN. Cheap when there are none.
  static void flush_stale_mirrors();

  // poll, select or epoll_wait on a set with SMC sockets: the engine's one wait loop
  // (core/readiness_wait.h, doc/design.md §6.2) reaps the links in the calling thread,
  // evaluates the SMC members in user memory, polls adaptively, asks the kernel only for
  // what only the kernel knows, and blocks last. `deadline_ns`: CLOCK_MONOTONIC
  // (now_ns()), -1 = none, 0 = do not block. Returns the number ready or -1 with errno.
  static int wait_ready(int64_t deadline_ns, ReadinessSet& set);

  // A readiness mirror may be watched where smcpre cannot see the wait (an epoll set
  // nested in another, polled, or shared with another process): from now on every
  // mirror shows each change at once (ReadinessMirror::must_show_now).
  static void mirrors_watched_unseen();
};

}  // namespace smcpre::core
