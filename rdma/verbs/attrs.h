// The verbs device's pure parts: the attributes of each QP state transition built from CLC
// data and config, the completion-status mapping, and how each asynchronous event
// is treated. They touch no device, so they are unit-tested on any host.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <optional>
#include <string>

#include "rdma/device.h"

namespace smcpre::rdma {

// One ibv_modify_qp call: the attributes and the IBV_QP_* mask naming those that are set.
struct QpTransition {
  ibv_qp_attr attr;
  int mask;
};

// Rejects a QpConfig that verbs would refuse or silently misread (fields wider than the
// IB field they go into, empty queues, an MTU code outside 1..5).
bool validate_qp_config(const QpConfig& config, std::string* error);

// RESET -> INIT on `port`: the peer may RDMA WRITE into our regions, nothing else.
QpTransition init_attrs(uint8_t port);

// INIT -> RTR towards `remote` (as received in CLC Accept/Confirm: untrusted). The path MTU
// is the smallest of our port's active MTU, the configured cap and the peer's. Returns
// nullopt with a reason in *error when the remote endpoint or our own data is invalid.
std::optional<QpTransition> rtr_attrs(const QpEndpoint& remote, PathMtu local_mtu,
                                      const QpConfig& config, uint8_t port, int gid_index,
                                      std::string* error);

// RTR -> RTS with our initial send PSN (low 24 bits) and the configured retry behaviour.
// `config` must have passed validate_qp_config.
QpTransition rts_attrs(uint32_t psn, const QpConfig& config);

// A verbs completion status in the device interface's terms (whose to_string names it).
WcStatus map_wc_status(ibv_wc_status status);

// What an asynchronous event refers to (which member of ibv_async_event::element is set).
enum class AsyncElement : uint8_t { kNone, kQp, kCq, kSrq, kWq, kPort };

// What the handler does about an event besides logging and counting it.
enum class AsyncAction : uint8_t {
  kNone,
  kQpError,      // put the affected QP (for a CQ error: the QP using that CQ) into error
  kAllQpsError,  // put every QP of the device into error
};

struct AsyncPolicy {
  AsyncElement element;
  AsyncAction action;
  bool benign;  // expected in normal operation: logged at info, not warn
};

AsyncPolicy async_policy(ibv_event_type type);

}  // namespace smcpre::rdma
