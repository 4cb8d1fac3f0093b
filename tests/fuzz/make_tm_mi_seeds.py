#!/usr/bin/env python3
"""Writes the seed corpus of the tm_mi fuzz target (tests/fuzz/corpus/tm_mi/).

Steps as fuzz_tm_mi.cc reads them: op (1 byte), length (2 bytes, little endian),
payload. Run from the repository root: python3 tests/fuzz/make_tm_mi_seeds.py
"""
import os
import struct

from seed_steps import step, write_seeds

OUT = os.path.join(os.path.dirname(__file__), "corpus", "tm_mi")
MI, FROM_CALLEE, ANSWER, CLOCK = 0, 1, 2, 3
# tm's commands but t_hash in registration order, then blacklists'
# (sipd/modules/tm/tm_module.cc, tests/fuzz/fuzz_tm_mi.cc).
T_UAC_DLG, T_UAC_CANCEL, T_REPLY, LIST_BLACKLISTS = 0, 1, 2, 3

HEADERS = "From: <sip:mi@sipd.example.com>;tag=mi1\r\nTo: <sip:bob@10.0.0.2>"


def mi(index, *args):
    return step(MI, bytes([index]) + "\0".join(args).encode())


def answer(code):
    return step(ANSWER, struct.pack("<H", code - 100))


def clock(steps_of_10ms):
    return step(CLOCK, bytes([steps_of_10ms]))


def uac(method, ruri="sip:bob@10.0.0.2:5060", next_hop=".", socket=".", headers=HEADERS,
        *body):
    return mi(T_UAC_DLG, method, ruri, next_hop, socket, headers, *body)


CALLEE_REPLY = ("SIP/2.0 {code} Reason\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=$B\r\n"
                "From: <sip:mi@sipd.example.com>;tag=mi1\r\nTo: <sip:bob@10.0.0.2>;tag=b2\r\n"
                "Call-ID: $C\r\nCSeq: $S INVITE\r\nContact: <sip:bob@10.0.0.2:5060>\r\n"
                "Content-Length: 0\r\n\r\n")

FROM_CALLER = FROM_CALLEE | 4
CALLER_INVITE = ("INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
                 "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-caller-1\r\n"
                 "Max-Forwards: 70\r\nFrom: <sip:alice@10.0.0.1>;tag=a1\r\n"
                 "To: <sip:bob@10.0.0.2>\r\nCall-ID: relayed-1@10.0.0.1\r\n"
                 "CSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.1:5070>\r\n"
                 "Content-Length: 0\r\n\r\n")

SEEDS = {
    "options-200": [uac("OPTIONS"), answer(200)],
    "invite-ringing-200": [uac("INVITE"), answer(100), answer(180), answer(200)],
    "invite-486": [uac("INVITE"), answer(486)],
    "invite-timeout": [uac("INVITE"), clock(255), clock(255), mi(LIST_BLACKLISTS)],
    # The CANCEL (the last request sent) gets its 200, then the INVITE its 487 (same
    # branch and CSeq number as the CANCEL).
    "invite-cancelled": [uac("INVITE"), answer(180), mi(T_UAC_CANCEL, "$C", "$S"),
                         answer(200), step(FROM_CALLEE, CALLEE_REPLY.format(code=487))],
    "invite-with-body": [uac("INVITE", "sip:bob@10.0.0.2", "sip:10.0.0.2:5060;transport=tcp",
                             "udp:127.0.0.1:5060",
                             HEADERS + "\r\nContent-Type: application/sdp",
                             "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\n"), answer(200)],
    "callee-reply-by-hand": [uac("INVITE"),
                             step(FROM_CALLEE, CALLEE_REPLY.format(code=603))],
    # sipd relays a caller's INVITE (relay_to_any); t_reply answers it while the callee
    # rings, then the callee's 200 comes too late.
    "relayed-invite-t_reply": [step(FROM_CALLER, CALLER_INVITE), answer(180),
                               mi(T_REPLY, "486", "Busy Here", "$X", ".", "X-Why: fuzz"),
                               answer(200)],
    "relayed-invite-t_reply-provisional": [step(FROM_CALLER, CALLER_INVITE),
                                           mi(T_REPLY, "183", "Progress", "$X", "mi-tag", ".",
                                              "body")],
    "bad-arguments": [uac("INV ITE"), uac("OPTIONS", "not-a-uri"),
                      uac("OPTIONS", "sip:bob@10.0.0.2", "sip:[::1"),
                      uac("OPTIONS", headers="From: x\rInjected: 1"),
                      mi(T_UAC_CANCEL, "nothing", "x"),
                      mi(T_REPLY, "200", "OK", "1:1", ".", "."),
                      mi(T_REPLY, "99", "OK", "65536:0", "tag with space", "X: 1")],
}


def main():
    write_seeds(OUT, SEEDS)


if __name__ == "__main__":
    main()
