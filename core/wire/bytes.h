// Shared helpers of the wire codecs (clc, cdc, llc): big-endian fields and the error text
// a parse failure reports. Everything on the SMC wire is network byte order.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <string>

namespace smcpre::core::wire {

inline uint16_t get_be16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] << 8 | p[1]);
}
inline uint32_t get_be24(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 16 | static_cast<uint32_t>(p[1]) << 8 | p[2];
}
inline uint32_t get_be32(const uint8_t* p) {
  return get_be24(p) << 8 | p[3];
}
inline uint64_t get_be64(const uint8_t* p) {
  return static_cast<uint64_t>(get_be32(p)) << 32 | get_be32(p + 4);
}
inline void put_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put_be24(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 16);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v);
}
inline void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  put_be24(p + 1, v);
}
inline void put_be64(uint8_t* p, uint64_t v) {
  put_be32(p, static_cast<uint32_t>(v >> 32));
  put_be32(p + 4, static_cast<uint32_t>(v));
}

// Sets *error (when not null) to the formatted reason and returns false, so a parser can
// `return fail(error, "...")`. Only the failure path formats: parsing allocates nothing.
[[gnu::format(printf, 2, 3)]] inline bool fail(std::string* error, const char* fmt, ...) {
  if (error != nullptr) {
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    *error = buf;
  }
  return false;
}

}  // namespace smcpre::core::wire
