// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0-only
/* The SMC TCP option, as real SMC peers exchange it, written and read by a
 * BPF_PROG_TYPE_SOCK_OPS program attached to a cgroup v2 (smcpre-bpf attach; doc/design.md
 * §2.9).
 *
 * It touches only sockets the preload marked in socket storage (bpf/smc_option.h) before
 * connect() or listen(); every other socket, of any process in the cgroup, is left as it
 * is. For a marked client socket it puts the option into the SYN and records whether the
 * SYN-ACK carried it. For a marked listener it echoes the option in the SYN-ACK only to a
 * SYN that carried it, and records for each accepted socket (which inherits the
 * listener's record: BPF_F_CLONE) whether its SYN did. The preload reads the record by
 * socket fd and decides: propose only when the SYN-ACK carried the option; expect CLC
 * only when the SYN did (Linux net/smc's rules).
 */
#include "bpf/smc_option.h"

#include <bpf/bpf_helpers.h>
#include <linux/bpf.h>
#include <linux/types.h>

/* Not in the UAPI headers a BPF program may include. */
#define SMCPRE_SOL_TCP 6
#define SMCPRE_TCP_SAVE_SYN 27
#define SMCPRE_TCPHDR_SYN 0x02
#define SMCPRE_TCPHDR_ACK 0x10
#define SMCPRE_ENOMSG 42

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  /* Socket storage is never preallocated; CLONE gives each accepted socket a copy of its
   * listener's record when the kernel creates it. */
  __uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
  __type(key, int);
  __type(value, struct smcpre_option_record);
} smcpre_opt SEC(".maps");

/* The socket's record, or null when the preload did not mark it (or something else wrote
 * a record we do not know). Never creates one. */
static __always_inline struct smcpre_option_record* record_of(struct bpf_sock_ops* skops) {
  struct bpf_sock* sk = skops->sk;
  if (!sk) return 0;
  struct smcpre_option_record* r = bpf_sk_storage_get(&smcpre_opt, sk, 0, 0);
  if (!r || r->magic != SMCPRE_OPTION_MAGIC) return 0;
  return r;
}

/* 1 if the packet in hand (flags 0) or the connection's SYN (BPF_LOAD_HDR_OPT_TCP_SYN)
 * carries the SMC option, 0 if not, -1 if the kernel cannot tell (no SYN kept). The
 * kernel finds an experimental option by a 2-byte magic only (the search key says length
 * 4); the rest of the ExID and the length are checked here. */
static __always_inline int carries_smc(struct bpf_sock_ops* skops, __u64 flags) {
  __u8 opt[8] = {SMCPRE_TCPOPT_EXP, 4, SMCPRE_SMC_EXID0, SMCPRE_SMC_EXID1};
  long n = bpf_load_hdr_opt(skops, opt, sizeof opt, flags);
  if (n == -SMCPRE_ENOMSG) return 0;
  if (n < 0) return -1;
  return n == SMCPRE_TCPOPT_SMC_LEN && opt[1] == SMCPRE_TCPOPT_SMC_LEN &&
         opt[4] == SMCPRE_SMC_EXID2 && opt[5] == SMCPRE_SMC_EXID3;
}

static __always_inline void want_hdr_opt_cb(struct bpf_sock_ops* skops, int on) {
  __u32 flags = skops->bpf_sock_ops_cb_flags;
  __u32 wanted =
      on ? flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG : flags & ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
  if (wanted != flags) bpf_sock_ops_cb_flags_set(skops, wanted);
}

/* Should the packet being built carry the option? Only SYNs: a marked client's own SYN
 * (its mark not withdrawn), and an armed listener's SYN-ACK to a SYN that carried it
 * (skops->sk is then the request, which has no storage: the listener's flag is the mark). */
static __always_inline int option_wanted(struct bpf_sock_ops* skops) {
  __u8 tcp_flags = skops->skb_tcp_flags;
  if (!(tcp_flags & SMCPRE_TCPHDR_SYN)) return 0;
  if (tcp_flags & SMCPRE_TCPHDR_ACK) return carries_smc(skops, BPF_LOAD_HDR_OPT_TCP_SYN) == 1;
  struct smcpre_option_record* r = record_of(skops);
  return r && r->want == SMCPRE_WANT_PROPOSE && r->state == SMCPRE_STATE_ARMED;
}

SEC("sockops")
int smcpre_option(struct bpf_sock_ops* skops) {
  struct smcpre_option_record* r;
  int seen;

  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
      /* One mark, one connect: a socket connected again without a new mark (after a
       * failed attempt) sends no option. */
      r = record_of(skops);
      if (r && r->want == SMCPRE_WANT_PROPOSE && r->state == SMCPRE_STATE_MARKED) {
        r->state = SMCPRE_STATE_ARMED;
        want_hdr_opt_cb(skops, 1);
      } else {
        want_hdr_opt_cb(skops, 0);
      }
      break;
    case BPF_SOCK_OPS_TCP_LISTEN_CB:
      r = record_of(skops);
      if (r && r->want == SMCPRE_WANT_LISTEN && r->state == SMCPRE_STATE_MARKED) {
        /* Accepted sockets keep their SYN, so that PASSIVE_ESTABLISHED can read it. */
        int one = 1;
        if (bpf_setsockopt(skops, SMCPRE_SOL_TCP, SMCPRE_TCP_SAVE_SYN, &one, sizeof one) == 0) {
          r->state = SMCPRE_STATE_ARMED;
          want_hdr_opt_cb(skops, 1);
        }
      }
      break;
    case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
      if (option_wanted(skops)) bpf_reserve_hdr_opt(skops, SMCPRE_TCPOPT_SMC_LEN, 0);
      break;
    case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
      if (option_wanted(skops)) {
        /* Filled byte by byte: an initializer would become a .rodata map of its own. */
        __u8 opt[SMCPRE_TCPOPT_SMC_LEN];
        opt[0] = SMCPRE_TCPOPT_EXP;
        opt[1] = SMCPRE_TCPOPT_SMC_LEN;
        opt[2] = SMCPRE_SMC_EXID0;
        opt[3] = SMCPRE_SMC_EXID1;
        opt[4] = SMCPRE_SMC_EXID2;
        opt[5] = SMCPRE_SMC_EXID3;
        bpf_store_hdr_opt(skops, opt, sizeof opt, 0);
      }
      break;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
      /* skb: the SYN-ACK. */
      r = record_of(skops);
      if (!r || r->want != SMCPRE_WANT_PROPOSE || r->state != SMCPRE_STATE_ARMED) break;
      seen = carries_smc(skops, 0);
      if (seen >= 0) r->state = seen ? SMCPRE_STATE_PEER_SMC : SMCPRE_STATE_PEER_NONE;
      want_hdr_opt_cb(skops, 0); /* no callback per segment from here on */
      break;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
      /* The accepted socket, with its listener's record and flags; its SYN was saved. */
      r = record_of(skops);
      if (!r || r->want != SMCPRE_WANT_LISTEN) break;
      seen = carries_smc(skops, BPF_LOAD_HDR_OPT_TCP_SYN);
      if (seen >= 0) r->state = seen ? SMCPRE_STATE_PEER_SMC : SMCPRE_STATE_PEER_NONE;
      want_hdr_opt_cb(skops, 0);
      break;
  }
  return 1;
}

/* The helpers used are not GPL-only; the dual license keeps it loadable if one becomes so. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
