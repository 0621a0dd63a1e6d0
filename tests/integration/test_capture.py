#!/usr/bin/env python3
"""Wire fidelity: a packet capture of a preloaded transfer on lo decodes as SMC in tshark
(Wireshark's heuristic SMC-over-TCP dissector): CLC Proposal, Accept and Confirm; and the
kernel TCP connection carries nothing but that handshake -- no application payload."""

import ipaddress
import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lo_capture  # noqa: E402
from harness import MIB, SmcTestCase, app, main  # noqa: E402

CLC_PROPOSAL, CLC_ACCEPT, CLC_CONFIRM = 1, 2, 3


class CaptureTest(SmcTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tshark = shutil.which("tshark")
        if cls.tshark is None:
            raise unittest.SkipTest("tshark is not installed (as root: scripts/deps tshark)")
        if os.geteuid() != 0:
            raise unittest.SkipTest("capturing on lo needs root")

    def fields(self, pcap, display_filter, *names):
        return lo_capture.fields(self, self.tshark, pcap, display_filter, *names)

    def test_handshake_decodes_as_smc_and_carries_no_payload(self):
        size = 4 * MIB
        srv, port = self.start_server("tcpapp", ["--mode", "echo", "--bytes", str(size)])
        cap, pcap = lo_capture.start(self, self.tshark, port, self.runtime_dir)
        cli = self.start([app("tcpapp"), "client", "--host", "127.0.0.1", "--port", str(port),
                          "--mode", "echo", "--bytes", str(size)], True, name="client")
        self.finish(cli, 60, 0, [srv])
        self.finish(srv, 20, 0, [cli])
        lo_capture.stop(self, cap)
        self.assert_records_ok(srv.records(), cli.records(), srv, cli)

        smc = self.fields(pcap, "smc", "frame.number", "tcp.srcport", "smc.clc_msg", "tcp.len")
        types = [int(t) for row in smc for t in row[2].split(",") if t]
        for want, name in ((CLC_PROPOSAL, "Proposal"), (CLC_ACCEPT, "Accept"),
                           (CLC_CONFIRM, "Confirm")):
            self.assertIn(want, types, "no CLC %s decoded as SMC; decoded: %s\n%s"
                          % (name, smc, self.describe_all(srv, cli)))

        # Every SMC frame decodes cleanly: nothing malformed, no expert info of warning
        # severity or worse. (Wireshark 4 parses a Proposal only in the layout Linux 5.10+
        # sends, with the 40-byte SMC-D area before the IP area; RFC 7609's IP area offset
        # 0 shows as malformed.)
        flagged = self.fields(pcap, "smc && (_ws.malformed || _ws.expert.severity >= warning)",
                              "frame.number", "smc.clc_msg", "_ws.expert.message")
        self.assertEqual(flagged, [], "SMC frames tshark flags as malformed or worse")

        # And Wireshark found the Proposal's IP area where smcpre put it: offset 40 (0x28),
        # the client's subnet on lo, no IPv6 prefixes.
        proposal = self.fields(pcap, "smc.clc_msg == 1", "smc.length",
                               "smc.proposal.smcv1_subnet_ext_offset",
                               "smc.outgoing.interface.subnet.mask",
                               "smc.outgoing.interface.subnet.mask.number.of.significant.bits",
                               "smc.proposal.ipv6.prefix.count")
        self.assertEqual(len(proposal), 1, "expected one Proposal: %s" % proposal)
        length, offset, subnet, bits, ipv6_count = proposal[0]
        self.assertEqual((length, int(offset, 0), ipv6_count), ("92", 40, "0"), proposal)
        network = ipaddress.ip_network("127.0.0.1/%s" % bits, strict=False)
        self.assertEqual(subnet, str(network.network_address), proposal)

        payload = self.fields(pcap, "tcp.len > 0", "frame.number", "tcp.len", "smc.clc_msg")
        self.assertTrue(payload, "capture holds no payload at all")
        undecoded = [row for row in payload if len(row) < 3 or not row[2]]
        self.assertEqual(undecoded, [], "TCP segments with payload that is not SMC CLC "
                         "(application bytes on the TCP connection?)")
        total = sum(int(row[1]) for row in payload)
        self.assertLess(total, 1024, "the TCP connection carried %d payload bytes for a %d-byte "
                        "echo" % (total, 2 * size))


if __name__ == "__main__":
    main()
