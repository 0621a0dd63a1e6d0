// Host-wide registry of smcpre listeners (doc/design.md §2.1). A client proposes SMC to
// a same-host server only if the listening socket its connection would reach is one that
// smcpre published here.
//
// An entry is the file <runtime_dir>/listeners/<uid>/tcp-<port>-<inode>, named by the
// listening socket's inode, in the subtree of the uid that published it, or
// tcpopt-<port>-<inode> for a listener the SMC option program armed (doc/design.md §2.9):
// that one expects CLC only after a SYN that announced SMC, so a client proposes to it
// only when its own SYN-ACK announced SMC too (a smcpre that does not know the name never
// does). The subtree is
// that uid's, mode 0711, the file 0600: nobody else can add, rename, open or lock
// entries; listeners/ itself is sticky and world-writable, like /tmp, so that every user
// of a shared runtime dir can make a subtree of its own). What a client trusts:
// - which listener: the kernel's own answer (listener_lookup.h) for the destination, in
//   the connecting socket's network namespace: it is listening now, on that address (or a
//   wildcard that covers it) and that port. A file cannot fake or prolong that.
// - that it is smcpre's: a regular file with that name, one link, in the subtree of the
//   socket's own uid or of root, owned by that uid, in a directory owned by it that only
//   it can write. Another user can neither vouch for a socket it does not own nor keep a
//   dead listener's entry meaningful (a new socket has a new inode).
// Publishers hold flock(LOCK_SH) on their entry only to know who removes it: the last
// process that holds the listening socket (fork children renew the lock). A crashed
// publisher's file stays until its uid (or root) next publishes; it is never trusted,
// since no listening socket has its inode.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace smcpre::registry {

// What a listener's entry says.
enum class Entry {
  kNone,    // no trusted entry: not smcpre's
  kClc,     // tcp-: answers any Proposal
  kOption,  // tcpopt-: expects CLC only after a SYN that announced SMC
};

// One published listener: the locked file. Movable, not copyable.
class ListenerRegistration {
 public:
  // Publishes the listening TCP socket `listen_fd`, creating the directories on demand. A
  // process may publish only a socket of its own uid (root: any socket).
  // `option_armed`: a tcpopt- entry (see above). On failure returns nullopt and sets
  // *error (if not null) to one line.
  static std::optional<ListenerRegistration> publish(const std::string& runtime_dir, int listen_fd,
                                                     std::string* error, bool option_armed = false);

  ListenerRegistration(ListenerRegistration&& other) noexcept;
  ListenerRegistration& operator=(ListenerRegistration&& other) noexcept;
  ListenerRegistration(const ListenerRegistration&) = delete;
  ListenerRegistration& operator=(const ListenerRegistration&) = delete;

  // Releases the lock; removes the file if no other process holds it. In a fork child
  // that inherited the registration (and did not renew it) it only closes the fd, which
  // leaves the parent's lock and entry untouched.
  ~ListenerRegistration();

  uint16_t port() const { return port_; }
  uint64_t inode() const { return inode_; }
  const std::string& path() const { return path_; }

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
  ListenerRegistration(int fd, std::string path, uint16_t port, uint64_t inode);
  void release();

  int fd_ = -1;
  pid_t owner_ = 0;  // the process that took the lock on fd_
  uint16_t port_ = 0;
  uint64_t inode_ = 0;
  std::string path_;
};

// The trusted entry `runtime_dir` holds for the listening socket `inode` on `port` owned
// by `socket_uid` (see above). Two lstat()s per kind of entry, twice that if the socket
// is not root's and its own subtree has no entry (root may publish any socket).
Entry published_entry(const std::string& runtime_dir, uint16_t port, uint64_t inode,
                      uid_t socket_uid);
// True for a tcp- entry.
bool is_published(const std::string& runtime_dir, uint16_t port, uint64_t inode, uid_t socket_uid);

// The entry of the listener a connection from socket `fd` (-1: the calling thread's
// namespace) to `dest` (normalized: AF_INET, or AF_INET6 not v4-mapped) would reach. One
// sock_diag request and reply, and published_entry() if a listener answers.
Entry destination_entry(const std::string& runtime_dir, int fd, const sockaddr_storage& dest);
// True for a tcp- entry.
bool destination_published(const std::string& runtime_dir, int fd, const sockaddr_storage& dest);

// <runtime_dir>/listeners/<uid>/tcp-<port>-<inode> (tcpopt-... with `option_armed`)
std::string listener_path(const std::string& runtime_dir, uid_t uid, uint16_t port, uint64_t inode,
                          bool option_armed = false);

}  // namespace smcpre::registry
