// The listener registry (see registry.h). Liveness and address come from the kernel
// (listener_lookup); the files say only "this socket is smcpre's", and flock(2) decides
// who removes one. Races resolved here:
// - A process removes a file only while holding LOCK_EX on it, so never while any
//   publisher holds LOCK_SH.
// - A publisher may lock a file that a sweep has just removed; it notices because the
//   path no longer names its inode, and starts over with a fresh file.
// - Nobody removes the path unless it still names the inode they hold locked.
#include "config/registry.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "config/high_fd.h"
#include "config/listener_lookup.h"
#include "config/runtime_dir.h"
#include "config/sys.h"

namespace smcpre::registry {
namespace {

// Publishing waits out a sweep that briefly holds LOCK_EX while removing a stale file;
// bounded so that a broken lock holder can never hang the application's listen().
constexpr int kPublishAttempts = 64;
constexpr long kBusyWaitNs = 1000000;  // 1 ms between attempts
// A sweep looks at this many entries at most: listen() must stay cheap.
constexpr int kSweepLimit = 4096;
constexpr mode_t kSubtreeMode = 0711;  // others may look up a name, not list or add
constexpr const char* kKind = "listeners";

void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}

constexpr const char* kClcPrefix = "tcp-";
constexpr const char* kOptionPrefix = "tcpopt-";

std::string entry_name(uint16_t port, uint64_t inode, bool option_armed) {
  return (option_armed ? kOptionPrefix : kClcPrefix) + std::to_string(port) + "-" +
         std::to_string(inode);
}

// Opens `path` without following a symlink or blocking on a FIFO; -1 unless it is a
// regular file.
int open_regular(const std::string& path, int flags, mode_t mode) {
  int fd = sys::move_fd_high(
      ::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, mode));
  if (fd < 0) return -1;
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    sys::close(fd);
    errno = EINVAL;
    return -1;
  }
  return fd;
}

// Opens (creating) `path` and takes LOCK_SH on the file the path names. Returns the fd,
// or -1 with *error set.
int lock_shared(const std::string& path, std::string* error) {
  for (int attempt = 0; attempt < kPublishAttempts; ++attempt) {
    int fd = open_regular(path, O_CREAT | O_RDWR, 0600);
    if (fd < 0) {
      if (errno == EINTR) continue;
      set_error(error, "cannot open " + path + ": " + runtime_dir::errno_text(errno));
      return -1;
    }
    if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
      if (runtime_dir::fd_is_at_path(fd, path)) return fd;
      // A sweep removed it as stale between our open and our lock: start over.
      sys::close(fd);
      continue;
    }
    const int err = errno;
    sys::close(fd);
    if (err == EWOULDBLOCK) {
      timespec pause{0, kBusyWaitNs};
      ::nanosleep(&pause, nullptr);
    } else if (err != EINTR) {
      set_error(error, "cannot lock " + path + ": " + runtime_dir::errno_text(err));
      return -1;
    }
  }
  set_error(error, "cannot lock " + path + ": held exclusively by another process");
  return -1;
}

// Removes the entries of our subtree that no process holds any more (their publishers were
// killed): they are never trusted (no listening socket has their inode until the inode
// numbers wrap), but they would pile up.
void sweep(const std::string& subtree, const std::string& keep) {
  DIR* d = ::opendir(subtree.c_str());
  if (d == nullptr) return;
  int seen = 0;
  while (const dirent* e = ::readdir(d)) {
    if (++seen > kSweepLimit) break;
    if (std::strncmp(e->d_name, kClcPrefix, std::strlen(kClcPrefix)) != 0 &&
        std::strncmp(e->d_name, kOptionPrefix, std::strlen(kOptionPrefix)) != 0) {
      continue;
    }
    const std::string path = subtree + "/" + e->d_name;
    if (path == keep) continue;
    const int fd = open_regular(path, O_RDONLY, 0);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && runtime_dir::fd_is_at_path(fd, path)) {
      ::unlink(path.c_str());
    }
    sys::close(fd);
  }
  ::closedir(d);
}

// The trust rule of registry.h for one subtree.
bool vouched_by(const std::string& runtime_dir, uid_t uid, const std::string& name) {
  const std::string subtree = runtime_dir::subtree_path(runtime_dir, kKind, uid);
  struct stat st;
  return ::lstat((subtree + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         st.st_uid == uid && st.st_nlink == 1 && runtime_dir::trusted_subtree(subtree, uid);
}

}  // namespace

std::string listener_path(const std::string& runtime_dir, uid_t uid, uint16_t port, uint64_t inode,
                          bool option_armed) {
  return runtime_dir::subtree_path(runtime_dir, kKind, uid) + "/" +
         entry_name(port, inode, option_armed);
}

std::optional<ListenerRegistration> ListenerRegistration::publish(const std::string& runtime_dir,
                                                                  int listen_fd, std::string* error,
                                                                  bool option_armed) {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  struct stat st;
  if (::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&local), &len) != 0 ||
      ::fstat(listen_fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    set_error(error, "not a socket: " + runtime_dir::errno_text(errno));
    return std::nullopt;
  }
  uint16_t port_be = 0;
  if (local.ss_family == AF_INET) {
    port_be = reinterpret_cast<const sockaddr_in&>(local).sin_port;
  } else if (local.ss_family == AF_INET6) {
    port_be = reinterpret_cast<const sockaddr_in6&>(local).sin6_port;
  } else {
    set_error(error, "not an IPv4 or IPv6 socket");
    return std::nullopt;
  }
  const uint16_t port = ntohs(port_be);
  if (port == 0) {
    set_error(error, "cannot publish port 0");
    return std::nullopt;
  }
  // Clients trust an entry of the socket's own uid (or root's): a process that changed
  // its uid after making the socket could only publish an entry nobody trusts.
  const uid_t uid = ::geteuid();
  if (uid != 0 && st.st_uid != uid) {
    set_error(error, "the socket belongs to uid " + std::to_string(st.st_uid) +
                         ", and this process runs as uid " + std::to_string(uid));
    return std::nullopt;
  }
  std::string subtree;
  if (!runtime_dir::ensure(runtime_dir, error) ||
      !runtime_dir::user_subtree(runtime_dir, kKind, kSubtreeMode, &subtree, error)) {
    return std::nullopt;
  }
  std::string path = subtree + "/" + entry_name(port, st.st_ino, option_armed);
  sweep(subtree, path);
  int fd = lock_shared(path, error);
  if (fd < 0) return std::nullopt;
  return ListenerRegistration(fd, std::move(path), port, st.st_ino);
}

ListenerRegistration::ListenerRegistration(int fd, std::string path, uint16_t port, uint64_t inode)
    : fd_(fd), owner_(::getpid()), port_(port), inode_(inode), path_(std::move(path)) {}

ListenerRegistration::ListenerRegistration(ListenerRegistration&& other) noexcept
    : fd_(other.fd_),
      owner_(other.owner_),
      port_(other.port_),
      inode_(other.inode_),
      path_(std::move(other.path_)) {
  other.fd_ = -1;
}

ListenerRegistration& ListenerRegistration::operator=(ListenerRegistration&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    owner_ = other.owner_;
    port_ = other.port_;
    inode_ = other.inode_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

ListenerRegistration::~ListenerRegistration() {
  release();
}

void ListenerRegistration::release() {
  if (fd_ < 0) return;
  // An inherited fd shares the publisher's lock: converting it would take the lock away
  // from the parent, and removing the file would unpublish the parent's listener.
  if (owner_ == ::getpid()) {
    // Converting our LOCK_SH to LOCK_EX succeeds only if no other process holds the file.
    // (On failure Linux has already dropped our shared lock; we are closing anyway.)
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0 && runtime_dir::fd_is_at_path(fd_, path_)) {
      ::unlink(path_.c_str());
    }
  }
  sys::close(fd_);
  fd_ = -1;
}

bool ListenerRegistration::renew_after_fork(std::string* error) {
  if (fd_ < 0) {
    set_error(error, "registration was moved from or dropped");
    return false;
  }
  if (owner_ == ::getpid()) return true;
  int fd = lock_shared(path_, error);
  // Closing the inherited fd leaves the parent's lock alone: the parent still has its own
  // descriptor for the same open file description.
  sys::close(fd_);
  fd_ = fd;
  owner_ = ::getpid();
  return fd >= 0;
}

bool ListenerRegistration::renew_in_parent_after_fork(std::string* error) {
  if (fd_ < 0 || owner_ != ::getpid()) return true;
  const int fd = lock_shared(path_, error);
  if (fd < 0) return false;
  // The child keeps the old open file description, and its lock, through its own fd.
  sys::close(fd_);
  fd_ = fd;
  return true;
}

Entry published_entry(const std::string& runtime_dir, uint16_t port, uint64_t inode,
                      uid_t socket_uid) {
  if (port == 0) return Entry::kNone;
  for (const bool option_armed : {false, true}) {
    const std::string name = entry_name(port, inode, option_armed);
    if (vouched_by(runtime_dir, socket_uid, name) ||
        (socket_uid != 0 && vouched_by(runtime_dir, 0, name))) {
      return option_armed ? Entry::kOption : Entry::kClc;
    }
  }
  return Entry::kNone;
}

bool is_published(const std::string& runtime_dir, uint16_t port, uint64_t inode, uid_t socket_uid) {
  return published_entry(runtime_dir, port, inode, socket_uid) == Entry::kClc;
}

Entry destination_entry(const std::string& runtime_dir, int fd, const sockaddr_storage& dest) {
  FoundListener found;
  if (find_listener(fd, dest, &found) != Lookup::kFound) return Entry::kNone;
  const uint16_t port =
      ntohs(dest.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in&>(dest).sin_port
                                      : reinterpret_cast<const sockaddr_in6&>(dest).sin6_port);
  return published_entry(runtime_dir, port, found.inode, found.uid);
}

bool destination_published(const std::string& runtime_dir, int fd, const sockaddr_storage& dest) {
  return destination_entry(runtime_dir, fd, dest) == Entry::kClc;
}

}  // namespace smcpre::registry
