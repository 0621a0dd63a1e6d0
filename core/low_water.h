// Holding back bytes a TCP socket already has: SO_RCVLOWAT above them makes the kernel
// socket report "not readable" to poll, select and epoll until the rest of a CLC message
// has arrived (or the peer closes), so that neither smcpre nor the application's event
// loop spins on a partial message. Lowering it again is itself a wake-up: the kernel
// (tcp_set_rcvlowat -> tcp_data_ready) signals every waiter that finds enough bytes, an
// edge-triggered epoll registration included. So a message that never completes is
// handed to the application as data, and it hears of it.
#pragma once

#include <mutex>

namespace smcpre::core {

class ReceiveLowWater {
 public:
  ReceiveLowWater() = default;
  ~ReceiveLowWater() { release(); }
  ReceiveLowWater(const ReceiveLowWater&) = delete;
  ReceiveLowWater& operator=(const ReceiveLowWater&) = delete;

  // Raises fd's SO_RCVLOWAT to `bytes` (the value before the first hold is what release
  // restores). False if the kernel refused (nothing held then).
  bool hold(int fd, int bytes);
  // Restores the value from before the first hold, if held.
  void release();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  int saved_ = 1;
};

// A hold that another thread ends: a socket parked until something elsewhere happens
// (another connection finishing this client's first link group). It has a descriptor of
// its own for the socket, so an end that comes late never touches a reused fd number.
class SharedLowWater {
 public:
  SharedLowWater() = default;
  ~SharedLowWater();
  SharedLowWater(const SharedLowWater&) = delete;
  SharedLowWater& operator=(const SharedLowWater&) = delete;

  // Parks fd at `bytes`; if end() came first, lowers it again at once (the wake-up).
  void hold(int fd, int bytes);
  // Ends the hold, from any thread, any number of times.
  void end();

 private:
  std::mutex mutex_;
  bool ended_ = false;
  int fd_ = -1;
  ReceiveLowWater low_water_;
};

}  // namespace smcpre::core
