// evloop's I/O on a non-blocking socket: one readiness event becomes reads and writes with
// varied calls, EOF and spurious readiness are checked, each step's data verified.
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "evloop.h"

static size_t min_size(size_t a, size_t b) {
  return a < b ? a : b;
}

enum io { IO_PROGRESS, IO_AGAIN, IO_FAILED };

// One receive call (read, recv or recvmsg, chosen at random).
static ssize_t recv_call(struct conn* c, void* buf, size_t len) {
  ssize_t n;
  do {
    struct iovec iov = {buf, len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    switch (rng_next(&c->rng) % 3) {
      case 0:
        waiting_in = "read() on a non-blocking socket";
        n = read(c->fd, buf, len);
        break;
      case 1:
        waiting_in = "recv() on a non-blocking socket";
        n = recv(c->fd, buf, len, 0);
        break;
      default:
        waiting_in = "recvmsg() on a non-blocking socket";
        n = recvmsg(c->fd, &msg, 0);
        break;
    }
  } while (n < 0 && errno == EINTR);
  waiting_in = "event handling";
  return n;
}

// One send call (write, send, writev or sendmsg, chosen at random).
static ssize_t send_call(struct conn* c, const void* buf, size_t len) {
  ssize_t n;
  do {
    struct iovec iov = {(void*)buf, len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    switch (rng_next(&c->rng) % 4) {
      case 0:
        waiting_in = "write() on a non-blocking socket";
        n = write(c->fd, buf, len);
        break;
      case 1:
        waiting_in = "send() on a non-blocking socket";
        n = send(c->fd, buf, len, MSG_NOSIGNAL);
        break;
      case 2:
        waiting_in = "writev() on a non-blocking socket";
        n = writev(c->fd, &iov, 1);
        break;
      default:
        waiting_in = "sendmsg() on a non-blocking socket";
        n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        break;
    }
  } while (n < 0 && errno == EINTR);
  waiting_in = "event handling";
  return n;
}

static bool rdhup_checked(void) {
  return opt.api == API_EPOLL || opt.api == API_POLL;
}

// Whether the socket reports the peer's FIN now (poll, no wait).
static bool rdhup_now(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
  return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP)) != 0;
}

static enum io on_eof(struct conn* c) {
  // Level-triggered: the read that finds EOF follows an event, and kernel TCP reports
  // EPOLLRDHUP with EPOLLIN once the FIN is in. The FIN may also arrive between the event
  // (taken for data) and the read; then RDHUP must show now, or it was never reported.
  if (rdhup_checked() && (c->last_ev & (EV_RDHUP | EV_HUP)) == 0 && !rdhup_now(c->fd)) {
    fail(c, "read returned EOF after an event without %s (events 0x%x)",
         opt.api == API_POLL ? "POLLRDHUP" : "EPOLLRDHUP", c->last_ev);
    return IO_FAILED;
  }
  switch (c->rx) {
    case RX_MSG:
      fail(c, "EOF after %zu of %zu bytes of the %s", c->msg_in_got, c->msg_in_want,
           opt.server ? "request" : "sink reply");
      return IO_FAILED;
    case RX_DATA:
      if (c->rx_limit >= 0) {
        fail(c, "EOF after %llu of %lld bytes", (unsigned long long)c->rx_off, c->rx_limit);
        return IO_FAILED;
      }
      break;
    default:
      break;
  }
  rx_complete(c, true);
  settle(c);
  return IO_PROGRESS;
}

static enum io do_read(struct conn* c) {
  uint8_t* dst;
  size_t len;
  switch (c->rx) {
    case RX_MSG:
      dst = c->msg_in + c->msg_in_got;
      len = c->msg_in_want - c->msg_in_got;
      break;
    case RX_EOF:
      dst = c->rbuf;
      len = 1;
      break;
    case RX_DATA:
      len = pick_chunk(&c->rng, opt.chunk, MAX_CHUNK);
      if (c->rx_limit >= 0) len = (size_t)min_size(len, (uint64_t)c->rx_limit - c->rx_off);
      if (echo_server()) {  // into the ring's free space behind the unsent bytes
        size_t tail = (c->ring_head + c->ring_len) % MAX_CHUNK;
        len = min_size(len, min_size(MAX_CHUNK - c->ring_len, MAX_CHUNK - tail));
        dst = c->rbuf + tail;
      } else {
        dst = c->rbuf;
      }
      break;
    default:
      fail(c, "internal: read in receive step %d", (int)c->rx);
      return IO_FAILED;
  }
  ssize_t n = recv_call(c, dst, len);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return IO_AGAIN;
  if (n < 0) {
    fail(c, "receive after %llu bytes: %s", (unsigned long long)c->received, strerror(errno));
    return IO_FAILED;
  }
  if ((size_t)n > len) {
    fail(c, "receive returned %zd for a %zu-byte buffer", n, len);
    return IO_FAILED;
  }
  if (n == 0) return on_eof(c);
  c->received += (uint64_t)n;
  switch (c->rx) {
    case RX_MSG:
      c->msg_in_got += (size_t)n;
      break;
    case RX_EOF:
      fail(c, "unexpected byte 0x%02x (expected EOF)", dst[0]);
      return IO_FAILED;
    default: {
      size_t bad = pattern_check(c->seed_rx, c->rx_off, dst, (size_t)n);
      if (bad != SIZE_MAX) {
        fail(c, "data mismatch at stream offset %llu (got 0x%02x)",
             (unsigned long long)(c->rx_off + bad), dst[bad]);
        return IO_FAILED;
      }
      if (opt.server && opt.mode == MODE_SINK) fletcher_update(&c->sum, dst, (size_t)n);
      if (echo_server()) c->ring_len += (size_t)n;
      c->rx_off += (uint64_t)n;
      break;
    }
  }
  settle(c);
  return IO_PROGRESS;
}

static enum io do_write(struct conn* c) {
  const uint8_t* src;
  size_t len;
  switch (c->tx) {
    case TX_MSG:
      src = c->msg_out + c->pend_pos;
      len = c->pend_len - c->pend_pos;
      break;
    case TX_DATA:
      if (c->pend_pos == c->pend_len) {  // the next chunk of the stream
        size_t n = (size_t)min_size(pick_chunk(&c->rng, opt.chunk, MAX_CHUNK),
                                    tx_allowed(c) - c->tx_filled);
        pattern_fill(c->seed_tx, c->tx_filled, c->sbuf, n);
        if (!opt.server && opt.mode == MODE_SINK) fletcher_update(&c->sum, c->sbuf, n);
        c->tx_filled += n;
        c->pend_pos = 0;
        c->pend_len = n;
      }
      src = c->sbuf + c->pend_pos;
      len = c->pend_len - c->pend_pos;
      break;
    case TX_ECHO:
      src = c->rbuf + c->ring_head;
      len = min_size(c->ring_len, MAX_CHUNK - c->ring_head);
      break;
    default:
      fail(c, "internal: write in send step %d", (int)c->tx);
      return IO_FAILED;
  }
  ssize_t n = send_call(c, src, len);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return IO_AGAIN;
  if (n < 0) {
    fail(c, "send after %llu bytes: %s", (unsigned long long)c->sent, strerror(errno));
    return IO_FAILED;
  }
  if (n == 0 || (size_t)n > len) {
    fail(c, "send returned %zd for %zu bytes", n, len);
    return IO_FAILED;
  }
  c->sent += (uint64_t)n;
  if (c->tx == TX_ECHO) {
    c->ring_head = (c->ring_head + (size_t)n) % MAX_CHUNK;
    c->ring_len -= (size_t)n;
  } else {
    c->pend_pos += (size_t)n;
  }
  settle(c);
  return IO_PROGRESS;
}

// Handles one readiness event. Level-triggered APIs make one read and one write call per
// event and rely on being told again; edge-triggered epoll keeps going until both
// directions are blocked (EAGAIN) or need nothing more, and remembers readiness it has not
// used up (a full echo ring stops reading without EAGAIN). Returns true when the
// connection is complete (done or failed).
bool conn_event(struct conn* c, unsigned ev) {
  const bool edge = opt.api == API_EPOLL_ET;
  const bool rd = (ev & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR)) != 0;
  const bool wr = (ev & (EV_OUT | EV_HUP | EV_ERR)) != 0;
  c->events++;
  c->last_ev = ev;
  if (edge) {
    c->may_read |= rd;
    c->may_write |= wr;
  } else {
    c->may_read = rd;
    c->may_write = wr;
  }
  // The first call after an event that said "ready" must not block (TCP never says so
  // falsely); later EAGAINs are how draining ends.
  bool first_read = (ev & EV_IN) != 0, first_write = (ev & EV_OUT) != 0;
  for (;;) {
    bool progress = false;
    if (c->may_read && wants_read(c)) {
      enum io r = do_read(c);
      if (r == IO_AGAIN) {
        c->may_read = false;
        if (first_read) c->spurious++;
      } else {
        progress = r == IO_PROGRESS;
      }
      first_read = false;
      if (!edge) c->may_read = false;
    }
    if (!failed(c) && c->may_write && wants_write(c)) {
      enum io w = do_write(c);
      if (w == IO_AGAIN) {
        c->may_write = false;
        if (first_write) c->spurious++;
      } else {
        progress = progress || w == IO_PROGRESS;
      }
      first_write = false;
      if (!edge) c->may_write = false;
    }
    if (conn_complete(c)) return true;
    if (!edge || !progress) return false;
  }
}
