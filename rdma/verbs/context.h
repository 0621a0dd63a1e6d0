// What the verbs device's objects share (device.cpp, qp.cpp): the opened device context and
// the protection domain that every memory region and queue pair holds a reference to, and
// what each of the two files offers the other. Internal to rdma/verbs/: nothing else
// includes it.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "rdma/device.h"

namespace smcpre::rdma::verbs {

class VerbsQp;

// The opened device context plus what open_verbs_device chose on it. It outlives the
// Device object as long as any PD, MR or QP on it lives.
struct Context {
  ibv_context* ctx = nullptr;
  uint8_t port = 1;
  int gid_index = 0;
  Gid gid{};
  // A RoCE v2 GID: routable (UDP/IP), what SMC-Rv2 runs on; RoCE v1 and InfiniBand GIDs
  // are SMC-R v1's.
  bool roce_v2 = false;
  Mac mac{};
  PathMtu active_mtu = PathMtu::k1024;
  std::string name;
  // Live QPs, so that the async event handler can put one (or all, when the device dies)
  // into error. A QP leaves before it is destroyed; the handler acts only on members.
  std::mutex qps_mutex;
  std::unordered_set<VerbsQp*> qps;

  ~Context();  // closes the device (device.cpp)
};

struct Pd {
  std::shared_ptr<Context> context;
  ibv_pd* pd = nullptr;
  ~Pd();  // deallocates the PD (device.cpp)
};

// "what: the error's text" (device.cpp).
std::string errno_text(const char* what, int err);

// qp.cpp: a new RC queue pair on `pd`, in INIT, with its CQs and completion channel (nullptr
// and *error on failure); and the async event handler's way to put one into error.
std::unique_ptr<QueuePair> create_verbs_qp(std::shared_ptr<Pd> pd, const QpConfig& config,
                                           std::string* error);
void force_qp_error(VerbsQp* qp, const char* why);

}  // namespace smcpre::rdma::verbs
