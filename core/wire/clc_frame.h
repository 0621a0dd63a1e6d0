// What the CLC codecs of every version share (core/wire/clc.cpp for version 1,
// clc_v2_*.cpp for version 2): the header byte, the frame and trailer checks, the "local"
// block, and the SMC-R fields that open an Accept or Confirm of either version. Internal
// to core/wire: callers use clc.h and clc_v2.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/wire/clc_types.h"

namespace smcpre::core::clc::frame {

// Header byte 7: version in the high nibble, then two bits Linux calls typev2 and two it
// calls typev1. In version 1 the upper typev2 bit is the flag (first contact in
// Accept/Confirm, out of sync in Decline) and typev1 the SMC type. Version 2 keeps the
// flag where it was (Linux: SMC_FIRST_CONTACT_MASK within typev2) and, in a Proposal,
// uses both pairs as the SMC types offered for each version.
inline constexpr uint8_t kFlagBit = 0x08;
inline constexpr uint8_t kUnusedBit = 0x04;
inline constexpr uint8_t kSmcTypeMask = 0x03;
inline constexpr uint8_t kSmcTypeR = 0;
inline constexpr uint8_t kSmcTypeD = 1;
inline constexpr int kTypeV2Shift = 2;

// Offsets shared by Proposal, Accept and Confirm: the "local" block follows the header.
inline constexpr size_t kOffPeerId = 8;
inline constexpr size_t kOffGid = 16;
inline constexpr size_t kOffMac = 32;
// Where the SMC-R fields of an Accept/Confirm end (its version 1 trailer starts here).
inline constexpr size_t kSmcrBodyEnd = kAcceptConfirmSize - kTrailerSize;  // 64
// Proposal: the IP area starts at kProposalBaseSize + the offset found here.
inline constexpr size_t kOffIpareaOffset = 38;
// Decline.
inline constexpr size_t kOffDeclPeerId = 8;
inline constexpr size_t kOffDiagnosis = 16;

const char* type_name(Type type);
bool known_type(uint8_t type);

// Checks what every message shares: header size, eyecatcher, type, and that the span holds
// exactly the message its length field announces. Fills *hdr (all of it, whatever the
// version).
bool check_frame(std::span<const uint8_t> msg, Type expected, Header* hdr, std::string* error);
bool check_trailer(std::span<const uint8_t> msg, std::string* error);
// Header byte 7 of a message, split as Header keeps it.
void split_type_byte(uint8_t byte7, Header* hdr);

// Writes the header; byte7 is the version nibble and the type bits, as on the wire.
void put_header(uint8_t* p, Type type, size_t length, uint8_t byte7);
void put_trailer(std::vector<uint8_t>& out);

void put_local(uint8_t* p, const LocalInfo& local);
void get_local(const uint8_t* p, LocalInfo* local);

// A Proposal's IP area (kIpAreaSize bytes, then 17 per IPv6 prefix) at `ip`. put asserts
// that the values fit. get reads the prefix count the caller has checked (at most
// kMaxIpv6Prefixes, all within the message) and checks the prefix lengths.
uint8_t ipv6_prefix_count(const uint8_t* ip);
void put_ip_area(uint8_t* ip, uint32_t subnet_be, uint8_t prefix_len,
                 std::span<const Ipv6Prefix> ipv6_prefixes);
bool get_ip_area(const uint8_t* ip, uint32_t* subnet_be, uint8_t* prefix_len,
                 std::vector<Ipv6Prefix>* ipv6_prefixes, std::string* error);

// The SMC-R fields of an Accept/Confirm after the local block (QP, RMB, token, sizes, PSN),
// identical in versions 1 and 2. put asserts that they fit their wire fields; get checks
// what the peer's data path would trip on (MTU code, RMBE index) and leaves
// first_contact alone.
void put_smcr_fields(uint8_t* p, const AcceptConfirm& m);
bool get_smcr_fields(const uint8_t* p, AcceptConfirm* m, std::string* error);

}  // namespace smcpre::core::clc::frame
