#include "core/low_water.h"

#include <sys/socket.h>

#include "config/high_fd.h"
#include "config/sys.h"

namespace smcpre::core {

bool ReceiveLowWater::hold(int fd, int bytes) {
  if (fd_ < 0) {
    int saved = 1;
    socklen_t length = sizeof saved;
    if (sys::getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &saved, &length) != 0) return false;
    saved_ = saved;
  } else if (fd_ != fd) {
    release();
    return hold(fd, bytes);
  }
  if (sys::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) != 0) {
    if (fd_ >= 0) release();
    return false;
  }
  fd_ = fd;
  return true;
}

void ReceiveLowWater::release() {
  if (fd_ < 0) return;
  sys::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &saved_, sizeof saved_);
  fd_ = -1;
}

SharedLowWater::~SharedLowWater() {
  end();
  if (fd_ >= 0) sys::close(fd_);
}

void SharedLowWater::hold(int fd, int bytes) {
  std::lock_guard lock(mutex_);
  if (fd_ < 0) fd_ = sys::dup_high(fd);
  if (fd_ < 0) return;
  low_water_.hold(fd_, bytes);
  if (ended_) low_water_.release();
}

void SharedLowWater::end() {
  std::lock_guard lock(mutex_);
  ended_ = true;
  low_water_.release();
}

}  // namespace smcpre::core
