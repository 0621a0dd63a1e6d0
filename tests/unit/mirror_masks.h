// Reading a readiness mirror as poll and epoll see it: the bits asked for and their names,
// a descriptor's poll and level-triggered epoll masks, and mirrors made in a given state.
// Shared by test_readiness_mirror.cpp and test_readiness_mirror_epoll.cpp.
#pragma once

#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "core/datapath/readiness_mirror.h"

using smcpre::core::MirrorState;
using smcpre::core::ReadinessMirror;

// Everything TCP can report, except POLLWRBAND (see the test "WRBAND").
inline constexpr short kPollAsk =
    POLLIN | POLLPRI | POLLOUT | POLLRDHUP | POLLRDNORM | POLLRDBAND | POLLWRNORM;
inline constexpr uint32_t kEpollAsk =
    EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM;

inline constexpr unsigned kIn = POLLIN | POLLRDNORM;
inline constexpr unsigned kOut = POLLOUT | POLLWRNORM;
inline constexpr unsigned kRdhup = POLLRDHUP;
inline constexpr unsigned kHup = POLLHUP;
inline constexpr unsigned kErr = POLLERR;
// What an epoll set asking for plain EPOLLIN/EPOLLOUT reports.
inline constexpr unsigned kEIn = EPOLLIN;
inline constexpr unsigned kEOut = EPOLLOUT;
inline constexpr unsigned kERdhup = EPOLLRDHUP;
inline constexpr unsigned kEHup = EPOLLHUP;
inline constexpr unsigned kEErr = EPOLLERR;

inline std::string names(unsigned m) {
  static const std::pair<unsigned, const char*> bits[] = {
      {POLLIN, "IN"},         {POLLPRI, "PRI"},       {POLLOUT, "OUT"},      {POLLRDHUP, "RDHUP"},
      {POLLHUP, "HUP"},       {POLLERR, "ERR"},       {POLLNVAL, "NVAL"},    {POLLRDNORM, "RDNORM"},
      {POLLRDBAND, "RDBAND"}, {POLLWRNORM, "WRNORM"}, {POLLWRBAND, "WRBAND"}};
  std::string s;
  for (auto [bit, name] : bits) {
    if (m & bit) s += std::string(s.empty() ? "" : " ") + name;
    m &= ~bit;
  }
  if (m != 0) s += " +" + std::to_string(m);
  return s.empty() ? "-" : s;
}

inline unsigned poll_mask(int fd, short ask = kPollAsk) {
  pollfd p{fd, ask, 0};
  REQUIRE(poll(&p, 1, 0) >= 0);
  return static_cast<unsigned short>(p.revents);
}

// A fresh level-triggered epoll set's view of `fd`. (epoll's bits equal poll's.)
inline unsigned epoll_mask(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(ep >= 0);
  epoll_event ev{};
  ev.events = kEpollAsk;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
  epoll_event out{};
  int n = epoll_wait(ep, &out, 1, 0);
  close(ep);
  REQUIRE(n >= 0);
  return n == 0 ? 0 : out.events;
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& other) noexcept : fd(other.fd) { other.fd = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  operator int() const { return fd; }
};

inline std::unique_ptr<ReadinessMirror> make_mirror(const MirrorState& initial = {
                                                        .writable = true}) {
  std::string error;
  auto m = ReadinessMirror::create(&error);
  INFO(error);
  REQUIRE(m);
  m->apply(initial, false);
  return m;
}

inline MirrorState st(bool readable, bool writable, bool peer_done = false, bool closed = false) {
  return MirrorState{
      .readable = readable, .writable = writable, .peer_done = peer_done, .closed = closed};
}

inline MirrorState reset_state(bool error_reported) {
  return MirrorState{.reset = true, .error_reported = error_reported};
}

inline int queued_to_app(const ReadinessMirror& m) {
  int n = -1;
  REQUIRE(ioctl(m.app_fd(), FIONREAD, &n) == 0);
  return n;
}
