// libsmc_af.so: makes an ordinary TCP program use the Linux kernel's own SMC (AF_SMC), as
// smc-tools' smc_run does (Debian does not package smc-tools). The kernel-peer tests run
// tcpapp under it, so that the other end of a smcpre connection is the kernel's SMC-R
// (tests/integration/test_kernel_peer.py).
//
// socket(AF_INET or AF_INET6, SOCK_STREAM, 0 or IPPROTO_TCP) becomes
// socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC or SMCPROTO_SMC6): the protocol says which
// address family the SMC socket's TCP connection uses. Every other call is the kernel's:
// an AF_SMC socket takes AF_INET/AF_INET6 addresses in bind(), connect() and accept(), and
// falls back to TCP inside the kernel when the peer does not speak SMC. Where the kernel
// has no AF_SMC (EAFNOSUPPORT), the socket stays a TCP socket and SMC_AF_STRICT=1 makes
// that an error instead.
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef AF_SMC
#define AF_SMC 43
#endif
enum { kSmcProtoSmc = 0, kSmcProtoSmc6 = 1 };

typedef int (*socket_fn)(int, int, int);

static int smc_protocol(int domain) {
  return domain == AF_INET6 ? kSmcProtoSmc6 : kSmcProtoSmc;
}

// Exported although the build hides symbols by default: this is the one we interpose.
__attribute__((visibility("default"))) int socket(int domain, int type, int protocol) {
  static socket_fn real_socket;
  if (real_socket == NULL) real_socket = (socket_fn)dlsym(RTLD_NEXT, "socket");
  if (real_socket == NULL) {
    errno = ENOSYS;
    return -1;
  }
  const int kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  if ((domain != AF_INET && domain != AF_INET6) || kind != SOCK_STREAM ||
      (protocol != 0 && protocol != IPPROTO_TCP))
    return real_socket(domain, type, protocol);
  const int fd = real_socket(AF_SMC, type, smc_protocol(domain));
  if (fd >= 0) return fd;
  const char* strict = getenv("SMC_AF_STRICT");
  if (strict != NULL && strcmp(strict, "1") == 0) return -1;
  return real_socket(domain, type, protocol);
}
