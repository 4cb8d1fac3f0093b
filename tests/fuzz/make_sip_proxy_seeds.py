#!/usr/bin/env python3
"""Writes the seed corpus of the sip_proxy fuzz target (tests/fuzz/corpus/sip_proxy/).

Each seed is a sequence of steps as fuzz_sip_proxy.cc reads them: op (1 byte), length
(2 bytes, little endian), payload. Run from the repository root:

    python3 tests/fuzz/make_sip_proxy_seeds.py
"""
import os
import struct

from seed_steps import step, write_seeds

OUT = os.path.join(os.path.dirname(__file__), "corpus", "sip_proxy")

CALLER, CALLEE, CALLEE_T, CALLER_T, CLOCK, ANSWER = 0, 1, 2, 3, 4, 5
TCP = 8



def request(method, uri, branch, call_id="c1", cseq=1, to_tag="", extra="",
            via="SIP/2.0/UDP 10.0.0.1:5070", max_forwards=70, body=""):
    to = "<sip:bob@example.com>" + (";tag=" + to_tag if to_tag else "")
    return (f"{method} {uri} SIP/2.0\r\n"
            f"Via: {via};branch={branch}\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            f"From: <sip:alice@example.com>;tag=a1\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:alice@10.0.0.1:5070>\r\n"
            f"{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}")


def answer(code):
    return step(ANSWER, struct.pack("<H", code - 100))


SDP = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ROUTE = "Route: <sip:127.0.0.1:5060;lr>\r\n"

REPLY_TEMPLATE = ("SIP/2.0 {code} Fuzz\r\n"
                  "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=$B\r\n"
                  "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKc1\r\n"
                  "From: <sip:alice@example.com>;tag=a1\r\n"
                  "To: <sip:bob@example.com>;tag=b9\r\n"
                  "Call-ID: $C\r\nCSeq: 1 INVITE\r\n"
                  "Contact: <sip:bob@10.0.0.2:5060>\r\nContent-Length: 0\r\n\r\n")

SEEDS = {
    "call": [
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKc1", body=SDP)),
        answer(180), answer(200),
        step(CALLER, request("ACK", "sip:bob@10.0.0.2:5060", "z9hG4bKc2", to_tag="callee1",
                             extra=ROUTE)),
        step(CALLER, request("BYE", "sip:bob@10.0.0.2:5060", "z9hG4bKc3", cseq=2,
                             to_tag="callee1", extra=ROUTE)),
        answer(200),
    ],
    "call-tcp": [
        step(CALLER | TCP, request("INVITE", "sip:bob@example.com", "z9hG4bKt1",
                                   via="SIP/2.0/TCP 10.0.0.1:5070", call_id="t1")),
        answer(100), answer(183), answer(200),
        step(CALLER | TCP, request("ACK", "sip:bob@10.0.0.2:5060", "z9hG4bKt2", call_id="t1",
                                   to_tag="callee1", extra=ROUTE,
                                   via="SIP/2.0/TCP 10.0.0.1:5070")),
    ],
    "cancel": [
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKx1", call_id="x1")),
        answer(180),
        step(CALLER, request("CANCEL", "sip:bob@example.com", "z9hG4bKx1", call_id="x1")),
        step(CALLEE_T, REPLY_TEMPLATE.format(code=487)),
        step(CALLER_T, request("ACK", "sip:bob@example.com", "z9hG4bKx1", call_id="x1",
                               to_tag="$T")),
    ],
    "busy-and-retransmissions": [
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKb1", call_id="b1")),
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKb1", call_id="b1")),
        step(CALLEE_T, REPLY_TEMPLATE.format(code=486)),
        step(CALLEE_T, REPLY_TEMPLATE.format(code=486)),
        step(CLOCK, b"\x40"),
        step(CALLER_T, request("ACK", "sip:bob@example.com", "z9hG4bKb1", call_id="b1",
                               to_tag="$T")),
    ],
    "timeouts": [
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKo1", call_id="o1")),
        step(CALLER, request("OPTIONS", "sip:bob@example.com", "z9hG4bKo2", call_id="o2")),
        step(CLOCK, b"\xff"), step(CLOCK, b"\xff"),
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKo3", call_id="o3")),
    ],
    "routing": [
        step(CALLER, request("INVITE", "sip:nobody@example.com", "z9hG4bKr1", call_id="r1")),
        step(CALLER, request("INVITE", "sip:bob@other.org", "z9hG4bKr2", call_id="r2")),
        step(CALLER, request("INVITE", "sip:carol@example.com", "z9hG4bKr3", call_id="r3")),
        step(CALLER, request("INVITE", "sip:dave@example.com", "z9hG4bKr4", call_id="r4")),
        step(CALLER, request("MESSAGE", "sip:bob@example.com", "z9hG4bKr5", call_id="r5",
                             body="hello")),
        step(CALLER, request("OPTIONS", "sip:127.0.0.1:5060", "z9hG4bKr6", call_id="r6")),
        step(CALLER, request("REGISTER", "sip:example.com", "z9hG4bKr7", call_id="r7")),
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKr8", call_id="r8",
                             max_forwards=0)),
        step(CALLER, request("SUBSCRIBE", "sip:bob@10.0.0.2", "z9hG4bKr9", call_id="r9",
                             to_tag="x", extra="Route: <sip:127.0.0.1:5060;lr>, "
                                               "<sip:10.0.0.5;lr>\r\n")),
    ],
    "overload": [
        step(CALLER | 0x60, request("INVITE", "sip:bob@example.com", "z9hG4bKv1",
                                    call_id="v1")),
        step(CALLER_T, request("ACK", "sip:bob@example.com", "z9hG4bKv1", call_id="v1",
                               to_tag="$T")),
        step(CALLER | 0x60, request("BYE", "sip:bob@10.0.0.2", "z9hG4bKv2", call_id="v2",
                                    to_tag="y", extra=ROUTE)),
    ],
    "hostile": [
        step(CALLER, request("ACK", "sip:bob@example.com", "z9hG4bKh1", call_id="h1")),
        step(CALLER, request("CANCEL", "sip:bob@example.com", "z9hG4bKh2", call_id="h2")),
        step(CALLEE, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnope\r\n"
                     "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: h3\r\n"
                     "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
        step(CALLER, "INVITE sip:bob@example.com SIP/2.0\r\nVia: garbage\r\n\r\n"),
        step(CALLER, b"\x00\xff\r\n\r\n"),
        step(CALLER, request("INVITE", "sip:bob@example.com", "z9hG4bKh4", call_id="h4",
                             extra="Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKloop\r\n")),
    ],
}


def main():
    write_seeds(OUT, SEEDS)


if __name__ == "__main__":
    main()
