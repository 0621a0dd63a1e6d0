// The frame of an LLC message in both versions, shared by core/wire/llc.cpp (the 44-byte
// messages of either version) and llc_v2*.cpp (the messages only version 2 has). Internal
// to core/wire: callers use llc.h and llc_v2.h.
//
// Version 1: byte 0 the type (0x01..0x09), byte 1 the length (44), byte 2 reserved (ADD
// LINK: the reject reason in its low nibble), byte 3 flags.
// Version 2: byte 0 = 0x20 | type, bytes 1-2 the length as a 16-bit number, byte 3
// flags. Linux writes that number in the sender's byte order (smc_llc_init_msg_hdr stores
// a u16 without htons), so an x86 kernel sends 44 as 2C 00 and an s390 kernel as 00 2C;
// its receiver only checks that the number, read in its own order, is at least 44. The
// message's size is known here (the RDMA receive's byte count), so a length field is taken
// in whichever order gives that size; smcpre writes little-endian, as every kernel it will
// meet on RoCE v2 NICs of x86 and arm64 does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/wire/llc_types.h"

namespace smcpre::core::llc::frame {

inline constexpr size_t kOffType = 0;
inline constexpr size_t kOffLength = 1;
inline constexpr size_t kOffFlags = 3;
inline constexpr uint8_t kV2TypeBits = 0x20;
inline constexpr uint8_t kFlagResponse = 0x80;
// The largest version 2 message Linux receives (SMC_WR_BUF_V2_SIZE); llc_v2.h explains.
inline constexpr size_t kV2MaxSize = 8192;

// The byte order a version 2 message's 16-bit fields came in.
enum class ByteOrder : uint8_t { kLittle, kBig };

uint8_t type_byte(Type type, Version version);
// "CONFIRM_LINK" or "CONFIRM_LINK v2": for reasons.
std::string type_text(Type type, Version version);

// Zeroes `out` and writes the header for a message of out.size() bytes (44 in version 1).
void put_header(std::span<uint8_t> out, Version version, Type type, uint8_t flags);

// Checks the frame of a message of `type`: version 1 exactly 44 bytes with length byte 44;
// version 2 44 to kV2MaxSize bytes whose length field gives that size in either byte order
// (little-endian preferred when both do). Returns the flags byte, and for version 2 the
// byte order found (version 1: kLittle). The size each type needs is the caller's to check.
bool check_header(std::span<const uint8_t> in, Version version, Type type, uint8_t* flags,
                  ByteOrder* order, std::string* error);

uint16_t get_u16(const uint8_t* p, ByteOrder order);
void put_le16(uint8_t* p, uint16_t value);

}  // namespace smcpre::core::llc::frame
