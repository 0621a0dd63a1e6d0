// malpeer's helpers: fatal errors, the lines the test matches, randomness, pauses and the
// TCP reads and writes of the handshake.
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "malpeer.h"

namespace malpeer {

[[noreturn]] void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("error: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::exit(1);
}

int64_t g_attack_ns = 0;

void say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  std::putchar('\n');
  std::fflush(stdout);
  va_end(ap);
}

uint32_t random32() {
  uint32_t v = 0;
  if (!random_bytes(&v, sizeof v)) die("getrandom");
  return v;
}

void pause_us(long us) {
  timespec ts{us / 1'000'000, (us % 1'000'000) * 1000};
  nanosleep(&ts, nullptr);
}

bool read_exact(int fd, uint8_t* out, size_t n, int timeout_ms) {
  const int64_t deadline = deadline_after_ms(timeout_ms);
  size_t done = 0;
  while (done < n) {
    if (!wait_fd(fd, POLLIN, deadline)) return false;
    const ssize_t r = ::recv(fd, out + done, n - done, 0);
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

void send_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) die("tcp send: %s", std::strerror(errno));
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// " after 1.234 ms" once the attack has begun.
std::string since_attack() {
  if (g_attack_ns == 0) return "";
  char text[64];
  std::snprintf(text, sizeof text, " after %.3f ms",
                static_cast<double>(now_ns() - g_attack_ns) / 1e6);
  return text;
}

}  // namespace malpeer
