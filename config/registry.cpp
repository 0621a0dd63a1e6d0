// The listener registry: files locked with flock(2). Races resolved here (see registry.h):
// - A client removes a file only while holding LOCK_EX on it, so never while any listener
//   holds LOCK_SH.
// - A listener may lock a file that a client has just removed; it notices because the
//   path no longer names its inode, and starts over with a fresh file.
// - Nobody removes the path unless it still names the inode they hold locked.
#include "config/registry.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "config/config.h"
#include "config/high_fd.h"
#include "config/runtime_dir.h"
#include "config/sys.h"

namespace smcpre::registry {
namespace {

// Publishing waits out clients that briefly hold LOCK_EX while removing a stale file;
// bounded so that a broken or hostile lock holder can never hang the application's listen().
constexpr int kPublishAttempts = 64;
constexpr long kBusyWaitNs = 1000000;  // 1 ms between attempts
constexpr int kQueryAttempts = 4;

void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}

bool ensure_directories(const std::string& runtime_dir, std::string* error) {
  return runtime_dir::ensure(runtime_dir, error) &&
         runtime_dir::make_directory(runtime_dir + "/listeners", 0755, false, error);
}

// Opens (creating) `path` and takes LOCK_SH on the file the path names. Returns the fd,
// or -1 with *error set.
int lock_shared(const std::string& path, std::string* error) {
  for (int attempt = 0; attempt < kPublishAttempts; ++attempt) {
    int fd =
        sys::move_fd_high(::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (fd < 0) {
      if (errno == EINTR) continue;
      set_error(error, "cannot open " + path + ": " + runtime_dir::errno_text(errno));
      return -1;
    }
    if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
      if (runtime_dir::fd_is_at_path(fd, path)) return fd;
      // A client removed it as stale between our open and our lock: start over.
      sys::close(fd);
      continue;
    }
    const int err = errno;
    sys::close(fd);
    if (err == EWOULDBLOCK) {
      // A client holds LOCK_EX for as long as it takes to remove a stale file.
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

}  // namespace

std::string listener_path(const std::string& runtime_dir, uint16_t port) {
  return runtime_dir + "/listeners/tcp-" + std::to_string(port);
}

std::optional<ListenerRegistration> ListenerRegistration::publish(const std::string& runtime_dir,
                                                                  uint16_t port,
                                                                  std::string* error) {
  if (port == 0) {
    set_error(error, "cannot publish port 0");
    return std::nullopt;
  }
  if (!ensure_directories(runtime_dir, error)) return std::nullopt;
  std::string path = listener_path(runtime_dir, port);
  int fd = lock_shared(path, error);
  if (fd < 0) return std::nullopt;
  return ListenerRegistration(fd, std::move(path), port);
}

ListenerRegistration::ListenerRegistration(int fd, std::string path, uint16_t port)
    : fd_(fd), owner_(::getpid()), port_(port), path_(std::move(path)) {}

ListenerRegistration::ListenerRegistration(ListenerRegistration&& other) noexcept
    : fd_(other.fd_), owner_(other.owner_), port_(other.port_), path_(std::move(other.path_)) {
  other.fd_ = -1;
}

ListenerRegistration& ListenerRegistration::operator=(ListenerRegistration&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = other.fd_;
    owner_ = other.owner_;
    port_ = other.port_;
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
    // Converting our LOCK_SH to LOCK_EX succeeds only if no other listener holds the file.
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

bool is_published(const std::string& runtime_dir, uint16_t port) {
  if (port == 0) return false;
  const std::string path = listener_path(runtime_dir, port);
  for (int attempt = 0; attempt < kQueryAttempts; ++attempt) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return false;  // absent, or unreadable: no proof of an smcpre listener
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      sys::close(fd);
      if (err == EWOULDBLOCK) return true;  // a live listener holds LOCK_SH
      if (err == EINTR) continue;
      return false;
    }
    // Nobody holds it: a listener died without cleaning up. Remove it while we hold the
    // lock -- unless the path names a newer file by now, which deserves a fresh look.
    const bool stale = runtime_dir::fd_is_at_path(fd, path);
    if (stale) ::unlink(path.c_str());  // may fail in a dir we cannot write: harmless
    sys::close(fd);
    if (stale) return false;
  }
  return false;
}

}  // namespace smcpre::registry
