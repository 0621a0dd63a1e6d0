/* The SMC TCP option program's one shared definition (doc/design.md §2.9): the record the
 * preload and the sock_ops program (bpf/smc_option.bpf.c) keep per socket in socket
 * storage, the option's bytes, and where smcpre-bpf pins the program and its map. Plain C
 * over <linux/types.h>: clang -target bpf compiles it into the program, the preload and
 * the tools include it from C++. It has no code; both sides must agree on every byte. */
#ifndef SMCPRE_BPF_SMC_OPTION_H
#define SMCPRE_BPF_SMC_OPTION_H

#include <linux/types.h>

/* Where smcpre-bpf pins the program and the map by default (SMCPRE_BPF_DIR). */
#define SMCPRE_BPF_DEFAULT_DIR "/sys/fs/bpf/smcpre"
#define SMCPRE_BPF_PROG_PIN "option_prog"
#define SMCPRE_BPF_MAP_PIN "option_map"
/* Object names as the kernel lists them (at most 15 characters). */
#define SMCPRE_BPF_PROG_NAME "smcpre_option"
#define SMCPRE_BPF_MAP_NAME "smcpre_opt"

/* The option real SMC peers put into SYN and SYN-ACK (Linux net/smc, z/OS): experimental
 * kind 254 (RFC 6994), length 6, ExID E2 D4 C3 D9 ("SMCR" in EBCDIC). */
#define SMCPRE_TCPOPT_EXP 254
#define SMCPRE_TCPOPT_SMC_LEN 6
#define SMCPRE_SMC_EXID0 0xE2
#define SMCPRE_SMC_EXID1 0xD4
#define SMCPRE_SMC_EXID2 0xC3
#define SMCPRE_SMC_EXID3 0xD9

/* A record starts with this; the program ignores, and the preload distrusts, any other
 * value (a record of another layout, or one some other process wrote). Bump it when the
 * layout or the meaning of a field changes. */
#define SMCPRE_OPTION_MAGIC 0x534d4f31u /* "SMO1" */

/* What the preload asks of the program for a socket, before connect() or listen(). */
enum smcpre_option_want {
  SMCPRE_WANT_NONE = 0,    /* nothing (a mark withdrawn) */
  SMCPRE_WANT_PROPOSE = 1, /* client: announce SMC in the SYN, record the SYN-ACK */
  SMCPRE_WANT_LISTEN = 2,  /* listener: echo SMC in SYN-ACKs to SYNs that carry it */
};

/* How far the program got with the socket. Only the program moves it past MARKED. */
enum smcpre_option_state {
  SMCPRE_STATE_MARKED = 0,    /* written by the preload; the program has not seen it */
  SMCPRE_STATE_ARMED = 1,     /* client: the SYN went out with the option; listener: it
                               * listens with the option armed (accepted sockets inherit
                               * this until their handshake is recorded) */
  SMCPRE_STATE_PEER_SMC = 2,  /* handshake done; the peer's SYN-ACK (client) or SYN
                               * (accepted socket) carried the option */
  SMCPRE_STATE_PEER_NONE = 3, /* handshake done; it did not */
};

struct smcpre_option_record {
  __u32 magic; /* SMCPRE_OPTION_MAGIC */
  __u8 want;   /* enum smcpre_option_want */
  __u8 state;  /* enum smcpre_option_state */
  __u8 zero[2];
};

#endif /* SMCPRE_BPF_SMC_OPTION_H */
