// The two-process harness of the device tests (shm and verbs): a forked child with a
// control channel over a socketpair to exchange endpoints and regions, checks that end
// the child with a message, and bounded waits.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rdma/device.h"
#include "tests/unit/child_check.h"

namespace {

using namespace smcpre::rdma;

// Generous: the machine may be loaded, and a healthy run never waits this long.
constexpr int kTimeoutMs = 10000;
constexpr uint32_t kSlot = 64;  // receive buffer size

inline int64_t now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

inline void sleep_ms(int ms) {
  const timespec t{ms / 1000, (ms % 1000) * 1'000'000L};
  ::nanosleep(&t, nullptr);
}

// The control channel between the two processes.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}
  Channel(const Channel&) = delete;
  ~Channel() { ::close(fd_); }

  template <typename T>
  bool put(const T& value) {
    const auto* p = reinterpret_cast<const char*>(&value);
    size_t left = sizeof value;
    while (left > 0) {
      const ssize_t n = ::send(fd_, p, left, MSG_NOSIGNAL);
      if (n <= 0) return false;
      p += n;
      left -= static_cast<size_t>(n);
    }
    return true;
  }
  template <typename T>
  bool get(T* value, int timeout_ms = kTimeoutMs) {
    auto* p = reinterpret_cast<char*>(value);
    size_t left = sizeof *value;
    const int64_t deadline = now_ms() + timeout_ms;
    while (left > 0) {
      pollfd pfd{fd_, POLLIN, 0};
      const int wait = static_cast<int>(std::max<int64_t>(deadline - now_ms(), 0));
      if (::poll(&pfd, 1, wait) <= 0) return false;
      const ssize_t n = ::recv(fd_, p, left, 0);
      if (n <= 0) return false;
      p += n;
      left -= static_cast<size_t>(n);
    }
    return true;
  }
  bool signal(char c) { return put(c); }
  bool expect(char c, int timeout_ms = kTimeoutMs) {
    char got = 0;
    return get(&got, timeout_ms) && got == c;
  }

 private:
  int fd_;
};

// Kills and reaps the child if the test leaves early (a failed REQUIRE).
class Child {
 public:
  template <typename Body>
  explicit Child(Body body) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(sv[0]);
      int rc;
      {
        Channel channel(sv[1]);
        rc = body(channel);
      }
      ::_exit(rc);
    }
    ::close(sv[1]);
    channel_ = std::make_unique<Channel>(sv[0]);
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Channel& channel() { return *channel_; }
  pid_t pid() const { return pid_; }

  // The child's exit code, or -1 if it had to be killed after timeout_ms.
  int wait(int timeout_ms = 2 * kTimeoutMs) {
    const int64_t deadline = now_ms() + timeout_ms;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (now_ms() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return -1;
      }
      sleep_ms(1);
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // For a child that was killed on purpose.
  void reap() {
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  std::unique_ptr<Channel> channel_;
};

// One process's side of a device test: device, PD, a WRITE target region, receive
// buffers (kSlot bytes each) and a QP. Each test opens its own device and calls
// open_on().
struct DeviceSide {
  std::unique_ptr<Device> device;
  std::unique_ptr<ProtectionDomain> pd;
  std::unique_ptr<MemoryRegion> region;
  std::unique_ptr<MemoryRegion> recv_buffers;
  std::unique_ptr<QueuePair> qp;
  QpConfig config;
  std::string error;

  bool open_on(std::unique_ptr<Device> opened, const QpConfig& qp_config,
               size_t region_bytes = 64 * 1024) {
    config = qp_config;
    device = std::move(opened);
    if (!device) return false;
    pd = device->alloc_pd(&error);
    if (!pd) return false;
    region = pd->register_memory(region_bytes, &error);
    recv_buffers = pd->register_memory(size_t{config.recv_depth} * kSlot, &error);
    if (!region || !recv_buffers) return false;
    return new_qp();
  }
  bool new_qp() {
    qp = pd->create_qp(config, &error);
    if (!qp) std::fprintf(stderr, "create_qp: %s\n", error.c_str());
    return qp != nullptr;
  }
  uint8_t* buffer(uint64_t index) const {
    return static_cast<uint8_t*>(recv_buffers->addr()) + index * kSlot;
  }
  int post_recv(uint64_t index) {
    return qp->post_recv(buffer(index), kSlot, recv_buffers->lkey(), index);
  }
  bool post_all_recvs() {
    for (uint32_t i = 0; i < config.recv_depth; ++i) {
      if (post_recv(i) != 0) return false;
    }
    return true;
  }
  uint8_t* bytes() const { return static_cast<uint8_t*>(region->addr()); }
};

struct PeerInfo {
  QpEndpoint endpoint;
  RemoteRegion region;
};

inline PeerInfo info_of(const DeviceSide& side) {
  return PeerInfo{side.qp->local_endpoint(),
                  RemoteRegion{side.region->remote_addr(), side.region->rkey(),
                               static_cast<uint32_t>(side.region->length())}};
}

// Polls until `count` completions arrived (or the deadline).
inline std::vector<WorkCompletion> reap(QueuePair& qp, bool send, size_t count,
                                        int timeout_ms = kTimeoutMs) {
  std::vector<WorkCompletion> got;
  const int64_t deadline = now_ms() + timeout_ms;
  WorkCompletion wc[16];
  while (got.size() < count && now_ms() < deadline) {
    const int n = send ? qp.poll_send(wc) : qp.poll_recv(wc);
    got.insert(got.end(), wc, wc + n);
  }
  return got;
}

// Receives `count` messages, reposting each buffer; returns their bytes in order.
inline std::vector<std::vector<uint8_t>> receive(DeviceSide& side, size_t count,
                                                 int timeout_ms = kTimeoutMs) {
  std::vector<std::vector<uint8_t>> messages;
  const int64_t deadline = now_ms() + timeout_ms;
  WorkCompletion wc[16];
  while (messages.size() < count && now_ms() < deadline) {
    const int n = side.qp->poll_recv(wc);
    for (int i = 0; i < n; ++i) {
      if (wc[i].status != WcStatus::kSuccess || wc[i].opcode != WcOpcode::kRecv) return messages;
      const uint8_t* data = side.buffer(wc[i].wr_id);
      messages.emplace_back(data, data + wc[i].byte_len);
      if (side.post_recv(wc[i].wr_id) != 0) return messages;
    }
  }
  return messages;
}

inline bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

}  // namespace
