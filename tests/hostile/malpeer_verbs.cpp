// malpeer's verbs side: the attacker's queue pair on a verbs device (Soft-RoCE in
// scripts/rxe-vm) through the engine's own device layer, for the protocol-level attacks.
#include <cerrno>
#include <cstring>

#include "malpeer.h"

namespace malpeer {

void VerbsSide::open(const std::string& name) {
  std::string error;
  device_ = rdma::open_verbs_device(name, 0, -1, &error);
  if (!device_) die("verbs device %s: %s", name.c_str(), error.c_str());
  pd_ = device_->alloc_pd(&error);
  if (!pd_) die("verbs PD: %s", error.c_str());
  rmb_ = pd_->register_memory(kRmbSize, &error);
  recv_ = pd_->register_memory(size_t{kRingDepth} * kRingPayload, &error);
  if (!rmb_ || !recv_) die("verbs memory: %s", error.c_str());
  rdma::QpConfig config;
  config.send_depth = 256;
  config.recv_depth = kRingDepth;
  config.max_inline = kRingPayload;
  qp_ = pd_->create_qp(config, &error);
  if (!qp_) die("verbs QP: %s", error.c_str());
  for (uint32_t i = 0; i < kRingDepth; ++i) post(i);
}

void VerbsSide::fill(clc::LocalInfo* local, clc::AcceptConfirm* confirm) const {
  local->gid = device_->gid();
  local->mac = device_->mac();
  const rdma::QpEndpoint ep = qp_->local_endpoint();
  confirm->qp_num = ep.qp_num;
  confirm->psn = ep.psn;
  confirm->qp_mtu = static_cast<uint8_t>(ep.mtu);
  confirm->rmb_rkey = rmb_->rkey();
  confirm->rmb_vaddr = rmb_->remote_addr();
}

void VerbsSide::connect(const clc::AcceptConfirm& accept, uint32_t victim_rmb_size) {
  std::string error;
  if (!qp_->connect(core::endpoint_of(accept), rdma::Role::kClient, 5000, &error)) {
    die("verbs connect: %s", error.c_str());
  }
  stage_ = pd_->register_memory(victim_rmb_size, &error);
  if (!stage_) die("verbs staging memory: %s", error.c_str());
  victim_addr_ = accept.rmb_vaddr;
  victim_rkey_ = accept.rmb_rkey;
}

bool VerbsSide::poll(const std::function<void(const uint8_t*, uint32_t)>& take) {
  rdma::WorkCompletion wc[16];
  int n;
  while ((n = qp_->poll_recv(wc)) > 0) {
    for (int i = 0; i < n; ++i) {
      if (wc[i].status != rdma::WcStatus::kSuccess) {
        broken_ = true;
        continue;
      }
      take(buffer(static_cast<uint32_t>(wc[i].wr_id)), wc[i].byte_len);
      post(static_cast<uint32_t>(wc[i].wr_id));
    }
  }
  reap_sends();
  return !broken_ && !qp_->in_error();
}

bool VerbsSide::send(const uint8_t* msg, uint32_t length) {
  for (int attempt = 0; attempt < 2000; ++attempt) {
    const int rc = qp_->post_send_inline(msg, length, 0, true);
    if (rc == 0) return true;
    if (rc != EAGAIN) return false;
    reap_sends();
    pause_us(500);
  }
  return false;
}

void VerbsSide::write(uint64_t offset, const uint8_t* data, size_t n) {
  auto* stage = static_cast<uint8_t*>(stage_->addr()) + offset;
  std::memcpy(stage, data, n);
  while (qp_->post_write(stage, static_cast<uint32_t>(n), stage_->lkey(), victim_addr_ + offset,
                         victim_rkey_, 0, false) == EAGAIN) {
    reap_sends();
    pause_us(100);
  }
}

uint8_t* VerbsSide::buffer(uint32_t index) {
  return static_cast<uint8_t*>(recv_->addr()) + size_t{index} * kRingPayload;
}

void VerbsSide::post(uint32_t index) {
  qp_->post_recv(buffer(index), kRingPayload, recv_->lkey(), index);
}

void VerbsSide::reap_sends() {
  rdma::WorkCompletion wc[16];
  int n;
  while ((n = qp_->poll_send(wc)) > 0) {
    for (int i = 0; i < n; ++i) broken_ |= wc[i].status != rdma::WcStatus::kSuccess;
  }
}

}  // namespace malpeer
