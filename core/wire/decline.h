// CLC Decline / fallback reason codes.
//
// The Linux values (net/smc/smc_clc.h) are used unchanged so that a peer, a packet capture
// and our own logs and statistics all name a reason the same way. smcpre's own reasons live
// in 0x0e......, a range Linux does not use.
#pragma once

#include <cstdint>
#include <vector>

namespace smcpre::core {

enum class DeclineCode : uint32_t {
  kMem = 0x01010000,
  kTimeoutCl = 0x02010000,
  kTimeoutAl = 0x02020000,
  kCnfErr = 0x03000000,
  kPeerNoSmc = 0x03010000,
  kIpsec = 0x03020000,
  kNoSmcDev = 0x03030000,
  kNoSmcRDev = 0x03030002,
  kNoV2Ext = 0x03030004,     // the peer's version 2 Proposal has no version 2 extension
  kNoUeid = 0x03030008,      // no user EID in common
  kReleaseErr = 0x03030009,  // the version 2 release could not be agreed on
  kMaxConnErr = 0x0303000a,  // the connections per link group could not be agreed on
  kMaxLinkErr = 0x0303000b,  // the links per link group could not be agreed on
  kModeUnsupp = 0x03040000,
  kRmbeEc = 0x03050000,
  kOptUnsupp = 0x03060000,
  kDiffPrefix = 0x03070000,
  kNoActLink = 0x030a0000,
  kNoSrvLink = 0x030b0000,
  kVersMismat = 0x030c0000,
  kSyncErr = 0x04000000,
  kPeerDecl = 0x05000000,
  kIntErr = 0x09990000,
  kErrRtok = 0x09990001,
  kErrRdyLnk = 0x09990002,
  kErrRegRmb = 0x09990003,
  // smcpre's own reasons.
  kPeerCred = 0x0e010000,          // shm peer credentials or nonce rejected
  kHandshakeTimeout = 0x0e020000,  // no CLC message within the handshake timeout
  kNonBlocking = 0x0e030000,       // sent by older smcpre versions (non-blocking socket)
  kProtocol = 0x0e040000,          // malformed CLC message
  kDisabled = 0x0e050000,          // smcpre disabled by configuration
  kLateProposal = 0x0e060000,      // server wrote before the Proposal arrived
  kPolicy = 0x0e070000,            // a policy rule (SMCPRE_CONFIG) says tcp
  kPeerUnknown = 0x0e080000,       // client: destination not known to run smcpre
  kExcluded = 0x0e090000,          // client: destination port in SMCPRE_EXCLUDE
  kNoFds = 0x0e0a0000,             // smcpre's share of RLIMIT_NOFILE is used up
  kRendezvousFull = 0x0e0b0000,    // shm: hello dropped, too many pending from its uid
  kPendingFull = 0x0e0c0000,       // server: too many handshakes pending from the client
};

// Short upper-case name ("MEM", "TIMEOUT_CL", "PEER_CRED", ...) for logs and statistics;
// "UNKNOWN" for a code not listed above (a peer may send codes we do not know).
const char* decline_name(uint32_t code);
// One line saying what the code means, e.g. "insufficient memory"; "unknown reason code"
// for a code not listed above.
const char* decline_explanation(uint32_t code);
// Every code listed above, in ascending order (for documentation and statistics tables).
const std::vector<uint32_t>& all_decline_codes();

inline const char* decline_name(DeclineCode code) {
  return decline_name(static_cast<uint32_t>(code));
}
inline const char* decline_explanation(DeclineCode code) {
  return decline_explanation(static_cast<uint32_t>(code));
}

}  // namespace smcpre::core
