// Enterprise IDs (EIDs): the 32-byte names by which two SMC version 2 peers agree that
// they may use SMC with each other at all. A Linux client proposes SMC-Rv2 only when it
// has at least one user-defined EID (UEID, set over generic netlink), lists all of its
// UEIDs in the Proposal, and the server goes ahead only if it holds one of them too; the
// Accept and Confirm then carry the one they settled on (Linux net/smc/smc_clc.c).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace smcpre::core::clc {

inline constexpr size_t kEidSize = 32;
// At most this many UEIDs in a Proposal (Linux SMC_CLC_MAX_UEID; its table holds no more).
inline constexpr size_t kMaxUeids = 8;

// An EID as on the wire: the characters, then spaces up to 32 bytes.
struct Eid {
  std::array<uint8_t, kEidSize> bytes{};
  bool operator==(const Eid&) const = default;

  // For a user's setting (SMCPRE_EID, the policy file): 1 to 32 characters of A-Z, 0-9,
  // '.' and '-', the first a letter or digit; padded with spaces. Anything else (lower
  // case included: the kernel refuses it too, and both ends must hold the very same bytes)
  // gives nullopt and a one-line reason in *error (if not null).
  static std::optional<Eid> from_text(std::string_view text, std::string* error);

  // The characters without the padding, for logs (meaningful when valid_eid() holds).
  std::string_view text() const;
};

// Whether 32 bytes from a peer form an EID by the rule Linux applies when one is
// configured (smc_clc_ueid_valid): after the trailing padding, at least one character, the
// first a letter or digit, all of them A-Z, 0-9, '.' or '-'. Stricter than Linux in two
// corners nobody configures: only spaces pad (Linux trims any isspace()), and only ASCII
// counts (Linux's ctype also takes Latin-1 capitals). On false, sets a one-line reason.
bool valid_eid(const Eid& eid, std::string* error);

// The EID a server settles on, as Linux does for SMC-R (smc_clc_match_eid): the first of
// the client's UEIDs, in the client's order, that is also one of the server's; nullopt if
// they share none (the server then declines SMC-Rv2, Linux with NOUEID or by falling back
// to version 1). Bytes are compared exactly. Linux's other branch, the system EID, serves
// SMC-D only: for SMC-R it passes no system EID.
std::optional<Eid> match_eid(std::span<const Eid> client_ueids, std::span<const Eid> server_ueids);

}  // namespace smcpre::core::clc
