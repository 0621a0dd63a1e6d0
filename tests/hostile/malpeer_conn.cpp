// malpeer's connection on an established link: messages into the victim's receive ring,
// CDCs with our cursors, data into its RMB, what the victim sends taken in, the echo.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "malpeer.h"

namespace malpeer {

int MalPeer::take_messages(const std::function<void(const uint8_t*, uint32_t)>& take) {
  if (stop_receiving_) return 0;
  int n = 0;
  if (verbs_) {
    if (!verbs_->poll([&](const uint8_t* msg, uint32_t length) {
          ++n;
          take(msg, length);
        }) &&
        !link_down) {
      link_down = true;
      say("link-down%s", since_attack().c_str());
    }
    return n;
  }
  rdma::WorkCompletion wc[16];
  const char* violation = nullptr;
  n = rx_.poll(wc, &violation);
  for (int i = 0; i < n; ++i) {
    if (wc[i].status == rdma::WcStatus::kSuccess) take(buffers_[wc[i].wr_id], wc[i].byte_len);
    rx_.post(buffers_[wc[i].wr_id], kRingPayload, wc[i].wr_id);
  }
  return n;
}

bool MalPeer::send_raw(const uint8_t* msg, uint32_t length) {
  if (verbs_) {
    if (!verbs_->send(msg, length)) return false;
    ++sent_messages_;
    return true;
  }
  for (int attempt = 0; attempt < 2000; ++attempt) {
    bool notify = false;
    switch (tx_.send(msg, length, &notify)) {
      case RingSender::Result::kDelivered:
        ++sent_messages_;
        if (notify) notify_victim();
        return true;
      case RingSender::Result::kViolation:
        die("the victim posts more receives than its ring holds");
      case RingSender::Result::kNoReceive:
        pause_us(500);
        break;
    }
  }
  std::fprintf(stderr, "send_raw: no receive posted (victim posted %llu, sent %llu)\n",
               (unsigned long long)victim_ring_header()->posted,
               (unsigned long long)sent_messages_);
  return false;  // the victim stopped posting receives (its link is down)
}

cdc::Message MalPeer::cdc_now() const {
  cdc::Message m;
  m.seq = static_cast<uint16_t>(tx_seq_ + 1);
  m.token = victim_token_;
  m.prod = core::to_wire(tx_prod_, victim_rmb_size_);
  m.cons = core::to_wire(rx_cons_, kRmbSize);
  return m;
}

void MalPeer::send_cdc(const cdc::Message& m) {
  uint8_t out[cdc::kSize];
  cdc::encode(m, std::span<uint8_t, cdc::kSize>(out));
  tx_seq_ = m.seq;
  send_raw(out, sizeof out);
}

void MalPeer::send_update() {
  send_cdc(cdc_now());
}

size_t MalPeer::write_data(const uint8_t* data, size_t n) {
  n = std::min<size_t>(n, victim_rmb_size_ - (tx_prod_ - tx_cons_));
  const size_t written = n;
  while (n > 0) {
    const uint32_t offset = static_cast<uint32_t>(tx_prod_ % victim_rmb_size_);
    const size_t piece = std::min<size_t>(n, victim_rmb_size_ - offset);
    if (verbs_) {
      verbs_->write(offset, data, piece);
    } else {
      std::memcpy(victim_rmb_ + offset, data, piece);
    }
    tx_prod_ += piece;
    data += piece;
    n -= piece;
  }
  send_update();
  return written;
}

void MalPeer::handle(const uint8_t* msg, uint32_t length) {
  const std::span<const uint8_t> bytes(msg, length);
  std::string error;
  if (msg[0] == cdc::kType) {
    cdc::Message m;
    if (!cdc::decode(bytes, &m, &error)) return;
    if (const auto prod = core::from_wire(m.prod, rx_prod_, kRmbSize); prod && *prod > rx_prod_) {
      rx_prod_ = *prod;
    }
    if (const auto cons = core::from_wire(m.cons, tx_cons_, victim_rmb_size_);
        cons && *cons > tx_cons_ && *cons <= tx_prod_) {
      tx_cons_ = *cons;
    }
    if (m.peer_conn_abort && !victim_aborted) {
      victim_aborted = true;
      say("victim-abort%s", since_attack().c_str());
    }
    if (m.peer_conn_closed) victim_closed = true;
    return;
  }
  if (llc_type(msg[0]) == llc::Type::kTestLink) {
    llc::TestLink t;
    if (llc::decode(bytes, llc_version(), &t, &error) && !t.response) {
      t.response = true;
      uint8_t out[llc::kSize];
      llc::encode(t, llc_version(), std::span<uint8_t, llc::kSize>(out));
      send_raw(out, sizeof out);
    }
  }
}

void MalPeer::pump(int ms, const std::function<bool()>& until) {
  const int64_t deadline = deadline_after_ms(ms);
  while (now_ns() < deadline) {
    if (until && until()) return;
    drain_rendezvous();
    const int n =
        take_messages([this](const uint8_t* msg, uint32_t length) { handle(msg, length); });
    if (n == 0) pause_us(300);
  }
}

bool MalPeer::echo(size_t n, int timeout_ms) {
  std::vector<uint8_t> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<uint8_t>(i * 7 + (tx_prod_ & 0xff));
  const uint64_t expect = rx_cons_ + n;
  size_t sent = 0;
  std::vector<uint8_t> got;
  const int64_t deadline = deadline_after_ms(timeout_ms);
  while (got.size() < n && now_ns() < deadline && !victim_aborted && !link_down) {
    // Never more in flight than either ring holds.
    if (sent < n && tx_prod_ - rx_prod_ < victim_rmb_size_ / 2 && rx_prod_ - rx_cons_ == 0) {
      sent += write_data(data.data() + sent, std::min<size_t>(n - sent, victim_rmb_size_ / 4));
    }
    pump(20, [&] { return rx_prod_ > rx_cons_; });
    while (rx_cons_ < rx_prod_) {
      got.push_back(own_rmb()[rx_cons_ % kRmbSize]);
      ++rx_cons_;
    }
    send_update();
  }
  if (rx_cons_ != expect || got != data) {
    std::fprintf(stderr,
                 "echo: sent %zu of %zu, tx_prod %llu tx_cons %llu rx_prod %llu rx_cons %llu got "
                 "%zu, messages %llu\n",
                 sent, n, (unsigned long long)tx_prod_, (unsigned long long)tx_cons_,
                 (unsigned long long)rx_prod_, (unsigned long long)rx_cons_, got.size(),
                 (unsigned long long)sent_messages_);
    return false;
  }
  return true;
}

void MalPeer::close_orderly() {
  cdc::Message m = cdc_now();
  m.peer_done_writing = true;
  m.peer_conn_closed = true;
  send_cdc(m);
  pump(5000, [&] { return victim_closed || victim_aborted || link_down; });
  if (victim_closed) say("closed");
}

}  // namespace malpeer
