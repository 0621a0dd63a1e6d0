#include "core/clc_stream.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "config/log.h"
#include "config/sys.h"
#include "core/datapath/wait.h"
#include "core/low_water.h"

namespace smcpre::core {
ClcRead read_clc(int fd, int64_t deadline_ns, bool wait, std::vector<uint8_t>* message,
                 clc::Header* header, int64_t partial_ns, size_t* needed, bool consume) {
  uint8_t buf[clc::kMaxMessageSize];
  int64_t partial_deadline = -1;  // set when the first part of a message is seen
  // While waiting for the rest of a message, the socket is not readable until it is all
  // there (or the peer closes): one poll, no sleep loop.
  ReceiveLowWater low_water;
  while (true) {
    ssize_t n = sys::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return ClcRead::kEof;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return ClcRead::kError;
      n = 0;
    }
    const auto result =
        clc::parse_header(std::span<const uint8_t>(buf, static_cast<size_t>(n)), header);
    if (result == clc::HeaderResult::kNotClc) return ClcRead::kNotClc;
    if (result == clc::HeaderResult::kOk && static_cast<size_t>(n) >= header->length) {
      // A header whose length does not end on a trailer eyecatcher frames no message:
      // a truncated one followed by other bytes, say. Those are the application's.
      if (!std::equal(clc::kEyecatcher.begin(), clc::kEyecatcher.end(),
                      buf + header->length - clc::kTrailerSize)) {
        return ClcRead::kNotClc;
      }
      message->assign(buf, buf + header->length);
      if (!consume) return ClcRead::kMessage;
      // Consume exactly the message; it is all there already.
      ssize_t got = sys::recv(fd, buf, header->length, MSG_DONTWAIT);
      if (got != header->length) return ClcRead::kError;
      return ClcRead::kMessage;
    }
    const size_t need = result == clc::HeaderResult::kOk ? header->length : clc::kHeaderSize;
    if (needed != nullptr) *needed = n > 0 ? need : 0;
    if (n > 0) {
      // Part of a message: if the peer has shut down (or the socket failed), the rest
      // never comes, and what is there is application data, to be delivered at once.
      pollfd p{fd, POLLRDHUP, 0};
      if (sys::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        return ClcRead::kNotClc;
      }
      if (partial_deadline < 0) partial_deadline = now_ns() + partial_ns;
    }
    if (!wait) return ClcRead::kNeedMore;
    const int64_t deadline = n > 0 && (deadline_ns < 0 || partial_deadline < deadline_ns)
                                 ? partial_deadline
                                 : deadline_ns;
    const int left = timeout_ms_until(deadline);
    if (left == 0) return ClcRead::kNeedMore;
    if (n > 0) low_water.hold(fd, static_cast<int>(need));
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    int r = sys::poll(&p, 1, left);
    if (r < 0 && errno == EINTR) return ClcRead::kInterrupted;
  }
}

bool bytes_waiting(int fd) {
  uint8_t b;
  return sys::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

namespace {

class LateClcSwallower final : public Lingerer {
 public:
  LateClcSwallower(int fd, int64_t deadline_ns) : fd_(fd), deadline_ns_(deadline_ns) {}
  ~LateClcSwallower() override { sys::close(fd_); }
  LateClcSwallower(const LateClcSwallower&) = delete;
  LateClcSwallower& operator=(const LateClcSwallower&) = delete;

  bool linger(int64_t now) override {
    std::vector<uint8_t> message;
    clc::Header header;
    ClcRead read;
    while ((read = read_clc(fd_, -1, false, &message, &header, 0)) == ClcRead::kMessage) {
      SMC_LOG_DEBUG("closed socket: swallowed a late CLC message (type {})",
                    static_cast<int>(header.type));
    }
    return read == ClcRead::kNeedMore && now < deadline_ns_;
  }

 private:
  const int fd_;
  const int64_t deadline_ns_;
};

}  // namespace

std::unique_ptr<Lingerer> swallow_late_clc(int fd, int64_t deadline_ns) {
  return std::make_unique<LateClcSwallower>(fd, deadline_ns);
}

}  // namespace smcpre::core
