// fanin's private header: the wire format, a run's parameters, the connection state and
// the functions the fanin*.c files of the one program share (fanin.c says what it does).
#pragma once

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#include "apputil.h"

enum { HDR_LEN = 32, MSG_LEN = 64 };
enum kind { KIND_BULK = 1, KIND_PROBE = 2 };
enum { FLAG_REVERSE = 1u, FLAG_SLOW = 2u, FLAGS_KNOWN = 3u };
enum msg { MSG_GO = 1, MSG_PING = 2, MSG_END = 3, MSG_RESULT = 4 };

#define IO_BUF (256u << 10)   // fast reads; the sender's per-connection turn
#define SLOW_READ (4u << 10)  // the slow consumer's read size
#define MAX_EVENTS 256
#define MAX_CONNS 65536u
#define MAX_SIZE (16u << 20)
#define MAX_MILLIS 3600000u
#define MAX_WORK 1000000u  // ns per KiB
#define SPARE_FDS 64       // listener, probe, epoll, stdio, ... besides the bulk fds

// What a run is; the client sends it in every header.
struct params {
  uint32_t flags, conns, size, millis, work_ns_per_kib;
};

struct conn {
  int fd;
  uint64_t bytes;    // sent or received on this connection
  uint32_t off;      // sender: position in the current B-byte buffer
  uint8_t reply[8];  // forward client: the server's count for this connection
  uint8_t reply_got;
};

// Receiver's counts.
struct recv_result {
  uint64_t total, window_bytes, window_ns, conn_min, conn_max;
};

// What the process is doing, for the timeout message.
enum phase {
  PH_SETUP,
  PH_CONNECT,
  PH_ACCEPT,
  PH_GO,
  PH_SEND,
  PH_RECEIVE,
  PH_COUNTS,
  PH_RESULT,
  PH_HOLD
};
extern volatile sig_atomic_t phase;

// ---- plumbing (fanin_plumbing.c) ---------------------------------------------------------------

// "fanin: <message>" on stderr, exit 1: a run that went wrong has nothing to report.
void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void set_nodelay(int fd);
void set_nonblocking(int fd, bool on);
// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
rlim_t raise_nofile(void);
// Fails unless `conns` bulk connections (and SPARE_FDS more) fit in RLIMIT_NOFILE.
void check_nofile(uint32_t conns);
// epoll_wait's timeout (ms, rounded up, at least 1) until monotonic time `t` > now.
int ms_until(uint64_t t, uint64_t now);
// Busy-waits `ns`: the slow consumer's work.
void spin_ns(uint64_t ns);
void sleep_until(uint64_t t);
// A probe connection message: `type`, then `nfields` u64 fields.
void send_msg(int fd, uint32_t type, const uint64_t* fields, int nfields);
// Receives one message and fails unless it is of `type`.
void recv_msg(int fd, uint32_t type, uint8_t m[MSG_LEN]);
void encode_header(uint8_t h[HDR_LEN], enum kind kind, const struct params* p);
// Returns the kind, or 0 if the header is not a valid one.
int decode_header(const uint8_t h[HDR_LEN], struct params* p);
// --hold: announce the end, keep everything open until stdin closes.
void hold(void);

// ---- the bulk loops (fanin_bulk.c) ---------------------------------------------------------

// Writes to all connections until t0 + the run's duration, then half-closes them.
void send_loop(struct conn* c, const struct params* p, uint64_t t0);
// Reads all connections until each has ended, counting the window; with `reply`, answers
// each EOF with the connection's u64 count.
void receive_loop(struct conn* c, const struct params* p, uint64_t t0, bool reply,
                  struct recv_result* out);
// Forward client, after half-closing: each connection's count from the server, checked.
void collect_counts(struct conn* c, const struct params* p);

// ---- the probe (fanin_probe.c) -------------------------------------------------------------

struct probe {
  int fd;
  uint64_t interval_ns;
  atomic_bool stop;
  uint64_t* rtt;  // ns
  size_t count, cap;
  bool failed;
};

// Server side: echoes PINGs until END. Returns NULL on END, else a non-NULL value.
void* echo_main(void* arg);
// Client side: a PING every interval, each round trip timed, until `stop`.
void* probe_main(void* arg);
// qsort's order of uint64_t.
int cmp_u64(const void* a, const void* b);
// Prints percentile q (0..100] of n sorted values (nearest rank) as a JSON member, in µs.
void print_pct(const char* name, const uint64_t* v, size_t n, unsigned q);

// ---- the two ends (fanin_server.c, fanin_client.c) ------------------------------------------

int run_server(const char* bind_addr, int port, bool hold_at_end);
int run_client(const char* host, int port, const struct params* p, uint64_t interval_us,
               bool hold_at_end);
