// Test vectors written as hex text: "e2 d4 c3 d9 01 00 34 10" (spaces and newlines ignored).
#pragma once

#include <cstdint>
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
