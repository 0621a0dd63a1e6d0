// SMC-Rv2's share of the CLC handshake (handshake_v2.h). The rules are the Linux kernel's
// (net/smc/smc_clc.c, af_smc.c), the peer smcpre is proven against: the server settles
// the EID (the client's first one it also holds), the release and the limits; the client
// takes them if they are within what it offered and repeats them in its Confirm, which the
// server checks.
#include "core/handshake_v2.h"

#include <sys/utsname.h>

#include <algorithm>
#include <string>

#include "config/log.h"
#include "core/wire/decline.h"

namespace smcpre::core::handshake_detail {

namespace {

constexpr uint32_t code(DeclineCode c) {
  return static_cast<uint32_t>(c);
}

// Our release within version 2: 1 ("v2.1"), which negotiates the limits.
constexpr uint8_t kOurRelease = clc::kRelease1;

// The first-contact extension as we send it, with what was agreed.
clc::FirstContactExt our_fce(uint8_t release, uint8_t max_conns, uint8_t max_links) {
  clc::FirstContactExt fce;
  fce.v2_direct = true;  // smcpre reaches peers in its own subnet only: no gateway
  fce.os_type = clc::kOsLinux;
  fce.release = release;
  utsname names{};
  fce.hostname = clc::hostname_field(uname(&names) == 0 ? names.nodename : "");
  // Release 0 has no limits in the extension: zero, as Linux sends them.
  if (release >= clc::kRelease1) {
    fce.max_conns = max_conns;
    fce.max_links = max_links;
  }
  fce.feature_mask = 0;  // no supplemental feature (they are SMC-D's)
  return fce;
}

bool is_ours(const config::Config& config, const clc::Eid& eid) {
  const auto eids = our_eids(config);
  return std::find(eids.begin(), eids.end(), eid) != eids.end();
}

}  // namespace

GroupTerms group_terms(const V2Agreement& agreed) {
  GroupTerms terms;
  terms.llc_version = llc::Version::kV2;
  if (agreed.fce.release >= clc::kRelease1) {
    terms.max_conns = agreed.fce.max_conns;
    terms.max_links = agreed.fce.max_links;
  }
  return terms;
}

std::vector<clc::Eid> our_eids(const config::Config& config) {
  std::vector<clc::Eid> eids;
  for (const std::string& text : config.eids) {
    // The configuration checked them by the same rule.
    if (auto eid = clc::Eid::from_text(text, nullptr)) eids.push_back(*eid);
  }
  return eids;
}

clc::ProposalV2 proposal_v2(const config::Config& config, const rdma::Device& device) {
  clc::ProposalV2 proposal;
  proposal.version = clc::kVersion2;
  // As the kernel over RoCE v2: version 2 only, no version 1 identity (zeroed).
  proposal.v1_type = clc::SmcType::kNone;
  proposal.v2_type = clc::SmcType::kR;
  proposal.v2.release = kOurRelease;
  proposal.v2.ueids = our_eids(config);
  proposal.v2.roce_gid = device.gid();
  proposal.v2.max_conns = kV2MaxConns;
  proposal.v2.max_links = kV2MaxLinks;
  proposal.v2.feature_mask = 0;
  return proposal;
}

uint32_t check_accept_v2(const config::Config& config, const clc::AcceptConfirmV2& accept,
                         V2Agreement* agreed) {
  if (!is_ours(config, accept.eid)) {
    SMC_LOG_WARN("client: the server settled on EID \"{}\", which we did not offer: declining",
                 accept.eid.text());
    return code(DeclineCode::kNoUeid);
  }
  agreed->eid = accept.eid;
  if (!accept.smcr.first_contact) return 0;
  const clc::FirstContactExt& fce = accept.fce;
  if (fce.release > kOurRelease) {
    SMC_LOG_WARN("client: the server chose release {}, above our {}: declining", fce.release,
                 kOurRelease);
    return code(DeclineCode::kReleaseErr);
  }
  if (fce.release >= clc::kRelease1) {
    if (fce.max_links < 1 || fce.max_links > kV2MaxLinks) {
      SMC_LOG_WARN("client: the server chose {} links per link group, we offered {}: declining",
                   fce.max_links, kV2MaxLinks);
      return code(DeclineCode::kMaxLinkErr);
    }
    if (fce.max_conns < kV2MinConns) {
      SMC_LOG_WARN("client: the server chose {} connections per link group: declining",
                   fce.max_conns);
      return code(DeclineCode::kMaxConnErr);
    }
  }
  agreed->fce = our_fce(fce.release, fce.max_conns, fce.max_links);
  return 0;
}

clc::AcceptConfirmV2 confirm_v2(const V2Agreement& agreed, const clc::AcceptConfirm& ours,
                                const rdma::Device& device) {
  clc::AcceptConfirmV2 confirm;
  confirm.version = clc::kVersion2;
  confirm.smcr = ours;
  confirm.eid = agreed.eid;
  if (ours.first_contact) {
    confirm.fce = agreed.fce;
    // The GIDs the link may use: ours has one.
    confirm.gids = {device.gid()};
  }
  return confirm;
}

uint32_t agree_v2(const config::Config& config, const clc::ProposalV2& proposal,
                  V2Agreement* agreed) {
  if (!clc::offers_r(proposal.v2_type)) {
    // A RoCE v2 device speaks version 2 only: the kernel's version 1 needs a RoCE v1 GID.
    SMC_LOG_INFO("server: client offers no SMC-Rv2 and our device has a RoCE v2 GID: declining");
    return code(DeclineCode::kVersMismat);
  }
  const auto ours = our_eids(config);
  const auto eid = clc::match_eid(proposal.v2.ueids, ours);
  if (!eid) {
    std::string listed;
    for (const std::string& text : config.eids) listed += (listed.empty() ? "" : ",") + text;
    SMC_LOG_INFO("server: no EID in common with the client (ours: {}): declining", listed);
    return code(DeclineCode::kNoUeid);
  }
  agreed->eid = *eid;
  const uint8_t release = std::min(proposal.v2.release, kOurRelease);
  uint8_t max_conns = kV2MaxConns;
  uint8_t max_links = kV2MaxLinks;
  if (release >= clc::kRelease1) {
    if (proposal.v2.max_links < 1) {
      SMC_LOG_INFO("server: client allows no link per link group: declining");
      return code(DeclineCode::kMaxLinkErr);
    }
    if (proposal.v2.max_conns < kV2MinConns) {
      SMC_LOG_INFO("server: client allows {} connections per link group: declining",
                   proposal.v2.max_conns);
      return code(DeclineCode::kMaxConnErr);
    }
    max_conns = std::min(proposal.v2.max_conns, kV2MaxConns);
    max_links = std::min(proposal.v2.max_links, kV2MaxLinks);
  }
  agreed->fce = our_fce(release, max_conns, max_links);
  return 0;
}

clc::AcceptConfirmV2 accept_v2(const V2Agreement& agreed, const clc::AcceptConfirm& ours) {
  clc::AcceptConfirmV2 accept;
  accept.version = clc::kVersion2;
  accept.smcr = ours;
  accept.eid = agreed.eid;
  if (ours.first_contact) accept.fce = agreed.fce;
  return accept;
}

uint32_t check_confirm_v2(const V2Agreement& agreed, const clc::AcceptConfirmV2& confirm) {
  if (confirm.eid != agreed.eid) {
    SMC_LOG_WARN("server: the client's Confirm names EID \"{}\", we settled on \"{}\": declining",
                 confirm.eid.text(), agreed.eid.text());
    return code(DeclineCode::kNoUeid);
  }
  if (!confirm.smcr.first_contact) return 0;
  const clc::FirstContactExt& fce = confirm.fce;
  if (fce.release > agreed.fce.release) {
    SMC_LOG_WARN("server: the client's Confirm says release {}, we chose {}: declining",
                 fce.release, agreed.fce.release);
    return code(DeclineCode::kReleaseErr);
  }
  if (agreed.fce.release >= clc::kRelease1) {
    if (fce.max_conns != agreed.fce.max_conns) {
      SMC_LOG_WARN(
          "server: the client's Confirm says {} connections per link group, we chose "
          "{}: declining",
          fce.max_conns, agreed.fce.max_conns);
      return code(DeclineCode::kMaxConnErr);
    }
    if (fce.max_links != agreed.fce.max_links) {
      SMC_LOG_WARN(
          "server: the client's Confirm says {} links per link group, we chose {}: "
          "declining",
          fce.max_links, agreed.fce.max_links);
      return code(DeclineCode::kMaxLinkErr);
    }
  }
  return 0;
}

}  // namespace smcpre::core::handshake_detail
