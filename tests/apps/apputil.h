// Helpers shared by the test programs (tcpapp, entrypoints, tcpbench, fanin, ...): the
// deterministic data pattern, a small PRNG, socket setup, TCP_INFO and JSON output.
//
// These programs are ordinary TCP applications that know nothing of smcpre; everything
// here is plain libc, exactly what an unmodified application would call.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

// ---- pseudo-random numbers -------------------------------------------------------------

// splitmix64's finaliser: a bijective 64-bit mix, used both as the pattern generator
// (random access by word index) and to derive seeds.
uint64_t mix64(uint64_t x);

struct rng {
  uint64_t state;
};
void rng_seed(struct rng* r, uint64_t seed);
uint64_t rng_next(struct rng* r);
// Uniform in [lo, hi] (inclusive); hi >= lo.
uint64_t rng_range(struct rng* r, uint64_t lo, uint64_t hi);

// ---- the data pattern ------------------------------------------------------------------

// Byte `offset + i` of stream `seed` is a pure function of (seed, offset + i), so any chunk
// of a stream can be produced or verified independently of how the stream was chunked.
void pattern_fill(uint64_t seed, uint64_t offset, void* buf, size_t len);
// Returns the index of the first byte that differs from the pattern, or SIZE_MAX if none.
size_t pattern_check(uint64_t seed, uint64_t offset, const void* buf, size_t len);

// Position-sensitive running checksum (Fletcher-style, two 32-bit sums) of a byte stream.
struct fletcher {
  uint32_t a, b;
};
void fletcher_update(struct fletcher* f, const void* buf, size_t len);
uint64_t fletcher_value(const struct fletcher* f);

// ---- sockets ---------------------------------------------------------------------------

// Creates a listening TCP socket on `bind_addr` (numeric IPv4/IPv6) and `port` (0 = any)
// and stores the port actually bound in *bound_port. Returns the fd or -1 (message on
// stderr).
int listen_tcp(const char* bind_addr, int port, int* bound_port);
// listen_tcp with options: SO_REUSEPORT, IPV6_V6ONLY (< 0: the system default), and
// SOCK_CLOEXEC.
struct listen_opts {
  bool reuseport;
  int v6only;
  bool cloexec;
};
int listen_tcp_opts(const char* bind_addr, int port, const struct listen_opts* o, int* bound_port);
// Connects to host:port (numeric or resolvable name). Returns the fd or -1 (errno kept).
int connect_tcp(const char* host, int port);
// connect_tcp() from a given local address (numeric; port chosen by the kernel), or from
// the kernel's choice when `source` is NULL: picks the route, and so the netdev, a
// connection uses.
int connect_tcp_from(const char* host, int port, const char* source);
// Local or peer port of a connected socket (0 on failure).
int local_port(int fd);
int peer_port(int fd);

struct tcpstats {
  uint64_t bytes_received;  // tcpi_bytes_received: payload bytes the kernel TCP received
  uint64_t bytes_acked;     // tcpi_bytes_acked: payload bytes sent and acknowledged
  uint32_t segs_in, segs_out;
  bool valid;
};
// Reads TCP_INFO straight from the kernel socket.
struct tcpstats tcp_stats(int fd);

// ---- misc ------------------------------------------------------------------------------

// Parses a non-negative size with an optional K/M/G suffix (binary units); -1 on error.
long long parse_size(const char* s);
// A numeric command-line value (parse_size syntax) within [lo, hi]; else "<prog>: bad value
// for <name>" on stderr and exit(2).
long long num_arg(const char* prog, const char* name, const char* v, long long lo, long long hi);
// The size of the next write or read: `fixed` if non-zero, else random (mostly up to 64 KiB,
// some tiny, now and then up to `max`), so that every chunking path is exercised.
size_t pick_chunk(struct rng* r, size_t fixed, size_t max);
// Monotonic clock in nanoseconds.
uint64_t now_ns(void);
// Writes `s` to `out` as a JSON string literal (quotes included), or null if s is NULL.
void json_string(FILE* out, const char* s);
// Installs a SIGALRM handler that prints "<prog>: timeout after N s<detail>" and exits 3,
// then arms alarm(seconds). `detail`, if not NULL, is called from the handler to name what
// the program was doing (must be async-signal-safe: return a static string).
void arm_timeout(const char* prog, unsigned seconds, const char* (*detail)(void));

// Big-endian 64-bit fields of the apps' small replies and headers.
void put_be64(uint8_t* p, uint64_t v);
uint64_t get_be64(const uint8_t* p);
void put_be32(uint8_t* p, uint32_t v);
uint32_t get_be32(const uint8_t* p);

// ---- whole messages on a blocking socket -----------------------------------------------

// Sends all len bytes (retrying on EINTR); false on error or a zero-byte send.
bool send_all_fd(int fd, const void* buf, size_t len);
// Receives exactly len bytes. Returns 1 on success, 0 on EOF before the first byte, -1 on
// error or EOF in the middle.
int recv_all_fd(int fd, void* buf, size_t len);
