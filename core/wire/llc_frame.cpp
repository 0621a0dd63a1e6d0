#include "core/wire/llc_frame.h"

#include <cassert>
#include <cstring>

#include "core/wire/bytes.h"

namespace smcpre::core::llc::frame {

using wire::fail;

uint8_t type_byte(Type type, Version version) {
  const auto t = static_cast<uint8_t>(type);
  return version == Version::kV2 ? static_cast<uint8_t>(kV2TypeBits | t) : t;
}

std::string type_text(Type type, Version version) {
  std::string text = type_name(type);
  if (version == Version::kV2) text += " v2";
  return text;
}

void put_header(std::span<uint8_t> out, Version version, Type type, uint8_t flags) {
  assert(out.size() >= kSize && out.size() <= kV2MaxSize);
  assert(version == Version::kV2 || out.size() == kSize);
  std::memset(out.data(), 0, out.size());
  out[kOffType] = type_byte(type, version);
  if (version == Version::kV2) {
    put_le16(&out[kOffLength], static_cast<uint16_t>(out.size()));
  } else {
    out[kOffLength] = static_cast<uint8_t>(kSize);
  }
  out[kOffFlags] = flags;
}

bool check_header(std::span<const uint8_t> in, Version version, Type type, uint8_t* flags,
                  ByteOrder* order, std::string* error) {
  *order = ByteOrder::kLittle;
  if (version == Version::kV1) {
    if (in.size() != kSize) {
      return fail(error, "LLC message of %zu bytes, expected %zu", in.size(), kSize);
    }
    if (in[kOffType] != type_byte(type, version)) {
      return fail(error, "expected %s, got type 0x%02x", type_name(type), in[kOffType]);
    }
    if (in[kOffLength] != kSize) {
      return fail(error, "%s length byte %u != %zu", type_name(type), in[kOffLength], kSize);
    }
    *flags = in[kOffFlags];
    return true;
  }
  if (in.size() < kSize || in.size() > kV2MaxSize) {
    return fail(error, "LLC v2 message of %zu bytes (%zu to %zu)", in.size(), kSize, kV2MaxSize);
  }
  if (in[kOffType] != type_byte(type, version)) {
    return fail(error, "expected %s, got type 0x%02x", type_text(type, version).c_str(),
                in[kOffType]);
  }
  if (get_u16(&in[kOffLength], ByteOrder::kLittle) == in.size()) {
    *order = ByteOrder::kLittle;
  } else if (get_u16(&in[kOffLength], ByteOrder::kBig) == in.size()) {
    *order = ByteOrder::kBig;
  } else {
    return fail(error, "%s length field %02x %02x is not its size %zu in either byte order",
                type_text(type, version).c_str(), in[kOffLength], in[kOffLength + 1], in.size());
  }
  *flags = in[kOffFlags];
  return true;
}

uint16_t get_u16(const uint8_t* p, ByteOrder order) {
  return order == ByteOrder::kBig ? wire::get_be16(p) : static_cast<uint16_t>(p[0] | p[1] << 8);
}

void put_le16(uint8_t* p, uint16_t value) {
  p[0] = static_cast<uint8_t>(value);
  p[1] = static_cast<uint8_t>(value >> 8);
}

}  // namespace smcpre::core::llc::frame
