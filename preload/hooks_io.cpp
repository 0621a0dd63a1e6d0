// Data hooks: each call on a tracked socket asks the engine where the bytes go. kKernel
// runs the real function with the application's own arguments (exact TCP semantics);
// kSmc hands an iovec built from the call to Socket::recv/send. Untracked fds go straight
// to the real function after one relaxed load.

// The hooks define the very names glibc's headers may wrap: no _FORTIFY_SOURCE inline
// wrappers, and no _FILE_OFFSET_BITS=64 redirects (fcntl -> fcntl64, sendfile ->
// sendfile64), which would give two hooks one symbol. Both names are hooked anyway.
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <new>

#include "config/log.h"
#include "config/sys.h"
#include "core/engine.h"
#include "preload/interpose.h"

namespace smcpre::preload {
namespace {

// The most one read/write moves, like the kernel's MAX_RW_COUNT: larger requests are
// served partially, never rejected.
constexpr size_t kMaxRw = 0x7ffff000;

// Runs `kernel` for untracked fds and the kernel path, `smc(socket)` for the SMC path.
// errno: as the real call left it, or as the engine's failure set it; never engine
// noise on success.
// The kernel path's result is counted as the connection's bytes (`bytes_of` turns the
// result into bytes: recvmmsg/sendmmsg return messages). Peeked bytes are not moved.
struct ResultIsBytes {
  uint64_t operator()(ssize_t n) const { return static_cast<uint64_t>(n); }
};
template <typename Kernel, typename Smc, typename BytesOf = ResultIsBytes>
ssize_t routed(int fd, bool receive, int flags, Kernel&& kernel, Smc&& smc, BytesOf bytes_of = {}) {
  std::shared_ptr<Tracked> t = tracked_socket(fd);
  if (t == nullptr) return kernel();
  SavedErrno saved;
  const core::Path path =
      receive ? route_recv(*t->socket, fd, flags) : route_send(*t->socket, fd, flags);
  settle_epoll_registrations(*t, fd);
  if (path == core::Path::kKernel) {
    saved.restore();
    const ssize_t n = kernel();
    if (n > 0 && !(receive && (flags & MSG_PEEK))) {
      const int saved_errno = errno;
      t->socket->count_kernel_bytes(receive, bytes_of(n));
      errno = saved_errno;
    }
    return n;
  }
  const ssize_t n = smc(*t->socket);
  if (n >= 0) saved.restore();
  return n;
}

// Checks an application's iovec array for the SMC path the way the kernel would:
// count within IOV_MAX (else `too_many`: EINVAL for readv/writev, EMSGSIZE for
// msghdr), total length representable in ssize_t.
bool check_iov(const iovec* iov, size_t count, int too_many) {
  if (count > IOV_MAX) {
    errno = too_many;
    return false;
  }
  if (count > 0 && iov == nullptr) {
    errno = EFAULT;
    return false;
  }
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    if (iov[i].iov_len > static_cast<size_t>(SSIZE_MAX) - total) {
      errno = EINVAL;
      return false;
    }
    total += iov[i].iov_len;
  }
  return true;
}

iovec single(const void* buf, size_t len) {
  return iovec{const_cast<void*>(buf), std::min(len, kMaxRw)};
}

// sendfile() onto an SMC socket: the kernel cannot splice into SMC, so the bytes are
// read into a bounded buffer and sent. Semantics kept: with `offset`, in_fd's file
// position is untouched and *offset advances by what was sent; without, the position
// advances by what was sent (bytes read but not sent are sought back). A partial
// transfer returns its count; an error before any byte returns -1.
template <typename Off>
ssize_t sendfile_smc(core::Socket& socket, int in_fd, Off* offset, size_t count) {
  constexpr size_t kChunk = 64 * 1024;
  count = std::min(count, kMaxRw);
  if (count == 0) return 0;
  Off position = 0;
  if (offset != nullptr) {
    position = *offset;
    if (position < 0) {
      errno = EINVAL;
      return -1;
    }
  }
  std::unique_ptr<char[]> buf(new (std::nothrow) char[std::min(count, kChunk)]);
  if (buf == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  // Bytes read from a pipe or socket cannot be put back: once taken, they must be sent,
  // even across EINTR or an SO_SNDTIMEO expiry, or they would be lost.
  const bool can_seek_back = offset != nullptr || ::lseek64(in_fd, 0, SEEK_CUR) >= 0;
  size_t done = 0;
  int error = 0;
  while (done < count) {
    const size_t want = std::min(kChunk, count - done);
    const ssize_t got = offset != nullptr ? ::syscall(SYS_pread64, in_fd, buf.get(), want,
                                                      static_cast<off64_t>(position + done))
                                          : read_impl(in_fd, buf.get(), want);
    if (got < 0) {
      error = errno;
      break;
    }
    if (got == 0) break;  // end of file
    size_t sent = 0;
    while (sent < static_cast<size_t>(got)) {
      iovec iov = single(buf.get() + sent, static_cast<size_t>(got) - sent);
      const ssize_t n = smc_send(socket, &iov, 1, 0);
      if (n < 0) {
        if (!can_seek_back && (errno == EINTR || errno == EAGAIN)) {
          sched_yield();
          continue;
        }
        error = errno;
        break;
      }
      sent += static_cast<size_t>(n);
    }
    done += sent;
    if (sent < static_cast<size_t>(got)) {
      const off64_t unsent = static_cast<off64_t>(static_cast<size_t>(got) - sent);
      if (offset == nullptr && ::lseek64(in_fd, -unsent, SEEK_CUR) < 0) {
        log_safely([&] {
          SMC_LOG_WARN("preload: sendfile: {} bytes read from fd {} could not be sent nor put back",
                       unsent, in_fd);
        });
      }
      break;
    }
    if (static_cast<size_t>(got) < want) break;  // drained for now, as the kernel stops too
  }
  if (done == 0 && error != 0) {
    errno = error;
    return -1;
  }
  if (offset != nullptr) *offset = position + static_cast<Off>(done);
  return static_cast<ssize_t>(done);
}

template <typename Off, typename Real>
ssize_t sendfile_common(Real real_fn, int out_fd, int in_fd, Off* offset, size_t count) {
  if (real_fn == nullptr) return enosys<ssize_t>();
  if (!fds().any()) return real_fn(out_fd, in_fd, offset, count);
  std::shared_ptr<Tracked> t = tracked_socket(out_fd);
  if (t == nullptr) return real_fn(out_fd, in_fd, offset, count);
  SavedErrno saved;
  if (route_send(*t->socket, out_fd, 0) == core::Path::kKernel) {
    saved.restore();
    const ssize_t n = real_fn(out_fd, in_fd, offset, count);
    if (n > 0) t->socket->count_kernel_bytes(false, static_cast<uint64_t>(n));
    return n;
  }
  const ssize_t n = sendfile_smc(*t->socket, in_fd, offset, count);
  if (n >= 0) saved.restore();
  return n;
}

// splice() from an SMC socket into a pipe: the kernel cannot splice SMC data, so the bytes
// are peeked, written into the pipe (never more than it has room for, so the write does
// not block), and only what the pipe took is consumed: nothing is lost or duplicated.
ssize_t splice_from_smc(core::Socket& socket, int pipe_fd, size_t len, unsigned flags) {
  constexpr size_t kChunk = 64 * 1024;
  const int used_now = [&] {
    int used = 0;
    return ::syscall(SYS_ioctl, pipe_fd, FIONREAD, &used) == 0 ? used : -1;
  }();
  const int capacity = sys::fcntl(pipe_fd, F_GETPIPE_SZ);
  if (used_now < 0 || capacity < 0) {
    errno = EINVAL;  // not a pipe: splice needs one end to be a pipe
    return -1;
  }
  size_t room = static_cast<size_t>(std::max(capacity - used_now, 0));
  if (room == 0) {
    if (flags & SPLICE_F_NONBLOCK) {
      errno = EAGAIN;
      return -1;
    }
    pollfd p{pipe_fd, POLLOUT, 0};
    while (sys::poll(&p, 1, -1) < 0) {
      if (errno != EINTR) return -1;
    }
    room = PIPE_BUF;  // POLLOUT: at least one page is free
  }
  const size_t want = std::min({len, room, kChunk});
  std::unique_ptr<char[]> buf(new (std::nothrow) char[want]);
  if (buf == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  iovec iov = single(buf.get(), want);
  const ssize_t got =
      smc_recv(socket, &iov, 1, MSG_PEEK | ((flags & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT : 0));
  if (got <= 0) return got;
  const ssize_t put = sys::write(pipe_fd, buf.get(), static_cast<size_t>(got));
  if (put <= 0) return put;
  iov = single(buf.get(), static_cast<size_t>(put));
  return smc_recv(socket, &iov, 1, MSG_DONTWAIT);  // exactly what was peeked and put
}

}  // namespace

// splice() with an SMC socket at either end (the other must be a pipe, as for TCP): the
// socket side goes through the engine; everything else is the kernel's.
SMCPRE_HOOK ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                           unsigned int flags) {
  const auto& r = real();
  if (r.splice == nullptr) return enosys<ssize_t>();
  auto unchanged = [&] { return r.splice(fd_in, off_in, fd_out, off_out, len, flags); };
  if (!fds().any()) [[likely]] {
    return unchanged();
  }
  SavedErrno saved;
  if (std::shared_ptr<Tracked> t = tracked_socket(fd_in); t != nullptr) {
    if (route_recv(*t->socket, fd_in, (flags & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT : 0) ==
        core::Path::kSmc) {
      if (off_in != nullptr || off_out != nullptr) {
        errno = ESPIPE;
        return -1;
      }
      const ssize_t n = splice_from_smc(*t->socket, fd_out, std::min(len, kMaxRw), flags);
      if (n >= 0) saved.restore();
      return n;
    }
  }
  if (std::shared_ptr<Tracked> t = tracked_socket(fd_out); t != nullptr) {
    if (route_send(*t->socket, fd_out, 0) == core::Path::kSmc) {
      if (off_in != nullptr || off_out != nullptr) {
        errno = ESPIPE;
        return -1;
      }
      // From a pipe: what is taken from it is always sent (sendfile's pipe rule).
      const ssize_t n = sendfile_smc(*t->socket, fd_in, static_cast<off64_t*>(nullptr), len);
      if (n >= 0) saved.restore();
      return n;
    }
  }
  saved.restore();
  const ssize_t n = unchanged();
  if (n > 0) {
    // A tracked socket on the kernel path at either end moved these bytes.
    if (std::shared_ptr<Tracked> t = tracked_socket(fd_in); t != nullptr) {
      t->socket->count_kernel_bytes(true, static_cast<uint64_t>(n));
    }
    if (std::shared_ptr<Tracked> t = tracked_socket(fd_out); t != nullptr) {
      t->socket->count_kernel_bytes(false, static_cast<uint64_t>(n));
    }
  }
  return n;
}

ssize_t read_impl(int fd, void* buf, size_t count) {
  const auto& r = real();
  if (r.read == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.read(fd, buf, count);
  }
  return routed(
      fd, true, 0, [&] { return r.read(fd, buf, count); },
      [&](core::Socket& s) {
        iovec iov = single(buf, count);
        return smc_recv(s, &iov, 1, 0);
      });
}

ssize_t recv_impl(int fd, void* buf, size_t len, int flags) {
  const auto& r = real();
  if (r.recv == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.recv(fd, buf, len, flags);
  }
  return routed(
      fd, true, flags, [&] { return r.recv(fd, buf, len, flags); },
      [&](core::Socket& s) {
        iovec iov = single(buf, len);
        return smc_recv(s, &iov, 1, flags);
      });
}

ssize_t recvfrom_impl(int fd, void* buf, size_t len, int flags, sockaddr* src_addr,
                      socklen_t* addrlen) {
  const auto& r = real();
  if (r.recvfrom == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.recvfrom(fd, buf, len, flags, src_addr, addrlen);
  }
  return routed(
      fd, true, flags, [&] { return r.recvfrom(fd, buf, len, flags, src_addr, addrlen); },
      [&](core::Socket& s) {
        iovec iov = single(buf, len);
        const ssize_t n = smc_recv(s, &iov, 1, flags);
        // A connected TCP socket reports no source address.
        if (n >= 0 && src_addr != nullptr && addrlen != nullptr) *addrlen = 0;
        return n;
      });
}

}  // namespace smcpre::preload

using namespace smcpre::preload;  // NOLINT: the hooks below are C symbols
using smcpre::core::Socket;

SMCPRE_HOOK ssize_t read(int fd, void* buf, size_t count) {
  return read_impl(fd, buf, count);
}

SMCPRE_HOOK ssize_t recv(int fd, void* buf, size_t len, int flags) {
  return recv_impl(fd, buf, len, flags);
}

SMCPRE_HOOK ssize_t recvfrom(int fd, void* buf, size_t len, int flags, sockaddr* src_addr,
                             socklen_t* addrlen) {
  return recvfrom_impl(fd, buf, len, flags, src_addr, addrlen);
}

SMCPRE_HOOK ssize_t write(int fd, const void* buf, size_t count) {
  const auto& r = real();
  if (r.write == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.write(fd, buf, count);
  }
  return routed(
      fd, false, 0, [&] { return r.write(fd, buf, count); },
      [&](Socket& s) {
        iovec iov = single(buf, count);
        return smc_send(s, &iov, 1, 0);
      });
}

SMCPRE_HOOK ssize_t send(int fd, const void* buf, size_t len, int flags) {
  const auto& r = real();
  if (r.send == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.send(fd, buf, len, flags);
  }
  return routed(
      fd, false, flags, [&] { return r.send(fd, buf, len, flags); },
      [&](Socket& s) {
        iovec iov = single(buf, len);
        return smc_send(s, &iov, 1, flags);
      });
}

// On a connected stream socket the destination is ignored, as TCP does.
SMCPRE_HOOK ssize_t sendto(int fd, const void* buf, size_t len, int flags,
                           const sockaddr* dest_addr, socklen_t addrlen) {
  const auto& r = real();
  if (r.sendto == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.sendto(fd, buf, len, flags, dest_addr, addrlen);
  }
  return routed(
      fd, false, flags, [&] { return r.sendto(fd, buf, len, flags, dest_addr, addrlen); },
      [&](Socket& s) {
        iovec iov = single(buf, len);
        return smc_send(s, &iov, 1, flags);
      });
}

SMCPRE_HOOK ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  const auto& r = real();
  if (r.readv == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.readv(fd, iov, iovcnt);
  }
  return routed(
      fd, true, 0, [&] { return r.readv(fd, iov, iovcnt); },
      [&](Socket& s) -> ssize_t {
        if (iovcnt < 0 || !check_iov(iov, static_cast<size_t>(iovcnt), EINVAL)) {
          if (iovcnt < 0) errno = EINVAL;
          return -1;
        }
        return smc_recv(s, iov, iovcnt, 0);
      });
}

SMCPRE_HOOK ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  const auto& r = real();
  if (r.writev == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.writev(fd, iov, iovcnt);
  }
  return routed(
      fd, false, 0, [&] { return r.writev(fd, iov, iovcnt); },
      [&](Socket& s) -> ssize_t {
        if (iovcnt < 0 || !check_iov(iov, static_cast<size_t>(iovcnt), EINVAL)) {
          if (iovcnt < 0) errno = EINVAL;
          return -1;
        }
        return smc_send(s, iov, iovcnt, 0);
      });
}

// The SMC path fills msghdr like kernel TCP: no address, no control data, no flags. On
// the kernel path, descriptors received with SCM_RIGHTS may be connections for this
// process to decide (inherited.cpp).
SMCPRE_HOOK ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  const auto& r = real();
  if (r.recvmsg == nullptr) return enosys<ssize_t>();
  auto kernel = [&] {
    const ssize_t n = r.recvmsg(fd, msg, flags);
    if (n >= 0 && msg != nullptr && msg->msg_controllen != 0) adopt_received_fds(msg);
    return n;
  };
  if (!fds().any()) [[likely]] {
    return kernel();
  }
  return routed(fd, true, flags, kernel, [&](Socket& s) -> ssize_t {
    if (msg == nullptr) {
      errno = EFAULT;
      return -1;
    }
    if (!check_iov(msg->msg_iov, msg->msg_iovlen, EMSGSIZE)) return -1;
    const ssize_t n = smc_recv(s, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags);
    if (n >= 0) {
      msg->msg_namelen = 0;
      msg->msg_controllen = 0;
      msg->msg_flags = 0;
    }
    return n;
  });
}

// A destination address and control data are ignored on the SMC path, as TCP ignores
// an address on a connected socket. Tracked sockets passed with SCM_RIGHTS are shared
// from then on (inherited.cpp).
SMCPRE_HOOK ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  const auto& r = real();
  if (r.sendmsg == nullptr) return enosys<ssize_t>();
  if (!fds().any()) [[likely]] {
    return r.sendmsg(fd, msg, flags);
  }
  return routed(
      fd, false, flags,
      [&] {
        if (msg != nullptr && msg->msg_controllen != 0) note_sent_fds(msg);
        return r.sendmsg(fd, msg, flags);
      },
      [&](Socket& s) -> ssize_t {
        if (msg == nullptr) {
          errno = EFAULT;
          return -1;
        }
        if (!check_iov(msg->msg_iov, msg->msg_iovlen, EMSGSIZE)) return -1;
        return smc_send(s, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags);
      });
}

// recvmmsg/sendmmsg on the SMC path, as the kernel runs them on a stream socket: one
// recvmsg/sendmsg per entry, vlen capped at UIO_MAXIOV; after the first entry
// MSG_WAITFORONE makes the rest non-blocking, and the timeout (recvmmsg) is looked at
// after each entry. An error ends the batch: reported if nothing was done yet, else the
// count so far is returned (and a persistent error shows again on the next call).
constexpr unsigned kMaxMmsg = 1024;  // UIO_MAXIOV

// The bytes of the first n entries the kernel's recvmmsg/sendmmsg filled in.
struct MessageBytes {
  const mmsghdr* vec;
  uint64_t operator()(ssize_t n) const {
    uint64_t bytes = 0;
    for (ssize_t i = 0; i < n; ++i) bytes += vec[i].msg_len;
    return bytes;
  }
};

SMCPRE_HOOK int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout) {
  const auto& r = real();
  if (r.recvmmsg == nullptr) return enosys<int>();
  if (!fds().any()) [[likely]] {
    return r.recvmmsg(fd, vec, vlen, flags, timeout);
  }
  return static_cast<int>(routed(
      fd, true, flags, [&] { return r.recvmmsg(fd, vec, vlen, flags, timeout); },
      [&](Socket& s) -> ssize_t {
        if (vec == nullptr && vlen > 0) {
          errno = EFAULT;
          return -1;
        }
        int64_t deadline = -1;
        if (timeout != nullptr) {
          if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000) {
            errno = EINVAL;
            return -1;
          }
          deadline = smcpre::core::now_ns() + timeout->tv_sec * 1'000'000'000 + timeout->tv_nsec;
        }
        vlen = std::min(vlen, kMaxMmsg);
        int entry_flags = flags & ~MSG_WAITFORONE;
        unsigned done = 0;
        while (done < vlen) {
          msghdr& msg = vec[done].msg_hdr;
          if (!check_iov(msg.msg_iov, msg.msg_iovlen, EMSGSIZE)) break;
          const ssize_t n = smc_recv(s, msg.msg_iov, static_cast<int>(msg.msg_iovlen), entry_flags);
          if (n < 0) break;
          msg.msg_namelen = 0;
          msg.msg_controllen = 0;
          msg.msg_flags = 0;
          vec[done].msg_len = static_cast<unsigned>(n);
          ++done;
          if (flags & MSG_WAITFORONE) entry_flags |= MSG_DONTWAIT;
          if (deadline >= 0) {
            const int64_t left = std::max<int64_t>(deadline - smcpre::core::now_ns(), 0);
            timeout->tv_sec = left / 1'000'000'000;
            timeout->tv_nsec = left % 1'000'000'000;
            if (left == 0) break;
          }
        }
        if (done == 0 && vlen > 0) return -1;  // errno from the failed entry
        return done;
      },
      MessageBytes{vec}));
}

SMCPRE_HOOK int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags) {
  const auto& r = real();
  if (r.sendmmsg == nullptr) return enosys<int>();
  if (!fds().any()) [[likely]] {
    return r.sendmmsg(fd, vec, vlen, flags);
  }
  return static_cast<int>(routed(
      fd, false, flags, [&] { return r.sendmmsg(fd, vec, vlen, flags); },
      [&](Socket& s) -> ssize_t {
        if (vec == nullptr && vlen > 0) {
          errno = EFAULT;
          return -1;
        }
        vlen = std::min(vlen, kMaxMmsg);
        unsigned done = 0;
        while (done < vlen) {
          const msghdr& msg = vec[done].msg_hdr;
          if (!check_iov(msg.msg_iov, msg.msg_iovlen, EMSGSIZE)) break;
          const ssize_t n = smc_send(s, msg.msg_iov, static_cast<int>(msg.msg_iovlen), flags);
          if (n < 0) break;
          vec[done].msg_len = static_cast<unsigned>(n);
          ++done;
        }
        if (done == 0 && vlen > 0) return -1;
        return done;
      },
      MessageBytes{vec}));
}

SMCPRE_HOOK ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) noexcept {
  return sendfile_common(real().sendfile, out_fd, in_fd, offset, count);
}

SMCPRE_HOOK ssize_t sendfile64(int out_fd, int in_fd, off64_t* offset, size_t count) noexcept {
  return sendfile_common(real().sendfile64, out_fd, in_fd, offset, count);
}
