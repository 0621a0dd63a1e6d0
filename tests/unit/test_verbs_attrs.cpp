// The verbs device's pure parts: QP transition attributes, the status mapping and the
// async event policy. No RDMA device is needed.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "rdma/verbs/attrs.h"

using namespace smcpre::rdma;

namespace {

QpEndpoint good_remote() {
  QpEndpoint ep;
  ep.gid = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 2};
  ep.mac = {2, 0, 0, 0, 0, 2};
  ep.qp_num = 0x123456;
  ep.psn = 0xabcdef;
  ep.mtu = PathMtu::k4096;
  return ep;
}

QpConfig config_with(PathMtu cap) {
  QpConfig c;
  c.mtu = cap;
  c.min_rnr_timer = 12;
  c.timeout = 14;
  c.retry_count = 6;
  c.rnr_retry = 3;
  return c;
}

// rtr_attrs' reason for rejecting `remote`, or "" if it was accepted.
std::string rejection(const QpEndpoint& remote) {
  std::string error;
  const auto t = rtr_attrs(remote, PathMtu::k1024, QpConfig{}, 1, 1, &error);
  return t ? std::string() : error;
}

}  // namespace

TEST_CASE("verbs attrs: INIT", "[verbs_attrs]") {
  const QpTransition t = init_attrs(2);
  CHECK(t.attr.qp_state == IBV_QPS_INIT);
  CHECK(t.attr.pkey_index == 0);
  CHECK(t.attr.port_num == 2);
  CHECK(t.attr.qp_access_flags == (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE));
  CHECK(t.mask == (IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
}

TEST_CASE("verbs attrs: RTR from a valid remote", "[verbs_attrs]") {
  const QpEndpoint remote = good_remote();
  const QpConfig config = config_with(PathMtu::k4096);
  std::string error;
  const auto t = rtr_attrs(remote, PathMtu::k2048, config, 3, 7, &error);
  REQUIRE(t);
  CHECK(error.empty());
  CHECK(t->attr.qp_state == IBV_QPS_RTR);
  CHECK(t->attr.path_mtu == IBV_MTU_2048);
  CHECK(t->attr.dest_qp_num == 0x123456);
  CHECK(t->attr.rq_psn == 0xabcdef);
  CHECK(t->attr.max_dest_rd_atomic == 1);
  CHECK(t->attr.min_rnr_timer == 12);
  CHECK(t->attr.ah_attr.is_global == 1);
  CHECK(std::memcmp(t->attr.ah_attr.grh.dgid.raw, remote.gid.data(), 16) == 0);
  CHECK(t->attr.ah_attr.grh.sgid_index == 7);
  CHECK(t->attr.ah_attr.grh.hop_limit == 64);
  CHECK(t->attr.ah_attr.grh.flow_label == 0);
  CHECK(t->attr.ah_attr.grh.traffic_class == 0);
  CHECK(t->attr.ah_attr.port_num == 3);
  CHECK(t->attr.ah_attr.dlid == 0);
  CHECK(t->attr.ah_attr.sl == 0);
  CHECK(t->attr.ah_attr.static_rate == 0);
  CHECK(t->mask == (IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                    IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER));
  // The largest legal values pass.
  QpEndpoint edge = remote;
  edge.qp_num = 0xffffff;
  edge.psn = 0xffffff;
  edge.mtu = PathMtu::k256;
  const auto e = rtr_attrs(edge, PathMtu::k4096, config, 1, 255, &error);
  REQUIRE(e);
  CHECK(e->attr.dest_qp_num == 0xffffff);
  CHECK(e->attr.rq_psn == 0xffffff);
  CHECK(e->attr.ah_attr.grh.sgid_index == 255);
}

TEST_CASE("verbs attrs: the path MTU is the smallest of port, cap and peer", "[verbs_attrs]") {
  const PathMtu all[] = {PathMtu::k256, PathMtu::k512, PathMtu::k1024, PathMtu::k2048,
                         PathMtu::k4096};
  for (PathMtu local : all) {
    for (PathMtu cap : all) {
      for (PathMtu peer : all) {
        QpEndpoint remote = good_remote();
        remote.mtu = peer;
        std::string error;
        const auto t = rtr_attrs(remote, local, config_with(cap), 1, 0, &error);
        REQUIRE(t);
        const auto expected =
            std::min({static_cast<int>(local), static_cast<int>(cap), static_cast<int>(peer)});
        CHECK(static_cast<int>(t->attr.path_mtu) == expected);
      }
    }
  }
}

TEST_CASE("verbs attrs: RTR rejects a bad remote with a reason", "[verbs_attrs]") {
  CHECK(rejection(good_remote()).empty());

  QpEndpoint r = good_remote();
  r.qp_num = 0x1000000;
  CHECK(rejection(r) == "peer QP number 16777216 exceeds 24 bits");
  r.qp_num = 0;
  CHECK(rejection(r) == "peer QP number 0 is a special QP");
  r.qp_num = 1;
  CHECK(rejection(r) == "peer QP number 1 is a special QP");

  r = good_remote();
  r.psn = 0x1000000;
  CHECK(rejection(r) == "peer PSN 16777216 exceeds 24 bits");
  r.psn = 0xffffffff;
  CHECK(rejection(r) == "peer PSN 4294967295 exceeds 24 bits");

  r = good_remote();
  r.mtu = static_cast<PathMtu>(0);
  CHECK(rejection(r) == "peer MTU code 0 is not an IB path MTU (1..5)");
  r.mtu = static_cast<PathMtu>(6);
  CHECK(rejection(r) == "peer MTU code 6 is not an IB path MTU (1..5)");
  r.mtu = static_cast<PathMtu>(0xff);
  CHECK(rejection(r) == "peer MTU code 255 is not an IB path MTU (1..5)");

  r = good_remote();
  r.gid = {};
  CHECK(rejection(r) == "peer GID is zero");
  r.gid[15] = 1;  // any nonzero byte makes a GID
  CHECK(rejection(r).empty());
}

TEST_CASE("verbs attrs: RTR rejects bad local data", "[verbs_attrs]") {
  const QpEndpoint remote = good_remote();
  std::string error;
  CHECK_FALSE(rtr_attrs(remote, static_cast<PathMtu>(0), QpConfig{}, 1, 0, &error));
  CHECK(error.find("MTU") != std::string::npos);
  QpConfig bad_cap;
  bad_cap.mtu = static_cast<PathMtu>(9);
  CHECK_FALSE(rtr_attrs(remote, PathMtu::k1024, bad_cap, 1, 0, &error));
  CHECK(error.find("MTU") != std::string::npos);
  error.clear();
  CHECK_FALSE(rtr_attrs(remote, PathMtu::k1024, QpConfig{}, 1, -1, &error));
  CHECK_FALSE(error.empty());
  CHECK_FALSE(rtr_attrs(remote, PathMtu::k1024, QpConfig{}, 1, 256, &error));
  CHECK_FALSE(rtr_attrs(remote, PathMtu::k1024, QpConfig{}, 0, 1, &error));
  QpConfig bad_timer;
  bad_timer.min_rnr_timer = 32;
  CHECK_FALSE(rtr_attrs(remote, PathMtu::k1024, bad_timer, 1, 1, &error));
}

TEST_CASE("verbs attrs: RTS", "[verbs_attrs]") {
  const QpConfig config = config_with(PathMtu::k1024);
  const QpTransition t = rts_attrs(0x654321, config);
  CHECK(t.attr.qp_state == IBV_QPS_RTS);
  CHECK(t.attr.sq_psn == 0x654321);
  CHECK(t.attr.timeout == 14);
  CHECK(t.attr.retry_cnt == 6);
  CHECK(t.attr.rnr_retry == 3);
  CHECK(t.attr.max_rd_atomic == 1);
  CHECK(t.mask == (IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                   IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC));
  // Only 24 bits of PSN exist on the wire.
  CHECK(rts_attrs(0xff123456, config).attr.sq_psn == 0x123456);
  // Defaults: retry forever on RNR, IB timeout code 15.
  const QpTransition d = rts_attrs(0, QpConfig{});
  CHECK(d.attr.rnr_retry == 7);
  CHECK(d.attr.retry_cnt == 7);
  CHECK(d.attr.timeout == 15);
}

TEST_CASE("verbs attrs: QP config validation", "[verbs_attrs]") {
  std::string error;
  CHECK(validate_qp_config(QpConfig{}, &error));
  CHECK(validate_qp_config(config_with(PathMtu::k256), &error));
  auto rejected = [](void (*change)(QpConfig&)) {
    QpConfig c;
    change(c);
    std::string reason;
    const bool ok = validate_qp_config(c, &reason);
    return !ok && !reason.empty();
  };
  CHECK(rejected([](QpConfig& c) { c.send_depth = 0; }));
  CHECK(rejected([](QpConfig& c) { c.recv_depth = 0; }));
  CHECK(rejected([](QpConfig& c) { c.retry_count = 8; }));
  CHECK(rejected([](QpConfig& c) { c.rnr_retry = 8; }));
  CHECK(rejected([](QpConfig& c) { c.timeout = 32; }));
  CHECK(rejected([](QpConfig& c) { c.min_rnr_timer = 32; }));
  CHECK(rejected([](QpConfig& c) { c.mtu = static_cast<PathMtu>(0); }));
  CHECK(rejected([](QpConfig& c) { c.mtu = static_cast<PathMtu>(6); }));
  // The largest legal field values pass.
  QpConfig top;
  top.retry_count = 7;
  top.rnr_retry = 7;
  top.timeout = 31;
  top.min_rnr_timer = 31;
  top.mtu = PathMtu::k4096;
  CHECK(validate_qp_config(top, &error));
}

// rdma/device.h's mapping of SMCPRE_IB_MTU, which sets QpConfig::mtu.
TEST_CASE("verbs attrs: path MTU from bytes", "[verbs_attrs]") {
  CHECK(path_mtu_at_most(256) == PathMtu::k256);
  CHECK(path_mtu_at_most(512) == PathMtu::k512);
  CHECK(path_mtu_at_most(1024) == PathMtu::k1024);
  CHECK(path_mtu_at_most(2048) == PathMtu::k2048);
  CHECK(path_mtu_at_most(4096) == PathMtu::k4096);
  // Anything else: the largest IB MTU not above it, never below 256.
  CHECK(path_mtu_at_most(0) == PathMtu::k256);
  CHECK(path_mtu_at_most(255) == PathMtu::k256);
  CHECK(path_mtu_at_most(511) == PathMtu::k256);
  CHECK(path_mtu_at_most(1500) == PathMtu::k1024);
  CHECK(path_mtu_at_most(4095) == PathMtu::k2048);
  CHECK(path_mtu_at_most(9000) == PathMtu::k4096);
  CHECK(path_mtu_at_most(65535) == PathMtu::k4096);
  CHECK(path_mtu_at_most(0xffffffff) == PathMtu::k4096);
}

TEST_CASE("verbs attrs: completion status mapping", "[verbs_attrs]") {
  CHECK(map_wc_status(IBV_WC_SUCCESS) == WcStatus::kSuccess);
  CHECK(map_wc_status(IBV_WC_LOC_LEN_ERR) == WcStatus::kLocalLengthError);
  CHECK(map_wc_status(IBV_WC_LOC_PROT_ERR) == WcStatus::kLocalProtectionError);
  CHECK(map_wc_status(IBV_WC_WR_FLUSH_ERR) == WcStatus::kFlushError);
  CHECK(map_wc_status(IBV_WC_REM_ACCESS_ERR) == WcStatus::kRemoteAccessError);
  CHECK(map_wc_status(IBV_WC_RETRY_EXC_ERR) == WcStatus::kRetryExceeded);
  CHECK(map_wc_status(IBV_WC_RNR_RETRY_EXC_ERR) == WcStatus::kRnrRetryExceeded);
  for (ibv_wc_status other :
       {IBV_WC_LOC_QP_OP_ERR, IBV_WC_MW_BIND_ERR, IBV_WC_BAD_RESP_ERR, IBV_WC_REM_INV_REQ_ERR,
        IBV_WC_REM_OP_ERR, IBV_WC_FATAL_ERR, IBV_WC_GENERAL_ERR, IBV_WC_TM_ERR}) {
    CHECK(map_wc_status(other) == WcStatus::kGeneralError);
  }
  // Every mapped status has a name (the one place names live: to_string).
  for (size_t i = 0; i < kWcStatusCount; ++i) {
    CHECK(std::string(to_string(static_cast<WcStatus>(i))) != "unknown status");
  }
}

TEST_CASE("verbs attrs: async event policy", "[verbs_attrs]") {
  struct Expect {
    ibv_event_type type;
    AsyncElement element;
    AsyncAction action;
    bool benign;
  };
  using E = AsyncElement;
  using A = AsyncAction;
  const Expect table[] = {
      {IBV_EVENT_CQ_ERR, E::kCq, A::kQpError, false},
      {IBV_EVENT_QP_FATAL, E::kQp, A::kQpError, false},
      {IBV_EVENT_QP_REQ_ERR, E::kQp, A::kQpError, false},
      {IBV_EVENT_QP_ACCESS_ERR, E::kQp, A::kQpError, false},
      {IBV_EVENT_COMM_EST, E::kQp, A::kNone, true},
      {IBV_EVENT_SQ_DRAINED, E::kQp, A::kNone, true},
      {IBV_EVENT_PATH_MIG, E::kQp, A::kNone, true},
      {IBV_EVENT_PATH_MIG_ERR, E::kQp, A::kNone, false},
      {IBV_EVENT_DEVICE_FATAL, E::kNone, A::kAllQpsError, false},
      {IBV_EVENT_PORT_ACTIVE, E::kPort, A::kNone, true},
      {IBV_EVENT_PORT_ERR, E::kPort, A::kNone, false},
      {IBV_EVENT_LID_CHANGE, E::kPort, A::kNone, true},
      {IBV_EVENT_PKEY_CHANGE, E::kPort, A::kNone, true},
      {IBV_EVENT_SM_CHANGE, E::kPort, A::kNone, true},
      {IBV_EVENT_SRQ_ERR, E::kSrq, A::kNone, false},
      {IBV_EVENT_SRQ_LIMIT_REACHED, E::kSrq, A::kNone, true},
      {IBV_EVENT_QP_LAST_WQE_REACHED, E::kQp, A::kNone, true},
      {IBV_EVENT_CLIENT_REREGISTER, E::kPort, A::kNone, true},
      {IBV_EVENT_GID_CHANGE, E::kPort, A::kNone, true},
      {IBV_EVENT_WQ_FATAL, E::kWq, A::kNone, false},
  };
  for (const Expect& e : table) {
    INFO("event " << ibv_event_type_str(e.type));
    const AsyncPolicy p = async_policy(e.type);
    CHECK(p.element == e.element);
    CHECK(p.action == e.action);
    CHECK(p.benign == e.benign);
  }
  // An event type this code does not know: warned about, nothing dereferenced or done.
  // (31 is within the enum's value range, so the cast is defined.)
  const AsyncPolicy unknown = async_policy(static_cast<ibv_event_type>(31));
  CHECK(unknown.element == AsyncElement::kNone);
  CHECK(unknown.action == AsyncAction::kNone);
  CHECK_FALSE(unknown.benign);
}
