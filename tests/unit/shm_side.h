// One shm device side for the two-process tests (test_shm_device_qp.cpp and
// test_shm_device_rendezvous.cpp): a Side opened on its own shm device, the QP
// configuration they share, and the rendezvous in the order of the CLC exchange.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "rdma/device.h"
#include "tests/unit/two_process.h"

using namespace smcpre::rdma;

namespace {

// One process's side: device, PD, a WRITE target region, receive buffers, a QP.
struct Side : DeviceSide {
  bool open(const QpConfig& qp_config, std::vector<uint32_t> allowed_uids = {},
            size_t region_bytes = 64 * 1024, bool any_uid = false) {
    ShmOptions options;
    options.allowed_uids = allowed_uids;
    options.any_uid = any_uid;
    return open_on(open_shm_device(options, &error), qp_config, region_bytes);
  }
};

// The CLC order: the server's data goes out in Accept, the client connects and answers
// with Confirm, then the server connects.
inline bool rendezvous(Side& side, Channel& channel, Role role, PeerInfo* peer,
                       int timeout_ms = kTimeoutMs) {
  if (role == Role::kServer) {
    return channel.put(info_of(side)) && channel.get(peer) &&
           side.qp->connect(peer->endpoint, Role::kServer, timeout_ms, &side.error);
  }
  return channel.get(peer) &&
         side.qp->connect(peer->endpoint, Role::kClient, timeout_ms, &side.error) &&
         channel.put(info_of(side));
}

inline QpConfig small_config() {
  QpConfig c;
  c.send_depth = 64;
  c.recv_depth = 16;
  return c;
}

}  // namespace
