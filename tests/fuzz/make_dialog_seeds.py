#!/usr/bin/env python3
"""Writes the seed corpus of the dialog fuzz target (tests/fuzz/corpus/dialog/).

Steps as fuzz_dialog.cc reads them: op (1 byte), length (2 bytes, little endian),
payload. Run from the repository root: python3 tests/fuzz/make_dialog_seeds.py
"""
import os

from seed_steps import step, write_seeds

OUT = os.path.join(os.path.dirname(__file__), "corpus", "dialog")
RELAY, REPLY, LOCAL_REPLY, END, MI, CLOCK = 0, 1, 2, 3, 4, 5
# Module dialog's commands in registration order (sipd/modules/dialog/dlg_mi.cc).
DLG_LIST, DLG_LIST_CTX, DLG_END_DLG, DLG_DB_SYNC, DLG_RESTORE_DB = 0, 1, 2, 3, 4
PROFILE_GET_SIZE, PROFILE_LIST_DLGS, PROFILE_GET_VALUES, LIST_ALL_PROFILES = 5, 6, 7, 8



def mi(index, *args):
    return step(MI, bytes([index]) + "\n".join(args).encode())


def invite(call_id="call-1@192.0.2.1", cseq=1, rr=("<sip:192.0.2.7;lr>",), to_tag="",
           method="INVITE", ruri_user="bob"):
    rrs = "".join(f"Record-Route: {r}\r\n" for r in rr)
    to = f"<sip:{ruri_user}@sipd.example.com>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:{ruri_user}@sipd.example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-inv\r\n"
            f"{rrs}From: \"Alice\" <sip:alice@example.com>;tag=alice-tag\r\n"
            f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            "Contact: <sip:alice@192.0.2.1:5070>\r\nContent-Length: 0\r\n\r\n")


def reply(code, with_tag=True, call_id="call-1@192.0.2.1",
          rr=("<sip:192.0.2.50;lr;did=X>", "<sip:192.0.2.7;lr>")):
    rrs = "".join(f"Record-Route: {r}\r\n" for r in rr)
    tag = ";tag=bob-tag" if with_tag else ""
    return (f"SIP/2.0 {code} Reason\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-inv\r\n"
            f"{rrs}From: \"Alice\" <sip:alice@example.com>;tag=alice-tag\r\n"
            f"To: <sip:bob@sipd.example.com>{tag}\r\nCall-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.9:5060>\r\nContent-Length: 0\r\n\r\n")


CALL = [step(RELAY, invite()), step(REPLY, reply(180)), step(REPLY, reply(200)),
        step(RELAY, invite(method="ACK", to_tag="bob-tag"))]

SEEDS = {
    "call-and-bye": CALL + [
        mi(DLG_LIST), mi(DLG_LIST_CTX),
        step(RELAY, invite(method="BYE", cseq=2, to_tag="bob-tag")),
        step(END, b"\x00"), mi(DLG_LIST)],
    "end-dlg": CALL + [mi(DLG_LIST, "call-1@192.0.2.1", "alice-tag"),
                       mi(DLG_END_DLG, "$E", "$I", "X-Evil: a\rVia: forged"),
                       mi(DLG_END_DLG, "$E", "$I", "X-Reason: admin"),
                       mi(DLG_END_DLG, "nope", "1"), mi(DLG_END_DLG, "99999999999", "0")],
    "profiles": CALL + [mi(PROFILE_GET_SIZE, "caller", "alice"),
                        mi(PROFILE_GET_SIZE, "inbound"),
                        mi(PROFILE_LIST_DLGS, "callee", "bob"),
                        mi(PROFILE_GET_VALUES, "caller"), mi(LIST_ALL_PROFILES),
                        mi(PROFILE_GET_SIZE, "nosuch")],
    "early-then-failure": [step(RELAY, invite(call_id="c2")),
                           step(REPLY, reply(183, call_id="c2")),
                           step(REPLY, reply(486, call_id="c2")), step(END, b"\x86")],
    "timeout": CALL + [step(CLOCK, b"\xff"), step(CLOCK, b"\xff"), mi(DLG_LIST)],
    "local-408": [step(RELAY, invite(call_id="c3")), step(LOCAL_REPLY), step(END, b"\xd0")],
    "reinvite": CALL + [step(RELAY, invite(cseq=3, to_tag="bob-tag")),
                        step(REPLY, reply(200)), mi(DLG_LIST_CTX, "0", "10")],
    "db-commands": [mi(DLG_DB_SYNC), mi(DLG_RESTORE_DB), mi(DLG_LIST_CTX, "x", "y")],
}


def main():
    write_seeds(OUT, SEEDS)


if __name__ == "__main__":
    main()
