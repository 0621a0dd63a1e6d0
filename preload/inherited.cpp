// Sockets that change hands between processes without smcpre's state going along:
//
//   exec()        the new program's fd table starts empty, but the fds stay open (inetd,
//                 `socat EXEC:...,nofork`, a fork+exec server handing a connection to
//                 the program it runs). A constructor looks at the inherited fds once.
//   SCM_RIGHTS    a worker receives an accepted connection over a unix socket (systemd
//                 Accept=, load balancers handing off connections).
//
// A TCP connection nobody has read from or written to is still undecided: the process
// that serves it decides it, as the one that accepted it would have (the peer's first
// bytes may be its Proposal). Anything else stays the kernel's. The sender's copy is
// marked shared, so that its close leaves the connection to the receiver.
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "config/sys.h"
#include "preload/interpose.h"

namespace smcpre::preload {
namespace {

// A socket's identity: the same kernel socket under several fds (dup'd before exec)
// must share one entry, as dup'd fds do.
struct SocketFile {
  dev_t dev;
  ino_t ino;
  std::shared_ptr<Tracked> entry;
};

bool socket_file(int fd, struct stat* st) {
  return ::syscall(SYS_fstat, fd, st) == 0 && S_ISSOCK(st->st_mode);
}

// Tracks `fd` if it is an undecided TCP connection, sharing the entry of an fd already
// seen for the same socket. Returns whether fd is tracked now.
bool adopt(int fd, std::vector<SocketFile>& seen) {
  struct stat st {};
  if (!socket_file(fd, &st)) return false;
  for (SocketFile& s : seen) {
    if (s.dev == st.st_dev && s.ino == st.st_ino) {
      if (!fds().reserve(fd)) return false;
      track(fd, s.entry);
      return true;
    }
  }
  std::shared_ptr<Tracked> entry = prepare_entry(fd);
  if (entry == nullptr) return false;
  std::shared_ptr<core::Socket> socket =
      engine_call("on_inherited", std::shared_ptr<core::Socket>{},
                  [&] { return core::Engine::on_inherited(fd); });
  if (socket == nullptr) return false;
  entry->socket = std::move(socket);
  track(fd, entry);
  try {
    seen.push_back({st.st_dev, st.st_ino, std::move(entry)});
  } catch (const std::bad_alloc&) {  // a later dup of it then goes untracked: its reads
  }                                  // would bypass the engine, but only on SMC
  return true;
}

// The open fds of this process, from /proc/self/fd (nothing if /proc is not mounted).
std::vector<int> open_fds() {
  std::vector<int> result;
  const int dir = static_cast<int>(
      ::syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir < 0) return result;
  alignas(8) char buf[4096];
  long n;
  while ((n = ::syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
    for (long at = 0; at < n;) {
      const auto* d = reinterpret_cast<const dirent64*>(buf + at);
      at += d->d_reclen;
      char* end = nullptr;
      const long fd = std::strtol(d->d_name, &end, 10);
      if (end == d->d_name || *end != '\0' || fd == dir || fd < 0 || fd > INT32_MAX) continue;
      try {
        result.push_back(static_cast<int>(fd));
      } catch (const std::bad_alloc&) {
        break;
      }
    }
  }
  sys::close(dir);
  return result;
}

// At load, once: an exec'd program's inherited connections. Only sockets cost more than
// an fstat; the engine (its configuration) is touched only for an untouched TCP one.
__attribute__((constructor)) void adopt_inherited_sockets() {
  SavedErrno saved;
  std::vector<SocketFile> seen;
  for (int fd : open_fds()) {
    struct stat st {};
    if (fd < 0 || fd >= TrackedTable::kMaxFds || !socket_file(fd, &st)) continue;
    adopt(fd, seen);
  }
  saved.restore();
}

template <typename Fn>
void for_each_passed_fd(const msghdr* msg, Fn&& fn) {
  if (msg == nullptr || msg->msg_control == nullptr || msg->msg_controllen < sizeof(cmsghdr)) {
    return;
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(msg), c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) {
      continue;
    }
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
      fn(fd);
    }
  }
}

}  // namespace

void adopt_received_fds(const msghdr* msg) noexcept {
  if (msg == nullptr || msg->msg_controllen < sizeof(cmsghdr)) return;
  SavedErrno saved;
  try {
    std::vector<SocketFile> seen;
    for_each_passed_fd(msg, [&](int fd) {
      forget_stale(fd);
      adopt(fd, seen);
    });
  } catch (...) {  // allocation: the fds stay the kernel's
  }
  saved.restore();
}

void note_sent_fds(const msghdr* msg) noexcept {
  if (msg == nullptr || msg->msg_controllen < sizeof(cmsghdr) || !fds().any()) return;
  for_each_passed_fd(msg, [](int fd) {
    if (std::shared_ptr<Tracked> t = tracked_socket(fd)) {
      engine_call("mark_shared", 0, [&] {
        t->socket->mark_shared();
        return 0;
      });
    }
  });
}

}  // namespace smcpre::preload
