"""The typed services from Python, on the generated stubs alone (no sipd_mi helper), as a
stub user would write it: sipd.core.v1, sipd.statistics.v1, sipd.usrloc.v1, the standard
error details (google.rpc.Status in grpc-status-details-bin), and the CLI on a broken
pipe. Started by tests/python/python_client_test.cc with SIPD_MI_TARGET (sipd with
usrloc); skipped without it."""

import os
import subprocess
import sys
import unittest

import grpc

TARGET = os.environ.get("SIPD_MI_TARGET")

if TARGET:
    stubs = os.environ.get("SIPD_MI_STUBS_DIR")
    if stubs and stubs not in sys.path:
        sys.path.insert(0, stubs)
    from google.rpc import error_details_pb2, status_pb2
    from sipd.core.v1 import core_pb2, core_pb2_grpc
    from sipd.mi.v1 import mi_pb2, mi_pb2_grpc
    from sipd.statistics.v1 import statistics_pb2, statistics_pb2_grpc
    from sipd.usrloc.v1 import usrloc_pb2, usrloc_pb2_grpc


def status_details(error):
    """The google.rpc.Status of a failed call and its ErrorInfo / BadRequest details (what
    grpc_status.rpc_status.from_call() does, without the extra package)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            info, bad = None, None
            for any_detail in status.details:
                if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    any_detail.Unpack(info)
                elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    any_detail.Unpack(bad)
            return status, info, bad
    raise AssertionError("no grpc-status-details-bin")


@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class TypedStubsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(TARGET)
        cls.core = core_pb2_grpc.CoreServiceStub(cls.channel)
        cls.stats = statistics_pb2_grpc.StatisticsServiceStub(cls.channel)
        cls.location = usrloc_pb2_grpc.LocationServiceStub(cls.channel)
        cls.management = mi_pb2_grpc.ManagementStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def test_processes_and_version(self):
        processes = self.core.ListProcesses(core_pb2.ListProcessesRequest(), timeout=10)
        types = [p.type for p in processes.processes]
        self.assertEqual(types[0], "attendant")
        self.assertIn("MI gRPC", types)
        self.assertTrue(any(t.startswith("SIP receiver udp:") for t in types))
        self.assertFalse(any(t.endswith(" ") for t in types))
        version = self.core.GetVersion(core_pb2.GetVersionRequest(), timeout=10)
        self.assertTrue(version.server.startswith("sipd ("))
        self.assertEqual(version.os, "linux")
        uptime = self.core.GetUptime(core_pb2.GetUptimeRequest(), timeout=10)
        self.assertLessEqual(uptime.up_since.seconds, uptime.now.seconds)

    def test_statistics(self):
        reply = self.stats.GetStatistics(
            statistics_pb2.GetStatisticsRequest(names=["core:", "usrloc:registered_users"]),
            timeout=10,
        )
        names = {(s.group, s.name): s for s in reply.statistics}
        self.assertIn(("core", "rcv_requests"), names)
        self.assertTrue(names[("core", "rcv_requests")].resettable)
        self.assertIn(("usrloc", "registered_users"), names)

    def test_contacts(self):
        self.location.AddContact(
            usrloc_pb2.AddContactRequest(
                table="location", aor="py_alice", uri="sip:py@192.0.2.5", expires_seconds=300, q=0.25
            ),
            timeout=10,
        )
        aor = self.location.GetContacts(
            usrloc_pb2.GetContactsRequest(table="location", aor="py_alice"), timeout=10
        ).aor
        self.assertEqual(aor.aor, "py_alice")
        contact = aor.contacts[0]
        self.assertEqual(contact.uri, "sip:py@192.0.2.5")
        self.assertTrue(contact.HasField("q"))
        self.assertAlmostEqual(contact.q, 0.25)
        self.assertTrue(0 < contact.expires_seconds <= 300)
        streamed = [
            a.aor
            for part in self.location.StreamContacts(
                usrloc_pb2.StreamContactsRequest(table="location"), timeout=10
            )
            for a in part.aors
        ]
        self.assertIn("py_alice", streamed)
        page = self.location.ListContacts(
            usrloc_pb2.ListContactsRequest(table="location", aor_prefix="py_"), timeout=10
        )
        self.assertEqual([a.aor for a in page.aors], ["py_alice"])
        self.location.RemoveAor(usrloc_pb2.RemoveAorRequest(table="location", aor="py_alice"), timeout=10)

    def test_errors_carry_standard_details(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.location.GetContacts(usrloc_pb2.GetContactsRequest(table="location", aor="nobody"), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        status, info, _ = status_details(caught.exception)
        self.assertEqual(status.code, grpc.StatusCode.NOT_FOUND.value[0])
        self.assertEqual((info.domain, info.reason), ("sipd", "MI_404"))
        self.assertEqual(info.metadata["mi_reason"], "AOR not found")

        with self.assertRaises(grpc.RpcError) as caught:
            self.location.GetContacts(usrloc_pb2.GetContactsRequest(aor="nobody"), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        _, info, bad = status_details(caught.exception)
        self.assertEqual(info.reason, "INVALID_REQUEST")
        self.assertEqual(bad.field_violations[0].field, "table")

        # Management: a missing argument, the 1.11 code in the details.
        with self.assertRaises(grpc.RpcError) as caught:
            self.management.Execute(mi_pb2.ExecuteRequest(command="cache_fetch", params=["local"]), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        _, info, bad = status_details(caught.exception)
        self.assertEqual(info.metadata["mi_code"], "404")
        self.assertEqual(bad.field_violations[0].field, "attr")

    def test_command_info_async_field(self):
        info = self.management.DescribeCommand(mi_pb2.DescribeCommandRequest(command="ps"), timeout=10)
        # `async` is a Python keyword: getattr is the spelling.
        self.assertFalse(getattr(info, "async"))


@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class CliBrokenPipeTest(unittest.TestCase):
    def test_reader_gone_exits_quietly(self):
        env = dict(os.environ, SIPD_MI_TARGET=TARGET)
        for args in (["which"], ["--stream", "get_statistics", "all"]):
            read_end, write_end = os.pipe()
            os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
            process = subprocess.run(
                [sys.executable, "-m", "sipd_mi", *args],
                stdout=write_end,
                stderr=subprocess.PIPE,
                env=env,
                timeout=30,
                check=False,
            )
            os.close(write_end)
            self.assertEqual(process.stderr.decode(), "", args)
            self.assertEqual(process.returncode, 141, args)


if __name__ == "__main__":
    unittest.main()
