#include "core/wire/decline.h"

#include <array>

namespace smcpre::core {
namespace {

struct Entry {
  DeclineCode code;
  const char* name;
  const char* explanation;
};

// Kept in ascending code order (all_decline_codes() promises that order).
constexpr std::array kTable{
    Entry{DeclineCode::kMem, "MEM", "insufficient memory"},
    Entry{DeclineCode::kTimeoutCl, "TIMEOUT_CL", "timeout waiting for LLC CONFIRM LINK"},
    Entry{DeclineCode::kTimeoutAl, "TIMEOUT_AL", "timeout waiting for LLC ADD LINK"},
    Entry{DeclineCode::kCnfErr, "CNFERR", "configuration error"},
    Entry{DeclineCode::kPeerNoSmc, "PEERNOSMC",
          "peer did not indicate SMC (it answered with application data, or is no smcpre)"},
    Entry{DeclineCode::kIpsec, "IPSEC", "IPsec in use on the connection"},
    Entry{DeclineCode::kNoSmcDev, "NOSMCDEV", "no SMC device (SMCPRE_DEVICE=none)"},
    Entry{DeclineCode::kNoSmcRDev, "NOSMCRDEV",
          "no RDMA (SMC-R) port carries the route, or the device could not be opened"},
    Entry{DeclineCode::kNoV2Ext, "NOV2EXT", "the peer's Proposal has no version 2 extension"},
    Entry{DeclineCode::kNoUeid, "NOUEID", "no user-defined EID in common"},
    Entry{DeclineCode::kReleaseErr, "RELEASEERR", "the SMC version 2 release was not agreed on"},
    Entry{DeclineCode::kMaxConnErr, "MAXCONNERR",
          "the connections per link group were not agreed on"},
    Entry{DeclineCode::kMaxLinkErr, "MAXLINKERR", "the links per link group were not agreed on"},
    Entry{DeclineCode::kModeUnsupp, "MODEUNSUPP", "SMC modes do not match"},
    Entry{DeclineCode::kRmbeEc, "RMBE_EC", "peer uses RMBE eyecatchers (unsupported)"},
    Entry{DeclineCode::kOptUnsupp, "OPTUNSUPP", "unsupported socket option in use"},
    Entry{DeclineCode::kDiffPrefix, "DIFFPREFIX",
          "the client's subnet/prefix differs from the server's"},
    Entry{DeclineCode::kNoActLink, "NOACTLINK", "no active link in the link group"},
    Entry{DeclineCode::kNoSrvLink, "NOSRVLINK", "server's link not found"},
    Entry{DeclineCode::kVersMismat, "VERSMISMAT", "SMC version mismatch"},
    Entry{DeclineCode::kSyncErr, "SYNCERR",
          "link group out of synchronization (the peer names one we do not have)"},
    Entry{DeclineCode::kPeerDecl, "PEERDECL", "the peer declined"},
    Entry{DeclineCode::kIntErr, "INTERR", "internal error"},
    Entry{DeclineCode::kErrRtok, "ERR_RTOK", "internal error: the peer's RMB (rkey) is not usable"},
    Entry{DeclineCode::kErrRdyLnk, "ERR_RDYLNK",
          "internal error: the link could not be made ready"},
    Entry{DeclineCode::kErrRegRmb, "ERR_REGRMB", "internal error: RMB registration failed"},
    Entry{DeclineCode::kPeerCred, "PEER_CRED",
          "shm: the attaching process's credentials or nonce were rejected"},
    Entry{DeclineCode::kHandshakeTimeout, "HANDSHAKE_TIMEOUT",
          "no CLC message within SMCPRE_HANDSHAKE_TIMEOUT_MS"},
    Entry{DeclineCode::kNonBlocking, "NON_BLOCKING",
          "non-blocking socket (sent by development versions before event-driven sockets worked)"},
    Entry{DeclineCode::kProtocol, "PROTOCOL", "malformed CLC message"},
    Entry{DeclineCode::kDisabled, "DISABLED", "smcpre disabled by configuration"},
    Entry{DeclineCode::kLateProposal, "LATE_PROPOSAL",
          "the server application wrote before the Proposal arrived"},
    Entry{DeclineCode::kPolicy, "POLICY", "a rule of the policy file (SMCPRE_CONFIG) says tcp"},
    Entry{DeclineCode::kPeerUnknown, "PEER_UNKNOWN",
          "client: not proposed, the destination is not known to run smcpre (no published listener "
          "on this host, no SMCPRE_PEERS or policy match)"},
    Entry{DeclineCode::kExcluded, "EXCLUDED",
          "client: not proposed, the destination port is in SMCPRE_EXCLUDE"},
    Entry{DeclineCode::kNoFds, "NO_FDS",
          "file descriptors short: smcpre's share of RLIMIT_NOFILE (1/16) is in use, or the "
          "application is within that share of its limit"},
    Entry{DeclineCode::kRendezvousFull, "RENDEZVOUS_FULL",
          "shm: the client's rendezvous hello was dropped, its uid holding too many pending "
          "ones (16 per uid, 256 in all)"},
    Entry{DeclineCode::kPendingFull, "PENDING_FULL",
          "server: the client's address has too many handshakes waiting for their Confirm "
          "(128 per address, 512 in all; of them new link groups: 4 per address, 8 in all)"},
};

const Entry* find(uint32_t code) {
  for (const Entry& e : kTable) {
    if (static_cast<uint32_t>(e.code) == code) return &e;
  }
  return nullptr;
}

}  // namespace

const char* decline_name(uint32_t code) {
  const Entry* e = find(code);
  return e ? e->name : "UNKNOWN";
}

const char* decline_explanation(uint32_t code) {
  const Entry* e = find(code);
  return e ? e->explanation : "unknown reason code";
}

const std::vector<uint32_t>& all_decline_codes() {
  static const std::vector<uint32_t> codes = [] {
    std::vector<uint32_t> v;
    v.reserve(kTable.size());
    for (const Entry& e : kTable) v.push_back(static_cast<uint32_t>(e.code));
    return v;
  }();
  return codes;
}

}  // namespace smcpre::core
