// Test vectors written as hex text: "e2 d4 c3 d9 01 00 34 10" (spaces and newlines ignored).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

using Bytes = std::vector<uint8_t>;

inline Bytes hex(const char* text) {
  Bytes out;
  for (const char* p = text; *p != '\0';) {
    if (*p == ' ' || *p == '\n') {
      ++p;
      continue;
    }
    out.push_back(static_cast<uint8_t>(std::stoul(std::string(p, 2), nullptr, 16)));
    p += 2;
  }
  return out;
}

// A fixed-size field (GID, MAC, EID) written as hex text; the text must hold exactly N
// bytes.
template <size_t N>
std::array<uint8_t, N> hex_array(const char* text) {
  const Bytes b = hex(text);
  if (b.size() != N) throw std::logic_error("hex_array: wrong number of bytes");
  std::array<uint8_t, N> out{};
  std::copy(b.begin(), b.end(), out.begin());
  return out;
}

// Test vectors put together from parts, and runs of zero bytes (reserved fields).
inline Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

inline Bytes zeros(size_t n) {
  return Bytes(n, 0);
}
