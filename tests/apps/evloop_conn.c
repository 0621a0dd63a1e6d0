// evloop's per-connection protocol: the modes as steps in each direction (what the
// connection waits for, what follows when a step completes), its errors and its record.
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"

static const char kRequest[] = "GET\n";  // source mode: what the client asks first
#define REQUEST_LEN (sizeof kRequest - 1)

bool fail(struct conn* c, const char* fmt, ...) {
  if (c->error[0] != '\0') return false;  // keep the first error: later ones are fallout
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->error, sizeof c->error, fmt, ap);
  va_end(ap);
  return false;
}

bool failed(const struct conn* c) {
  return c->error[0] != '\0';
}

void report(const struct conn* c, const struct tcpstats* st) {
  bool ok = !failed(c);
  printf(
      "{\"role\":\"%s\",\"conn\":%d,\"mode\":\"%s\",\"api\":\"%s\",\"bytes_sent\":%llu,"
      "\"bytes_received\":%llu,\"ok\":%s,\"tcp_bytes_received\":%llu,\"tcp_bytes_acked\":%llu,"
      "\"tcp_segs_in\":%u,\"tcp_segs_out\":%u,\"events\":%u,\"spurious\":%u,\"error\":",
      opt.server ? "server" : "client", c->index, mode_names[opt.mode], api_names[opt.api],
      (unsigned long long)c->sent, (unsigned long long)c->received, ok ? "true" : "false",
      (unsigned long long)st->bytes_received, (unsigned long long)st->bytes_acked, st->segs_in,
      st->segs_out, c->events, c->spurious);
  json_string(stdout, ok ? NULL : c->error);
  printf("}\n");
  fflush(stdout);
}

// Ends the loop in every thread: the stop eventfd stays readable (it is never read).
void stop_loop(void) {
  uint64_t one = 1;
  if (write(L.stopfd, &one, sizeof one) != (ssize_t)sizeof one) perror("eventfd write");
}

void fatal(const char* what) {
  perror(what);
  pthread_mutex_lock(&L.lock);
  L.fatal = true;
  pthread_mutex_unlock(&L.lock);
  stop_loop();
}

bool loop_done(void) {
  pthread_mutex_lock(&L.lock);
  bool done = L.fatal || L.finished == opt.conns;
  pthread_mutex_unlock(&L.lock);
  return done;
}

// ---- what a connection waits for ---------------------------------------------------------

bool echo_server(void) {
  return opt.server && opt.mode == MODE_ECHO;
}

bool wants_read(const struct conn* c) {
  switch (c->rx) {
    case RX_MSG:
    case RX_EOF:
      return true;
    case RX_DATA:
      return !echo_server() || c->ring_len < MAX_CHUNK;  // a full ring waits for the writer
    default:
      return false;
  }
}

// How far the client's stream may be sent now: with --requests, up to the end of the
// request after the last one whose echo is complete.
uint64_t tx_allowed(const struct conn* c) {
  if (opt.requests == 0) return c->tx_total;
  uint64_t req = ((uint64_t)opt.bytes + (uint64_t)opt.requests - 1) / (uint64_t)opt.requests;
  if (req == 0) return c->tx_total;
  uint64_t next = (c->rx_off / req + 1) * req;
  return next < c->tx_total ? next : c->tx_total;
}

bool wants_write(const struct conn* c) {
  switch (c->tx) {
    case TX_MSG:
      return true;
    case TX_DATA:
      return c->pend_pos < c->pend_len || c->tx_filled < tx_allowed(c);
    case TX_ECHO:
      return c->ring_len > 0;
    default:
      return false;
  }
}

bool conn_complete(const struct conn* c) {
  return failed(c) || (c->rx == RX_DONE && c->tx == TX_DONE);
}

// ---- the protocol: what follows when a step is complete ------------------------------------

static void start_msg_out(struct conn* c, const void* msg, size_t len) {
  memcpy(c->msg_out, msg, len);
  c->pend_pos = 0;
  c->pend_len = len;
  c->tx = TX_MSG;
}

static void start_msg_in(struct conn* c, size_t len) {
  c->msg_in_want = len;
  c->msg_in_got = 0;
  c->rx = RX_MSG;
}

static void start_data_out(struct conn* c, uint64_t total) {
  c->tx_total = total;
  c->tx_filled = 0;
  c->pend_pos = c->pend_len = 0;
  c->tx = TX_DATA;
}

static void start_data_in(struct conn* c, long long limit) {
  c->rx_limit = limit;
  c->rx_off = 0;
  c->rx = RX_DATA;
}

void conn_start(struct conn* c) {
  if (opt.server) {
    switch (opt.mode) {
      case MODE_SINK:
        start_data_in(c, opt.bytes);
        break;
      case MODE_SOURCE:
        start_msg_in(c, REQUEST_LEN);
        break;
      case MODE_ECHO:
        start_data_in(c, -1);
        c->tx = TX_ECHO;
        break;
    }
    return;
  }
  switch (opt.mode) {
    case MODE_SINK:
      start_data_out(c, (uint64_t)opt.bytes);
      start_msg_in(c, REPLY_LEN);  // the reply can only come after all data; read it early
      break;
    case MODE_SOURCE:
      start_msg_out(c, kRequest, REQUEST_LEN);
      start_data_in(c, -1);
      break;
    case MODE_ECHO:
      start_data_out(c, (uint64_t)opt.bytes);
      start_data_in(c, opt.bytes);
      break;
  }
}

// The current receive step is complete (`eof`: it ended with the peer's EOF).
void rx_complete(struct conn* c, bool eof) {
  if (c->rx == RX_EOF) {
    c->rx = RX_DONE;
    return;
  }
  if (opt.server) {
    switch (opt.mode) {
      case MODE_SINK: {  // all data: reply, then the client's EOF
        uint8_t reply[REPLY_LEN];
        put_be64(reply, c->rx_off);
        put_be64(reply + 8, fletcher_value(&c->sum));
        start_msg_out(c, reply, sizeof reply);
        c->rx = RX_IDLE;
        return;
      }
      case MODE_SOURCE:  // the request
        if (memcmp(c->msg_in, kRequest, REQUEST_LEN) != 0) {
          fail(c, "wrong request");
          return;
        }
        c->rx = RX_DONE;
        start_data_out(c, (uint64_t)opt.bytes);
        return;
      case MODE_ECHO:  // EOF after the data
        if (c->rx_off != (uint64_t)opt.bytes)
          fail(c, "echoed %llu bytes, expected %lld", (unsigned long long)c->rx_off, opt.bytes);
        c->rx = RX_DONE;
        return;
    }
  }
  switch (opt.mode) {
    case MODE_SINK:  // the reply
      if (c->tx != TX_DONE) {
        fail(c, "sink reply arrived after only %llu of %lld bytes were sent",
             (unsigned long long)c->sent, opt.bytes);
        return;
      }
      if (get_be64(c->msg_in) != (uint64_t)opt.bytes) {
        fail(c, "server counted %llu bytes, sent %lld", (unsigned long long)get_be64(c->msg_in),
             opt.bytes);
        return;
      }
      if (get_be64(c->msg_in + 8) != fletcher_value(&c->sum)) {
        fail(c, "server checksum %016llx differs from ours %016llx",
             (unsigned long long)get_be64(c->msg_in + 8),
             (unsigned long long)fletcher_value(&c->sum));
        return;
      }
      c->rx = RX_EOF;  // the server closes once it has seen our EOF
      return;
    case MODE_SOURCE:  // the data, to EOF
      if (c->rx_off != (uint64_t)opt.bytes)
        fail(c, "received %llu bytes before EOF, expected %lld", (unsigned long long)c->rx_off,
             opt.bytes);
      c->rx = RX_DONE;
      return;
    case MODE_ECHO:  // the whole echo; the server's close follows our half-close
      c->rx = eof || opt.end != END_SHUTDOWN ? RX_DONE : RX_EOF;
      return;
  }
}

// The current send step is complete.
static void tx_complete(struct conn* c) {
  c->tx = TX_DONE;
  if (opt.server) {
    if (opt.mode == MODE_SINK) c->rx = RX_EOF;  // reply sent; the client's EOF comes next
    return;
  }
  if (opt.mode == MODE_SOURCE || opt.end != END_SHUTDOWN) return;
  waiting_in = "shutdown(SHUT_WR)";
  if (shutdown(c->fd, SHUT_WR) != 0) fail(c, "shutdown(SHUT_WR): %s", strerror(errno));
  waiting_in = "event handling";
}

// Completes every step that needs no further I/O (a full message, a stream at its limit,
// an empty stream).
void settle(struct conn* c) {
  while (!failed(c)) {
    if (c->rx == RX_MSG && c->msg_in_got == c->msg_in_want)
      rx_complete(c, false);
    else if (c->rx == RX_DATA && c->rx_limit >= 0 && c->rx_off == (uint64_t)c->rx_limit)
      rx_complete(c, false);
    else if (c->tx == TX_MSG && c->pend_pos == c->pend_len)
      tx_complete(c);
    else if (c->tx == TX_DATA && c->tx_filled == c->tx_total && c->pend_pos == c->pend_len)
      tx_complete(c);
    else if (c->tx == TX_ECHO && c->rx == RX_DONE && c->ring_len == 0)
      tx_complete(c);
    else
      return;
  }
}
