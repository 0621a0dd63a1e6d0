// What the three parts of the port selection share (port_list.cpp, port_route.cpp,
// port_select.cpp), defined in port_route.cpp. Internal to the port selection: nothing
// else includes it.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <string>

namespace smcpre::rdma::port_select_detail {

// "what: the error's text" (thread-safe, unlike std::strerror).
std::string errno_text(const std::string& what, int err);
// The address in `a` as raw bytes (4 or 16), or an empty span for other families.
std::span<const uint8_t> address_bytes(const sockaddr_storage& a);

}  // namespace smcpre::rdma::port_select_detail
