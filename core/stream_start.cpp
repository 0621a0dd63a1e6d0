#include "core/stream_start.h"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "config/sys.h"

namespace smcpre::core {
namespace {

// The kernel's TCP_ESTABLISHED (net/tcp_states.h; the uapi headers do not export it).
constexpr uint8_t kTcpEstablished = 1;

bool int_option(int fd, int level, int name, int* value) {
  socklen_t len = sizeof *value;
  return sys::getsockopt(fd, level, name, value, &len) == 0 && len == sizeof *value;
}

bool queue_size(int fd, unsigned long request, int* value) {
  return ::syscall(SYS_ioctl, fd, request, value) == 0;
}

// TCP_INFO, true only if the kernel filled in at least tcpi_data_segs_out (Linux 4.6).
bool tcp_info_of(int fd, tcp_info* info) {
  socklen_t len = sizeof *info;
  if (sys::getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len) != 0) return false;
  return len >= offsetof(tcp_info, tcpi_data_segs_out) + sizeof info->tcpi_data_segs_out;
}

}  // namespace

bool at_stream_start(int fd) {
  int value = 0;
  if (!int_option(fd, SOL_SOCKET, SO_DOMAIN, &value) || (value != AF_INET && value != AF_INET6)) {
    return false;
  }
  if (!int_option(fd, SOL_SOCKET, SO_TYPE, &value) || value != SOCK_STREAM) return false;
  if (!int_option(fd, SOL_SOCKET, SO_PROTOCOL, &value) || value != IPPROTO_TCP) return false;
  if (!int_option(fd, SOL_SOCKET, SO_ACCEPTCONN, &value) || value != 0) return false;

  // Bytes consumed = received - still queued. Received can grow between the two reads (the
  // peer keeps sending), so the pair counts only when received did not move around the
  // queue's size; a few tries, then "cannot tell".
  for (int attempt = 0; attempt < 4; ++attempt) {
    tcp_info before{};
    tcp_info after{};
    int unread = 0;
    int unsent = 0;
    if (!tcp_info_of(fd, &before) || before.tcpi_state != kTcpEstablished) return false;
    if (!queue_size(fd, SIOCINQ, &unread) || !queue_size(fd, SIOCOUTQ, &unsent)) return false;
    if (!tcp_info_of(fd, &after)) return false;
    if (after.tcpi_bytes_received != before.tcpi_bytes_received) continue;
    // No data segment ever left and none waits to: the server side never spoke (a
    // bare SYN-ACK or ACK is no data segment).
    const bool nothing_sent = after.tcpi_data_segs_out == 0 && unsent == 0;
    const bool nothing_read = after.tcpi_bytes_received == static_cast<unsigned>(unread);
    return nothing_sent && nothing_read;
  }
  return false;
}

}  // namespace smcpre::core
