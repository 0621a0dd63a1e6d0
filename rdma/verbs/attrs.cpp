// QP transition attributes, the status mapping and the async event policy of the verbs
// device (see rdma/verbs/attrs.h).
#include "rdma/verbs/attrs.h"

#include <algorithm>
#include <cstring>

namespace smcpre::rdma {
namespace {

constexpr uint32_t kMax24 = 0xffffff;
// IB's local ACK timeout, RNR timer and retry fields are 5, 5 and 3 bits wide.
constexpr uint8_t kMax5Bits = 31;
constexpr uint8_t kMax3Bits = 7;
// For RoCEv2 this is the IP TTL; SMC-R peers are normally one subnet apart, but a routed
// path must not be cut short.
constexpr uint8_t kHopLimit = 64;

bool valid_mtu(PathMtu mtu) {
  const auto code = static_cast<uint8_t>(mtu);
  return code >= static_cast<uint8_t>(PathMtu::k256) &&
         code <= static_cast<uint8_t>(PathMtu::k4096);
}

bool fail(std::string* error, std::string text) {
  *error = std::move(text);
  return false;
}

}  // namespace

bool validate_qp_config(const QpConfig& config, std::string* error) {
  if (config.send_depth == 0 || config.recv_depth == 0) {
    return fail(error, "queue depths must be positive");
  }
  if (config.retry_count > kMax3Bits || config.rnr_retry > kMax3Bits) {
    return fail(error, "retry_count and rnr_retry must be 0..7");
  }
  if (config.timeout > kMax5Bits || config.min_rnr_timer > kMax5Bits) {
    return fail(error, "timeout and min_rnr_timer must be 0..31");
  }
  if (!valid_mtu(config.mtu)) {
    return fail(error, "MTU code " + std::to_string(static_cast<int>(config.mtu)) +
                           " is not an IB path MTU (1..5)");
  }
  return true;
}

QpTransition init_attrs(uint8_t port) {
  QpTransition t{};
  t.attr.qp_state = IBV_QPS_INIT;
  t.attr.pkey_index = 0;
  t.attr.port_num = port;
  // SMC-R only ever WRITEs into the peer's RMB and SENDs; no READs or atomics.
  t.attr.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  t.mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
  return t;
}

std::optional<QpTransition> rtr_attrs(const QpEndpoint& remote, PathMtu local_mtu,
                                      const QpConfig& config, uint8_t port, int gid_index,
                                      std::string* error) {
  if (remote.qp_num > kMax24) {
    fail(error, "peer QP number " + std::to_string(remote.qp_num) + " exceeds 24 bits");
    return std::nullopt;
  }
  // QP 0 and 1 are the subnet management and general services QPs, never an RC peer.
  if (remote.qp_num < 2) {
    fail(error, "peer QP number " + std::to_string(remote.qp_num) + " is a special QP");
    return std::nullopt;
  }
  if (remote.psn > kMax24) {
    fail(error, "peer PSN " + std::to_string(remote.psn) + " exceeds 24 bits");
    return std::nullopt;
  }
  if (!valid_mtu(remote.mtu)) {
    fail(error, "peer MTU code " + std::to_string(static_cast<int>(remote.mtu)) +
                    " is not an IB path MTU (1..5)");
    return std::nullopt;
  }
  if (std::all_of(remote.gid.begin(), remote.gid.end(), [](uint8_t b) { return b == 0; })) {
    fail(error, "peer GID is zero");
    return std::nullopt;
  }
  if (!valid_mtu(local_mtu) || !valid_mtu(config.mtu)) {
    fail(error, "local or configured MTU code is not an IB path MTU (1..5)");
    return std::nullopt;
  }
  if (gid_index < 0 || gid_index > 255 || port == 0 || config.min_rnr_timer > kMax5Bits) {
    fail(error, "invalid local GID index, port or RNR timer");
    return std::nullopt;
  }

  QpTransition t{};
  t.attr.qp_state = IBV_QPS_RTR;
  t.attr.path_mtu = static_cast<ibv_mtu>(
      std::min({static_cast<uint8_t>(local_mtu), static_cast<uint8_t>(config.mtu),
                static_cast<uint8_t>(remote.mtu)}));
  t.attr.dest_qp_num = remote.qp_num;
  t.attr.rq_psn = remote.psn;
  // SMC-R issues no RDMA READs or atomics: the smallest responder resources suffice.
  t.attr.max_dest_rd_atomic = 1;
  t.attr.min_rnr_timer = config.min_rnr_timer;
  // RoCE addresses by GID only: the kernel resolves the next hop's MAC from it.
  t.attr.ah_attr.is_global = 1;
  std::memcpy(t.attr.ah_attr.grh.dgid.raw, remote.gid.data(), remote.gid.size());
  t.attr.ah_attr.grh.sgid_index = static_cast<uint8_t>(gid_index);
  t.attr.ah_attr.grh.hop_limit = kHopLimit;
  t.attr.ah_attr.port_num = port;
  t.mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
           IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  return t;
}

QpTransition rts_attrs(uint32_t psn, const QpConfig& config) {
  QpTransition t{};
  t.attr.qp_state = IBV_QPS_RTS;
  t.attr.timeout = config.timeout;
  t.attr.retry_cnt = config.retry_count;
  t.attr.rnr_retry = config.rnr_retry;
  t.attr.sq_psn = psn & kMax24;
  t.attr.max_rd_atomic = 1;
  t.mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
           IBV_QP_MAX_QP_RD_ATOMIC;
  return t;
}

WcStatus map_wc_status(ibv_wc_status status) {
  switch (status) {
    case IBV_WC_SUCCESS:
      return WcStatus::kSuccess;
    case IBV_WC_LOC_LEN_ERR:
      return WcStatus::kLocalLengthError;
    case IBV_WC_LOC_PROT_ERR:
      return WcStatus::kLocalProtectionError;
    case IBV_WC_WR_FLUSH_ERR:
      return WcStatus::kFlushError;
    case IBV_WC_REM_ACCESS_ERR:
      return WcStatus::kRemoteAccessError;
    case IBV_WC_RETRY_EXC_ERR:
      return WcStatus::kRetryExceeded;
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return WcStatus::kRnrRetryExceeded;
    default:
      return WcStatus::kGeneralError;
  }
}

AsyncPolicy async_policy(ibv_event_type type) {
  using E = AsyncElement;
  using A = AsyncAction;
  switch (type) {
    // A QP the device itself found broken, or one whose CQ overran: its WRs must flush so
    // that the engine sees the link go down rather than wait on it forever.
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
      return {E::kQp, A::kQpError, false};
    case IBV_EVENT_CQ_ERR:
      return {E::kCq, A::kQpError, false};
    case IBV_EVENT_DEVICE_FATAL:
      return {E::kNone, A::kAllQpsError, false};
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      return {E::kQp, A::kNone, true};
    case IBV_EVENT_PATH_MIG_ERR:
      return {E::kQp, A::kNone, false};
    case IBV_EVENT_SRQ_LIMIT_REACHED:
      return {E::kSrq, A::kNone, true};
    case IBV_EVENT_SRQ_ERR:
      return {E::kSrq, A::kNone, false};
    case IBV_EVENT_WQ_FATAL:
      return {E::kWq, A::kNone, false};
    // A port going down is not acted on here: QPs on it fail by their own retry limits,
    // and a link on another port must not be torn down with them.
    case IBV_EVENT_PORT_ERR:
      return {E::kPort, A::kNone, false};
    case IBV_EVENT_PORT_ACTIVE:
    case IBV_EVENT_LID_CHANGE:
    case IBV_EVENT_PKEY_CHANGE:
    case IBV_EVENT_SM_CHANGE:
    case IBV_EVENT_CLIENT_REREGISTER:
    case IBV_EVENT_GID_CHANGE:
      return {E::kPort, A::kNone, true};
    default:  // an event newer than this code: worth a warning, nothing to act on
      return {E::kNone, A::kNone, false};
  }
}

}  // namespace smcpre::rdma
