// Process life-cycle: fork(), vfork() and exit() with tracked objects.
//
// fork() needs no hook: pthread_atfork handlers, registered when the first object gets
// tracked (never at load time), reset the engine in the child, whose inherited SMC
// connections stay owned by the parent, while undecided connections become the child's
// to decide; the parent notes that its older sockets are now shared (its close of one
// must not end a connection the child serves).
//
// vfork() children share our memory, fd table included, but run no atfork handler. The
// owner pid recorded here lets close()/dup2() in such a child leave the parent's table
// alone; such a call is also how we learn that a vfork child exists (it will hold our
// sockets after its exec), and so are posix_spawn() calls.
//
// exit(): Engine::at_exit() gives connections still open their orderly close. It is an
// atexit handler registered at the same moment, not an ELF destructor: exit() runs
// atexit handlers last-registered-first and only then the libraries' destructors, by
// which time the engine's function-local statics (configuration, logger), all created
// before the first tracking, would already be destroyed.
#include <pthread.h>
#include <spawn.h>
#include <unistd.h>

#include <cstdlib>

#include "config/log.h"
#include "preload/epoll_sets.h"
#include "preload/interpose.h"

namespace smcpre::preload {

namespace {

pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
std::atomic<pid_t> owner_pid{0};

void on_fork_child() {
  SavedErrno saved;
  owner_pid.store(getpid(), std::memory_order_relaxed);
  engine_call("after_fork_in_child", 0, [] {
    core::Engine::after_fork_in_child();
    // Undecided connections become the child's to decide (fork-per-connection servers);
    // locks parent threads held at fork() are nobody's here.
    fds().for_each_in_fork_child([](int, Tracked& t) noexcept {
      new (&t.epoll_mutex) std::mutex();
      if (t.epoll_set != nullptr) t.epoll_set->forget_in_fork_child();
      if (t.socket != nullptr) {
        engine_call("after_fork_in_child", 0, [&] {
          t.socket->after_fork_in_child();
          return 0;
        });
      }
    });
    return 0;
  });
  saved.restore();
}

void on_fork_parent() {
  SavedErrno saved;
  engine_call("after_fork_in_parent", 0, [] {
    core::Engine::after_fork_in_parent();
    return 0;
  });
  saved.restore();
}

void on_exit() {
  SavedErrno saved;
  engine_call("at_exit", 0, [] {
    core::Engine::at_exit();
    return 0;
  });
  saved.restore();
}

void register_process_handlers() {
  owner_pid.store(getpid(), std::memory_order_relaxed);
  // Both can fail only for lack of memory. Say so loudly rather than fail the
  // application's socket call.
  if (int rc = pthread_atfork(nullptr, on_fork_parent, on_fork_child); rc != 0) {
    log_safely([&] {
      SMC_LOG_ERROR("preload: pthread_atfork failed ({}); fork() children are unsafe", rc);
    });
  }
  if (atexit(on_exit) != 0) {
    log_safely(
        [] { SMC_LOG_ERROR("preload: atexit failed; connections will not be closed at exit"); });
  }
}

}  // namespace

void ensure_process_handlers() noexcept {
  SavedErrno saved;
  pthread_once(&handlers_once, register_process_handlers);
  saved.restore();
}

bool in_owner_process() noexcept {
  return getpid() == owner_pid.load(std::memory_order_relaxed);
}

void note_other_process() noexcept {
  engine_call("note_other_process", 0, [] {
    core::Engine::note_other_process();
    return 0;
  });
}

}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols

// posix_spawn starts a child without fork()'s handlers (glibc clones with CLONE_VFORK):
// the child holds every socket that is not close-on-exec, like a fork child does.
SMCPRE_HOOK int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
                            const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
  const auto& r = real();
  if (r.posix_spawn == nullptr) return ENOSYS;
  if (fds().any()) note_other_process();
  return r.posix_spawn(pid, path, actions, attr, argv, envp);
}

SMCPRE_HOOK int posix_spawnp(pid_t* pid, const char* file,
                             const posix_spawn_file_actions_t* actions,
                             const posix_spawnattr_t* attr, char* const argv[],
                             char* const envp[]) {
  const auto& r = real();
  if (r.posix_spawnp == nullptr) return ENOSYS;
  if (fds().any()) note_other_process();
  return r.posix_spawnp(pid, file, actions, attr, argv, envp);
}
