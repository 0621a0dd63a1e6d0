#!/usr/bin/env python3
"""Extracts fuzzing seeds from a capture of a real SMC-R handshake and connection.

Usage: tests/fuzz/extract_seeds.py CAPTURE [CORPUS_DIR]

CAPTURE is a pcap or pcapng file (read with tshark) holding an SMC-R connection: the CLC
messages on its TCP connection and the RoCEv2 (UDP port 4791) SENDs carrying LLC and CDC
messages. The committed kernel-* seeds in tests/fuzz/corpus come from a capture of the
Linux kernel's SMC-Rv2 handshake over Soft-RoCE (two kernels, one connection, a few bytes
each way, then close). Written per harness, into CORPUS_DIR (default: the corpus beside
this script):
  clc/kernel-*         each CLC message as sent
  clc_stream/kernel-*  each side's CLC byte stream, as fuzz_clc_stream reads it
  cdc/kernel-*         each CDC message (RoCE payload after the BTH, ICRC removed)
  llc/kernel-*         each LLC message
  cursor/kernel-*      each side's CDC sequence as a connection, for fuzz_cursor
The seeds from smcpre's own encoders are written by write_seeds (see scripts/fuzz).
"""
import os
import struct
import subprocess
import sys

EYECATCHER = bytes.fromhex("e2d4c3d9")
CLC_TYPES = {1: "proposal", 2: "accept", 3: "confirm", 4: "decline"}
ROCE_PORT = "4791"
BTH_SIZE = 12
DETH_SIZE = 8
ICRC_SIZE = 4
# IBA opcodes of a SEND that carries a whole message: RC and UD "SEND Only" (UD adds a
# DETH after the BTH). Other packets (RDMA WRITEs, ACKs) carry no SMC control message.
RC_SEND_ONLY = 0x04
UD_SEND_ONLY = 0x64
CDC_TYPE = 0xFE


def packets(capture):
    """(source, destination, 'tcp'|'roce', payload bytes) per packet with a payload."""
    fields = ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "udp.srcport", "udp.dstport",
              "tcp.payload", "udp.payload"]
    cmd = ["tshark", "-r", capture, "-T", "fields", "-E", "separator=/t"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        src, tsport, dst, tdport, usport, udport, tcp_hex, udp_hex = (line.split("\t") + [""] * 8)[:8]
        if tcp_hex:
            yield f"{src}:{tsport}", f"{dst}:{tdport}", "tcp", bytes.fromhex(tcp_hex.replace(":", ""))
        elif udp_hex and udport == ROCE_PORT:
            yield f"{src}:{usport}", f"{dst}:{udport}", "roce", bytes.fromhex(udp_hex.replace(":", ""))


def roce_message(payload):
    """The SMC message a RoCEv2 SEND Only packet carries, or None."""
    if len(payload) < BTH_SIZE + ICRC_SIZE:
        return None
    opcode = payload[0]
    if opcode == RC_SEND_ONLY:
        start = BTH_SIZE
    elif opcode == UD_SEND_ONLY:
        start = BTH_SIZE + DETH_SIZE
    else:
        return None
    return payload[start:len(payload) - ICRC_SIZE]


def split_clc(stream):
    """The CLC messages at the start of a TCP byte stream (by their header lengths)."""
    messages = []
    while len(stream) >= 8 and stream[:4] == EYECATCHER:
        length = struct.unpack(">H", stream[5:7])[0]
        if length < 8 or length > len(stream):
            break
        messages.append(stream[:length])
        stream = stream[length:]
    return messages


def write(corpus, harness, name, data):
    directory = os.path.join(corpus, harness)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def rmbe_size_code(accept_confirm):
    """The RMBE size code (high nibble of byte 50) of a CLC Accept or Confirm."""
    return accept_confirm[50] >> 4


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    capture = sys.argv[1]
    corpus = sys.argv[2] if len(sys.argv) == 3 else os.path.join(os.path.dirname(__file__), "corpus")

    streams = {}  # (src, dst) -> TCP bytes in order
    roce = []     # (src host, message)
    for src, dst, kind, payload in packets(capture):
        if kind == "tcp":
            streams.setdefault((src, dst), bytearray()).extend(payload)
        else:
            message = roce_message(payload)
            if message:
                roce.append((src.split(":")[0], message))

    # Which host is which: the client sends the Proposal, the server the Accept.
    role = {}
    codes = {}  # host -> its RMBE size code, from its Accept or Confirm
    counts = {}
    for (src, _), stream in streams.items():
        messages = split_clc(bytes(stream))
        if not messages:
            continue
        side = "client" if messages[0][4] == 1 else "server"
        role[src.split(":")[0]] = side
        write(corpus, "clc_stream", f"kernel-{side}-stream", b"\x00" + stream)
        for m in messages:
            kind = CLC_TYPES.get(m[4], f"type{m[4]}")
            version = m[7] >> 4
            write(corpus, "clc", f"kernel-v{version}-{kind}", m)
            counts["clc"] = counts.get("clc", 0) + 1
            if kind in ("accept", "confirm") and len(m) > 50:
                codes[src.split(":")[0]] = rmbe_size_code(m)

    cdcs = {}  # sending host -> its CDC messages in order
    for n, (host, message) in enumerate(roce, 1):
        side = role.get(host, host)
        if message[0] == CDC_TYPE:
            cdcs.setdefault(host, []).append(message)
            write(corpus, "cdc", f"kernel-{side}-cdc-{len(cdcs[host]):02d}", message)
            counts["cdc"] = counts.get("cdc", 0) + 1
        else:
            write(corpus, "llc", f"kernel-{side}-llc-{n:02d}-type-{message[0]:02x}", message)
            counts["llc"] = counts.get("llc", 0) + 1

    # fuzz_cursor: the receiver's view of one side's CDCs. Header: RMBE size codes (ours
    # low nibble, the sender's high), both streams starting at 0; each record lets our
    # reader consume everything and our writer fill the sender's ring.
    for host, messages in cdcs.items():
        receivers = [h for h in codes if h != host]
        if host not in codes or not receivers:
            continue
        header = bytes([codes[receivers[0]] | codes[host] << 4]) + bytes(12)
        records = b"".join(b"\xff" * 8 + m for m in messages if len(m) == 44)
        write(corpus, "cursor", f"kernel-{role.get(host, host)}-cdcs", header + records)
        counts["cursor"] = counts.get("cursor", 0) + 1

    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing found")


if __name__ == "__main__":
    main()
