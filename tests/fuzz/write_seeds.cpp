// Writes the seed inputs that smcpre's own encoders produce into a corpus directory, one
// subdirectory per harness (tests/fuzz/corpus/<harness>/ours-*): every CLC, CDC and LLC
// message type in its usual forms, CLC byte streams as the stream harness reads them,
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
#include "core/wire/cursor.h"
#include "core/wire/decline.h"
#include "core/wire/llc.h"

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

void write_llc() {
  std::array<uint8_t, llc::kSize> out{};
  llc::ConfirmLink cl;
  cl.mac = local(1).mac;
  cl.gid = local(1).gid;
  cl.qp_num = 0x11;
  cl.link_num = 1;
  cl.link_uid = 0x12345678;
  llc::encode(cl, out);
  write("llc", "confirm-link", out);
  cl.response = true;
  llc::encode(cl, out);
  write("llc", "confirm-link-response", out);
  llc::TestLink tl;
  tl.user_data = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  llc::encode(tl, out);
  write("llc", "test-link", out);
  tl.response = true;
  llc::encode(tl, out);
  write("llc", "test-link-response", out);
  llc::DeleteLink dl;
  dl.all = true;
  dl.orderly = true;
  dl.link_num = 1;
  dl.reason = static_cast<uint32_t>(llc::DeleteReason::kProgramTerminated);
  llc::encode(dl, out);
  write("llc", "delete-link", out);
  llc::ConfirmRkey cr;
  cr.rkey = 0x36b;
  cr.vaddr = 0x7f43f26e046b0000;
  llc::encode(cr, out);
  write("llc", "confirm-rkey", out);
  cr.response = true;
  cr.negative = true;
  llc::encode(cr, out);
  write("llc", "confirm-rkey-negative", out);
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
  write_clc_stream();
  write_cdc();
  write_llc();
  write_cursor();
  return 0;
}
