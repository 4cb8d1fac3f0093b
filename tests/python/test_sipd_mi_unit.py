"""Unit tests of sipd_mi that need no server: reply model, text layout, stream rebuild,
error mapping from trailing metadata."""

import os
import tempfile
import unittest

import grpc

from sipd_mi import MiError, Node, Reply
from sipd_mi._stubs import mi_pb2
from sipd_mi.client import StreamedReply, _mi_error_or_none, _run_dir_serves, reply_from_proto
from sipd_mi.session import SessionRequestError, _ChunkTree, result_outcome


class FakeRpcError(grpc.RpcError):
    def __init__(self, metadata):
        self._metadata = metadata

    def trailing_metadata(self):
        return self._metadata


class ReplyTest(unittest.TestCase):
    def test_text_layout_follows_spec_section_2(self):
        reply = Reply(
            nodes=[
                Node(
                    "Domain",
                    "location",
                    [("table", "512"), ("records", "1")],
                    [Node("AOR", "alice", kids=[Node("Contact", "sip:a@b", [("Q", "")])])],
                ),
                Node("Process", "", [("ID", "0"), ("PID", "1"), ("Type", "attendant")]),
                Node("", "0", [("Current", "0")]),
                Node("Cflags", ""),
            ]
        )
        self.assertEqual(
            reply.to_text(),
            "200 OK\n"
            "Domain:: location table=512 records=1\n"
            "\tAOR:: alice\n"
            "\t\tContact:: sip:a@b Q=\n"
            "Process::  ID=0 PID=1 Type=attendant\n"
            "0 Current=0\n"
            "Cflags:: \n",
        )
        self.assertEqual(reply.nodes[1].attribute("PID"), "1")
        self.assertIsNone(reply.nodes[1].attribute("nope"))
        self.assertTrue(reply.ok)

    def test_from_proto_and_to_dict(self):
        message = mi_pb2.Reply(code=202, reason="Accepted", is_array=True)
        node = message.nodes.add(name="n", value="v", is_array=True)
        node.attributes.add(name="a", value="1")
        node.kids.add(value="kid")
        reply = reply_from_proto(message)
        self.assertEqual(
            reply.to_dict(),
            {
                "code": 202,
                "reason": "Accepted",
                "is_array": True,
                "nodes": [
                    {
                        "name": "n",
                        "value": "v",
                        "attributes": [["a", "1"]],
                        "kids": [
                            {"name": "", "value": "kid", "attributes": [], "kids": [],
                             "is_array": False}
                        ],
                        "is_array": True,
                    }
                ],
            },
        )


class StreamTest(unittest.TestCase):
    def test_collect_rebuilds_the_tree_from_depths(self):
        first = mi_pb2.ReplyChunk(has_status=True, code=200, reason="OK")
        first.nodes.add(depth=0, name="Domain", value="location")
        first.nodes.add(depth=1, name="AOR", value="alice")
        second = mi_pb2.ReplyChunk()
        second.nodes.add(depth=2, name="Contact", value="sip:a@b")
        second.nodes.add(depth=1, name="AOR", value="bob")
        second.nodes.add(depth=0, name="Domain", value="other")

        class FakeCall:
            def __iter__(self):
                return iter([first, second])

            def cancel(self):
                pass

        reply = StreamedReply(FakeCall()).collect()
        self.assertEqual(
            reply.to_text(),
            "200 OK\nDomain:: location\n\tAOR:: alice\n\t\tContact:: sip:a@b\n\tAOR:: bob\n"
            "Domain:: other\n",
        )


class ErrorMappingTest(unittest.TestCase):
    def test_metadata_becomes_mi_error(self):
        error_reply = mi_pb2.Reply(code=404, reason="unknown MI command")
        error = _mi_error_or_none(
            FakeRpcError(
                [
                    ("sipd-mi-code", "404"),
                    ("sipd-mi-reason", "unknown%20MI command"),
                    ("sipd-mi-outcome", "reply"),
                    ("sipd-mi-reply-bin", error_reply.SerializeToString()),
                ]
            )
        )
        self.assertIsInstance(error, MiError)
        self.assertEqual((error.code, error.reason, error.outcome), (404, "unknown MI command",
                                                                     "reply"))
        self.assertEqual(error.reply.code, 404)

    def test_reason_is_percent_decoded(self):
        error = _mi_error_or_none(
            FakeRpcError([("sipd-mi-code", "500"), ("sipd-mi-reason", "a%25b%0Ac")])
        )
        self.assertEqual(error.reason, "a%b\nc")

    def test_transport_errors_are_not_mi_errors(self):
        self.assertIsNone(_mi_error_or_none(FakeRpcError([])))


class SessionResultTest(unittest.TestCase):
    def test_ok_result_is_the_reply(self):
        result = mi_pb2.SessionResult(id=3, done=True, outcome="reply")
        result.reply.code = 200
        result.reply.reason = "OK"
        result.reply.nodes.add(name="Server", value="sipd")
        reply = result_outcome(result)
        self.assertEqual(reply.to_text(), "200 OK\nServer:: sipd\n")

    def test_mi_error_keeps_the_whole_reply(self):
        result = mi_pb2.SessionResult(
            id=1, done=True, status=mi_pb2.SessionResult.NOT_FOUND, message="unknown MI command",
            outcome="reply")
        result.reply.code = 404
        result.reply.reason = "unknown MI command"
        result.reply.nodes.add(name="Detail", value="x")
        error = result_outcome(result)
        self.assertIsInstance(error, MiError)
        self.assertEqual((error.code, error.outcome), (404, "reply"))
        self.assertEqual(error.reply.nodes[0].name, "Detail")

    def test_refused_request_is_a_session_request_error(self):
        result = mi_pb2.SessionResult(
            id=1, done=True, status=mi_pb2.SessionResult.RESOURCE_EXHAUSTED,
            message="too many requests in flight in this session (at most 2)")
        error = result_outcome(result)
        self.assertIsInstance(error, SessionRequestError)
        self.assertEqual(error.status, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_chunks_rebuild_the_tree(self):
        tree = _ChunkTree()
        first = mi_pb2.ReplyChunk(has_status=True, code=200, reason="OK", is_array=True)
        first.nodes.add(depth=0, name="Domain", value="location")
        first.nodes.add(depth=1, name="AOR", value="alice")
        second = mi_pb2.ReplyChunk()
        second.nodes.add(depth=1, name="AOR", value="bob")
        tree.add(first)
        tree.add(second)
        reply = result_outcome(mi_pb2.SessionResult(id=1, done=True, outcome="reply"), tree)
        self.assertEqual(reply.to_text(), "200 OK\nDomain:: location\n\tAOR:: alice\n\tAOR:: bob\n")
        self.assertTrue(reply.is_array)


if __name__ == "__main__":
    unittest.main()


class AdminTokenTargetTest(unittest.TestCase):
    def test_the_admin_token_goes_only_to_the_sipd_of_its_run_dir(self):
        with tempfile.TemporaryDirectory() as run_dir:
            self.assertFalse(_run_dir_serves(run_dir, "127.0.0.1:8090"))  # no listeners file
            with open(os.path.join(run_dir, "listeners"), "w", encoding="utf-8") as f:
                f.write("# sipd pid 1: MODULE PROTOCOL ADDRESS, one per line\n"
                        "sip udp 127.0.0.1:5060\n"
                        "mi_grpc grpc 127.0.0.1:8090\n"
                        "mi_grpc grpc /run/sipd/grpc.sock\n")
            self.assertTrue(_run_dir_serves(run_dir, "127.0.0.1:8090"))
            self.assertTrue(_run_dir_serves(run_dir, "localhost:8090"))
            self.assertTrue(_run_dir_serves(run_dir, "unix:/run/sipd/grpc.sock"))
            self.assertFalse(_run_dir_serves(run_dir, "127.0.0.1:8091"))  # another sipd
            self.assertFalse(_run_dir_serves(run_dir, "127.0.0.1:5060"))  # not gRPC
