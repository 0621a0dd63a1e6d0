// Writes the seed inputs that smcpre's own encoders produce into a corpus directory, one
// subdirectory per harness (tests/fuzz/corpus/<harness>/ours-*): every CLC, CDC and LLC
// message type in its usual forms, of both versions, CLC byte streams as the stream
// harness reads them,
// and a connection's CDC sequence for the cursor harness. The Linux kernel's messages
// come from tests/fuzz/extract_seeds.py.
//   Usage: write_seeds CORPUS_DIR
#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "core/wire/bytes.h"
#include "core/wire/cdc.h"
#include "core/wire/clc.h"
#include "core/wire/clc_v2.h"
#include "core/wire/cursor.h"
#include "core/wire/decline.h"
#include "core/wire/llc.h"
#include "core/wire/llc_v2.h"

namespace cdc = smcpre::core::cdc;
namespace clc = smcpre::core::clc;
namespace llc = smcpre::core::llc;
namespace fs = std::filesystem;
using smcpre::core::DeclineCode;
using Bytes = std::vector<uint8_t>;

namespace {

fs::path corpus;

void write(const std::string& harness, const std::string& name, std::span<const uint8_t> bytes) {
  const fs::path dir = corpus / harness;
  fs::create_directories(dir);
  std::ofstream out(dir / ("ours-" + name), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "write_seeds: cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
}

Bytes cat(std::initializer_list<std::span<const uint8_t>> parts) {
  Bytes out;
  for (std::span<const uint8_t> p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

clc::LocalInfo local(uint8_t last) {
  clc::LocalInfo l;
  l.peer_id = {0x5e, 0x17, 0x02, 0x00, 0x0a, 0x4d, 0x00, last};
  l.gid = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, last};
  l.mac = {0x02, 0x00, 0x0a, 0x4d, 0x00, last};
  return l;
}

clc::Proposal proposal(size_t ipv6_count) {
  clc::Proposal m;
  m.local = local(2);
  m.ipv4_subnet_be = htonl(0x0a4d0000);  // 10.77.0.0/24
  m.ipv4_prefix_len = 24;
  for (size_t i = 0; i < ipv6_count; ++i) {
    clc::Ipv6Prefix p;
    p.prefix = {0xfd, 0x00, 0, 0, 0, 0, 0, static_cast<uint8_t>(i)};
    p.prefix_len = 64;
    m.ipv6_prefixes.push_back(p);
  }
  return m;
}

clc::AcceptConfirm accept_confirm(bool first_contact, uint8_t last) {
  clc::AcceptConfirm m;
  m.first_contact = first_contact;
  m.local = local(last);
  m.qp_num = 0x000011;
  m.rmb_rkey = 0x0000036b;
  m.conn_idx = 1;
  m.rmbe_alert_token = 0x1001;
  m.rmbe_size_code = clc::rmbe_size_code(512 * 1024);
  m.qp_mtu = 3;  // 1024
  m.rmb_vaddr = 0x7f43f26e046b0000;
  m.psn = 0xf10618;
  return m;
}

clc::Decline decline(DeclineCode reason) {
  clc::Decline m;
  m.peer_id = local(1).peer_id;
  m.diagnosis = static_cast<uint32_t>(reason);
  m.out_of_sync = reason == DeclineCode::kSyncErr;
  return m;
}

void write_clc() {
  for (size_t n : {0, 1, 8})
    write("clc", "proposal-ipv6-" + std::to_string(n), clc::encode(proposal(n)));
  write("clc", "accept-first-contact", clc::encode_accept(accept_confirm(true, 1)));
  write("clc", "accept", clc::encode_accept(accept_confirm(false, 1)));
  write("clc", "confirm-first-contact", clc::encode_confirm(accept_confirm(true, 2)));
  write("clc", "confirm", clc::encode_confirm(accept_confirm(false, 2)));
  write("clc", "decline-no-device", clc::encode(decline(DeclineCode::kNoSmcDev)));
  write("clc", "decline-out-of-sync", clc::encode(decline(DeclineCode::kSyncErr)));
}

// Version 2, as Linux sends it: the v2-only Proposal, versions 1 and 2 together, SMC-D
// offered too; Accept and Confirm with and without first contact; a Decline.
void write_clc_v2() {
  clc::ProposalV2 p;
  p.v2.ueids = {clc::Eid::from_text("SMCPRE-TEST", nullptr).value(),
                clc::Eid::from_text("OTHER.EID-2", nullptr).value()};
  p.v2.roce_gid = local(2).gid;
  p.v2.max_conns = 255;
  p.v2.max_links = 2;
  p.v2.feature_mask = clc::kFeatureEmulatedIsm;
  write("clc", "v2-proposal", clc::encode(p));
  const clc::Proposal v1 = proposal(1);
  p.v1_type = clc::SmcType::kR;
  p.local = v1.local;
  p.ipv4_subnet_be = v1.ipv4_subnet_be;
  p.ipv4_prefix_len = v1.ipv4_prefix_len;
  p.ipv6_prefixes = v1.ipv6_prefixes;
  write("clc", "v2-proposal-v1-too", clc::encode(p));
  p.v2_type = clc::SmcType::kBoth;
  write("clc", "v2-proposal-smcd-too", clc::encode(p));
  p.v2_type = clc::SmcType::kNone;
  write("clc", "v2-proposal-v1-only", clc::encode(p));

  clc::AcceptConfirmV2 a;
  a.smcr = accept_confirm(true, 1);
  a.eid = p.v2.ueids[0];
  a.fce.hostname = clc::hostname_field("server");
  a.fce.max_conns = 255;
  a.fce.max_links = 1;
  a.fce.feature_mask = clc::kFeatureEmulatedIsm;
  write("clc", "v2-accept-first-contact", clc::encode_accept(a));
  clc::AcceptConfirmV2 c = a;
  c.smcr = accept_confirm(true, 2);
  c.gids = {c.smcr.local.gid};
  write("clc", "v2-confirm-first-contact", clc::encode_confirm(c));
  a.smcr.first_contact = false;
  a.fce = {};
  write("clc", "v2-accept", clc::encode_accept(a));
  c.smcr.first_contact = false;
  c.fce = {};
  c.gids.clear();
  write("clc", "v2-confirm", clc::encode_confirm(c));

  clc::DeclineV2 d;
  d.peer_id = local(1).peer_id;
  d.diagnosis = static_cast<uint32_t>(DeclineCode::kPeerDecl);
  write("clc", "v2-decline", clc::encode(d));
}

void write_clc_stream() {
  const Bytes app = {'G', 'E', 'T', ' ', '/', '\r', '\n'};
  const Bytes whole = {0x00};         // no pieces: all at once
  const Bytes split = {0x02, 3, 50};  // 3 bytes, then 50, then the rest
  const Bytes kept = {0x08};          // all at once; the caller takes messages off itself
  const Bytes p = clc::encode(proposal(1));
  const Bytes a = clc::encode_accept(accept_confirm(true, 1));
  const Bytes c = clc::encode_confirm(accept_confirm(true, 2));
  const Bytes d = clc::encode(decline(DeclineCode::kNoSmcDev));
  write("clc_stream", "client-proposal-confirm", cat({whole, p, c}));
  write("clc_stream", "client-proposal-confirm-split", cat({split, p, c}));
  write("clc_stream", "client-proposal-confirm-kept", cat({kept, p, c}));
  write("clc_stream", "server-accept-then-data", cat({whole, a, app}));
  write("clc_stream", "server-decline-then-data", cat({split, d, app}));
  write("clc_stream", "partial-eyecatcher", cat({whole, Bytes(p.begin(), p.begin() + 4)}));
  write("clc_stream", "truncated-accept-then-data",
        cat({whole, Bytes(a.begin(), a.end() - 2), app}));
  write("clc_stream", "plain-data", cat({whole, app}));
}

void write_cdc() {
  std::array<uint8_t, cdc::kSize> out{};
  cdc::Message m;
  m.seq = 1;
  m.token = 0x1001;
  m.prod = {0, 4096};
  cdc::encode(m, out);
  write("cdc", "data", out);
  m.seq = 0xffff;
  m.prod = {0xffff, 100};
  m.cons = {0x1234, 65535};
  m.write_blocked = true;
  m.cons_curs_upd_req = true;
  cdc::encode(m, out);
  write("cdc", "blocked-wrapped", out);
  cdc::Message close;
  close.seq = 7;
  close.token = 0x1001;
  close.peer_done_writing = true;
  close.peer_conn_closed = true;
  cdc::encode(close, out);
  write("cdc", "close", out);
  close.peer_conn_abort = true;
  cdc::encode(close, out);
  write("cdc", "abort", out);
}

// The 44-byte messages, in either version; version 2's names start with "v2-".
void write_llc(llc::Version version) {
  const std::string v = version == llc::Version::kV2 ? "v2-" : "";
  std::array<uint8_t, llc::kSize> out{};
  llc::ConfirmLink cl;
  cl.mac = local(1).mac;
  cl.gid = local(1).gid;
  cl.qp_num = 0x11;
  cl.link_num = 1;
  cl.link_uid = 0x12345678;
  if (version == llc::Version::kV2) cl.max_conns = 255;
  llc::encode(cl, version, out);
  write("llc", v + "confirm-link", out);
  cl.response = true;
  llc::encode(cl, version, out);
  write("llc", v + "confirm-link-response", out);
  llc::TestLink tl;
  tl.user_data = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  llc::encode(tl, version, out);
  write("llc", v + "test-link", out);
  tl.response = true;
  llc::encode(tl, version, out);
  write("llc", v + "test-link-response", out);
  llc::DeleteLink dl;
  dl.all = true;
  dl.orderly = true;
  dl.link_num = 1;
  dl.reason = static_cast<uint32_t>(llc::DeleteReason::kProgramTerminated);
  llc::encode(dl, version, out);
  write("llc", v + "delete-link", out);
  llc::ConfirmRkey cr;
  cr.rkey = 0x36b;
  cr.vaddr = 0x7f43f26e046b0000;
  llc::encode(cr, version, out);
  write("llc", v + "confirm-rkey", out);
  cr.response = true;
  cr.negative = true;
  llc::encode(cr, version, out);
  write("llc", v + "confirm-rkey-negative", out);
}

// What only version 2 has: ADD LINK with rkeys and its refusal, DELETE RKEY with many
// rkeys and its answer, REQ ADD LINK.
void write_llc_v2() {
  Bytes message(llc::kV2MaxSize);
  const Bytes rkeys = {0, 0, 3, 0x6b, 0, 0, 5, 0x66, 0x7f, 0x43, 0xf2, 0x6e, 4, 0x6b, 0, 0,
                       0, 0, 3, 0x6c, 0, 0, 5, 0x67, 0x7f, 0x43, 0xf2, 0x6e, 5, 0x6b, 0, 0};
  llc::AddLinkV2 add;
  add.mac = local(1).mac;
  add.gid = local(1).gid;
  add.qp_num = 0x12;
  add.link_num = 2;
  add.qp_mtu = 3;
  add.initial_psn = 0x3e825a;
  add.has_extension = true;
  add.direct = true;
  add.target_gid = local(1).gid;
  add.rkey_count = 2;
  add.rkeys = rkeys;
  write("llc", "v2-add-link", std::span(message).first(llc::encode(add, message)));
  write("llc", "v2-add-link-reject",
        std::span(message).first(llc::encode(llc::add_link_reject(add), message)));
  Bytes keys(40);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = static_cast<uint8_t>(i);
  llc::DeleteRkeyV2 del;
  del.rkey_count = 10;
  del.rkeys = keys;
  write("llc", "v2-delete-rkey", std::span(message).first(llc::encode(del, message)));
  llc::DeleteRkeyV2 answer;
  answer.response = true;
  answer.negative = true;
  answer.rkey_count = 10;
  answer.invalid_count = 1;
  write("llc", "v2-delete-rkey-response", std::span(message).first(llc::encode(answer, message)));
  const Bytes gids(32, 0x0a);
  llc::ReqAddLinkV2 req;
  req.gid_count = 2;
  req.gids = gids;
  write("llc", "v2-req-add-link", std::span(message).first(llc::encode(req, message)));
}

// A connection with 64 KiB rings both ways whose streams start just before the u16 wrap
// of the wire cursor: the peer writes 20000 bytes per CDC, we read all of it and write
// 30000 bytes between its messages, and it reports having read them.
void write_cursor() {
  constexpr uint32_t kRing = 64 * 1024;
  const uint64_t start = uint64_t{0xfffe} * kRing;
  Bytes input(13, 0);
  input[0] = static_cast<uint8_t>(clc::rmbe_size_code(kRing) | clc::rmbe_size_code(kRing) << 4);
  for (size_t at : {1, 7}) {
    smcpre::core::wire::put_be16(&input[at], static_cast<uint16_t>(start >> 32));
    smcpre::core::wire::put_be32(&input[at + 2], static_cast<uint32_t>(start));
  }
  uint64_t peer_prod = start;
  uint64_t our_prod = start;
  for (uint16_t seq = 1; seq <= 12; ++seq) {
    std::array<uint8_t, 8> amounts{};
    smcpre::core::wire::put_be32(&amounts[0], 0xffffffff);  // read everything
    smcpre::core::wire::put_be32(&amounts[4], 30000);
    our_prod += 30000;
    peer_prod += 20000;
    cdc::Message m;
    m.seq = seq;
    m.token = 0x1001;
    m.prod = smcpre::core::to_wire(peer_prod, kRing);
    m.cons = smcpre::core::to_wire(our_prod, kRing);
    std::array<uint8_t, cdc::kSize> message{};
    cdc::encode(m, message);
    input.insert(input.end(), amounts.begin(), amounts.end());
    input.insert(input.end(), message.begin(), message.end());
  }
  write("cursor", "wrapping-connection", input);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_seeds CORPUS_DIR\n");
    return 2;
  }
  corpus = argv[1];
  write_clc();
  write_clc_v2();
  write_clc_stream();
  write_cdc();
  write_llc(llc::Version::kV1);
  write_llc(llc::Version::kV2);
  write_llc_v2();
  write_cursor();
  return 0;
}
