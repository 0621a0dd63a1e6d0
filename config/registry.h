// Host-wide registry of smcpre listeners (DESIGN.md section 6). A client proposes SMC to a
// same-host server only if the server's TCP port is published here.
//
// <runtime_dir>/listeners/tcp-<port> exists while some process holds flock(LOCK_SH) on it.
// The kernel drops a dead process's locks, so a crashed listener needs no cleanup daemon:
// the next client to look finds the file unlocked, removes it and reads "not published".
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace smcpre::registry {

// One published listener: the locked file. Movable, not copyable.
class ListenerRegistration {
 public:
  // Publishes `port` (1..65535), creating the directories on demand. On failure returns
  // nullopt and sets *error (if not null) to one line.
  static std::optional<ListenerRegistration> publish(const std::string& runtime_dir, uint16_t port,
                                                     std::string* error);

  ListenerRegistration(ListenerRegistration&& other) noexcept;
  ListenerRegistration& operator=(ListenerRegistration&& other) noexcept;
  ListenerRegistration(const ListenerRegistration&) = delete;
  ListenerRegistration& operator=(const ListenerRegistration&) = delete;

  // Releases the lock; removes the file if no other listener holds it. In a fork child
  // that inherited the registration (and did not renew it) it only closes the fd, which
  // leaves the parent's lock and entry untouched.
  ~ListenerRegistration();

  uint16_t port() const { return port_; }

  // For a fork child that keeps listening: the inherited fd shares the parent's lock
  // (flock locks belong to the open file description), so the entry would vanish when
  // the parent stops. Takes a lock of this process's own. No-op in the publishing
  // process. On failure the registration is dropped (the parent's entry untouched) and
  // false returned with *error set.
  bool renew_after_fork(std::string* error);
  // For the publishing process right after fork() (before fork() returns in it): the
  // child shares fd_'s open file description, and so the lock, until it renews its own,
  // which it does whenever it gets to run. A parent that closed its listener meanwhile
  // found no other lock and removed the entry under the child's feet (clients connecting
  // until the child re-created it went TCP). The parent takes a lock of its own now and
  // leaves the shared one to the child. On failure the old lock is kept (false, *error).
  bool renew_in_parent_after_fork(std::string* error);

 private:
  ListenerRegistration(int fd, std::string path, uint16_t port);
  void release();

  int fd_ = -1;
  pid_t owner_ = 0;  // the process that took the lock on fd_
  uint16_t port_ = 0;
  std::string path_;
};

// True if a live listener has published `port`. Removes a stale entry it finds.
bool is_published(const std::string& runtime_dir, uint16_t port);

// <runtime_dir>/listeners/tcp-<port>
std::string listener_path(const std::string& runtime_dir, uint16_t port);

}  // namespace smcpre::registry
