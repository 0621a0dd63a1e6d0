// SMC-Rv2's share of the CLC handshake: what version 2 adds to each message, and what the
// two ends agree on with it (doc/design.md §2.3.1). The version follows the device: a
// RoCE v2 GID speaks version 2, as the Linux kernel does over RoCE v2; shm (same host) and
// RoCE v1 GIDs keep version 1. Internal to the handshake, like handshake_common.h.
#pragma once

#include <cstdint>
#include <vector>

#include "config/config_types.h"
#include "core/datapath/link_group.h"
#include "core/wire/clc_v2.h"
#include "rdma/device.h"

namespace smcpre::core::handshake_detail {

// What smcpre offers per link group: one link (it never adds a second, and refuses the
// peer's ADD LINK), and at most this many connections (the kernel's SMC_CONN_PER_LGR_MAX).
inline constexpr uint8_t kV2MaxLinks = 1;
inline constexpr uint8_t kV2MaxConns = 255;
// The fewest connections per link group an end may ask for (SMC_CONN_PER_LGR_MIN).
inline constexpr uint8_t kV2MinConns = 16;

// Whether connections on `device` speak version 2.
inline bool speaks_v2(const rdma::Device& device) {
  return device.caps().roce_v2_gid;
}

// What a version 2 handshake settled: the EID, and on first contact the extension both
// ends send (release, limits, features).
struct V2Agreement {
  clc::Eid eid;
  clc::FirstContactExt fce;
};

// The link group terms a version 2 first contact settled (LLC version 2, the limits).
GroupTerms group_terms(const V2Agreement& agreed);

// The configured EIDs (SMCPRE_EID), as the wire carries them.
std::vector<clc::Eid> our_eids(const config::Config& config);

// The client's version 2 only Proposal: no version 1 part, our EIDs, the device's GID.
clc::ProposalV2 proposal_v2(const config::Config& config, const rdma::Device& device);

// Client: 0 if the server's Accept is one we can go on with (*agreed filled), else the
// reason to decline.
uint32_t check_accept_v2(const config::Config& config, const clc::AcceptConfirmV2& accept,
                         V2Agreement* agreed);
// Client: our Confirm, repeating what the server settled.
clc::AcceptConfirmV2 confirm_v2(const V2Agreement& agreed, const clc::AcceptConfirm& ours,
                                const rdma::Device& device);

// Server: 0 if the client's version 2 offer can be taken (*agreed filled), else the reason
// to decline.
uint32_t agree_v2(const config::Config& config, const clc::ProposalV2& proposal,
                  V2Agreement* agreed);
// Server: our Accept.
clc::AcceptConfirmV2 accept_v2(const V2Agreement& agreed, const clc::AcceptConfirm& ours);
// Server: 0 if the client's Confirm repeats what we settled, else the reason to decline.
uint32_t check_confirm_v2(const V2Agreement& agreed, const clc::AcceptConfirmV2& confirm);

}  // namespace smcpre::core::handshake_detail
