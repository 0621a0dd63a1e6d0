// Exception-proof calls into the engine and the interposer's log lines.
#include "preload/interpose.h"

#include "config/log.h"

namespace smcpre::preload {

void log_engine_exception(const char* call, const char* what) {
  log_safely([&] { SMC_LOG_ERROR("preload: engine threw from {}: {}", call, what); });
}

void log_stale_fd(int fd) {
  log_safely([&] {
    SMC_LOG_DEBUG("preload: fd {} was closed without passing through smcpre; forgetting it", fd);
  });
}

// An exception on the data path cannot fall back to the kernel (bytes may already have
// moved over SMC), so the call fails with EIO.
ssize_t smc_recv(core::Socket& s, const iovec* iov, int iovcnt, int flags) {
  bool returned = false;
  ssize_t n = engine_call("recv", ssize_t{-1}, [&] {
    ssize_t r = s.recv(iov, iovcnt, flags);
    returned = true;
    return r;
  });
  if (!returned) errno = EIO;
  return n;
}

ssize_t smc_send(core::Socket& s, const iovec* iov, int iovcnt, int flags) {
  bool returned = false;
  ssize_t n = engine_call("send", ssize_t{-1}, [&] {
    ssize_t r = s.send(iov, iovcnt, flags);
    returned = true;
    return r;
  });
  if (!returned) errno = EIO;
  return n;
}

bool polled_is_smc(core::Socket& s, int fd) {
  return engine_call("on_polled", false, [&] {
    s.on_polled(fd);
    return s.is_smc();
  });
}

}  // namespace smcpre::preload
