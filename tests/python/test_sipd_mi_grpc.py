"""sipd_mi against a real sipd: started by tests/python/python_client_test.cc, which
passes the mi_grpc address in SIPD_MI_TARGET. Skipped when run without it."""

import concurrent.futures
import os
import subprocess
import sys
import time
import unittest

import grpc

from sipd_mi import Client, MiError, SessionRequestError

TARGET = os.environ.get("SIPD_MI_TARGET")


@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = Client(TARGET, timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_execute_version(self):
        reply = self.client.execute("version")
        self.assertEqual((reply.code, reply.reason), (200, "OK"))
        self.assertEqual(reply.nodes[0].name, "Server")
        self.assertTrue(reply.nodes[0].value)

    def test_execute_with_params(self):
        reply = self.client.execute("get_statistics", "core:")
        self.assertTrue(reply.nodes)
        for node in reply.nodes:
            self.assertTrue(node.name.startswith("core:"), node.name)
            int(node.value)

    def test_non_2xx_raises_mi_error_with_the_reply(self):
        with self.assertRaises(MiError) as caught:
            self.client.execute("help", "nosuchcmd")
        self.assertEqual(caught.exception.code, 404)
        self.assertEqual(caught.exception.reply.code, 404)
        self.assertTrue(caught.exception.reason)
        reply = self.client.execute("help", "nosuchcmd", check=False)
        self.assertEqual(reply.code, 404)

    def test_unknown_command(self):
        with self.assertRaises(MiError) as caught:
            self.client.execute("nosuchcmd")
        self.assertEqual(caught.exception.code, 500)
        self.assertEqual(caught.exception.outcome, "not-available")
        self.assertIn("nosuchcmd", caught.exception.reason)

    def test_stream_matches_execute(self):
        streamed = self.client.stream("which")
        self.assertEqual(streamed.code, 200)
        collected = streamed.collect()
        self.assertEqual(collected.to_dict(), self.client.execute("which").to_dict())
        names = [node.value for node in collected.nodes]
        self.assertIn("ps", names)

    def test_list_and_describe(self):
        commands = {info["name"]: info for info in self.client.list_commands()}
        self.assertEqual(commands["ps"]["module"], "core")
        self.assertTrue(commands["ps"]["no_input"])
        described = self.client.describe("get_statistics")
        self.assertEqual(described["name"], "get_statistics")
        self.assertTrue(described["parameters"])
        with self.assertRaises(grpc.RpcError) as caught:
            self.client.describe("nosuchcmd")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)


def wait_until(predicate, timeout=20.0):
    """Polls `predicate` every 20 ms until it is true (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class SessionTest(unittest.TestCase):
    """Session against a sipd with mi_selftest (async_echo & co. answered by the timer)."""

    @classmethod
    def setUpClass(cls):
        cls.client = Client(TARGET, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def async_pending(self):
        return int(self.client.execute("get_statistics", "async_pending").nodes[0].value)

    def test_pipelined_commands_answer_out_of_order(self):
        done_order = []
        with self.client.session() as session:
            slow = session.submit("async_echo", "1500", "slow")
            fast = session.submit("async_echo", "0", "fast")
            version = session.submit("version")
            for future in (slow, fast, version):
                future.add_done_callback(lambda f: done_order.append(f.request_id))
            self.assertEqual(slow.result().nodes[0].value, "slow")
            self.assertEqual(fast.result().nodes[0].value, "fast")
            self.assertEqual(version.result().nodes[0].name, "Server")
        self.assertLess(done_order.index(fast.request_id), done_order.index(slow.request_id))
        self.assertLess(done_order.index(version.request_id), done_order.index(slow.request_id))

    def test_errors_keep_executes_mapping(self):
        with self.client.session() as session:
            with self.assertRaises(MiError) as caught:
                session.run("help", "nosuchcmd")
            self.assertEqual(caught.exception.code, 404)
            self.assertEqual(caught.exception.outcome, "reply")
            self.assertEqual(session.run("help", "nosuchcmd", check=False).code, 404)
            with self.assertRaises(MiError) as caught:
                session.run("nosuchcmd")
            self.assertEqual((caught.exception.code, caught.exception.outcome),
                             (500, "not-available"))
            with self.assertRaises(MiError) as caught:
                session.run("async_fail", "10")
            self.assertEqual(caught.exception.outcome, "failed")
            with self.assertRaises(SessionRequestError) as caught:
                session.run("")
            self.assertEqual(caught.exception.status, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(caught.exception.message, "empty command name")

    def test_streamed_reply_matches_execute(self):
        with self.client.session() as session:
            streamed = session.run("which", stream=True)
        self.assertEqual(streamed.to_dict(), self.client.execute("which").to_dict())

    def test_a_thousand_async_calls_on_one_session(self):
        with self.client.session() as session:
            futures = [session.submit("async_echo", str(50 + i % 200), str(i))
                       for i in range(1000)]
            values = [future.result().nodes[0].value for future in futures]
        self.assertEqual(values, [str(i) for i in range(1000)])
        self.assertTrue(wait_until(lambda: self.async_pending() == 0))

    def test_cancel_one_request_then_the_session(self):
        session = self.client.session()
        never = session.submit("async_never")
        other = session.submit("async_never")
        self.assertTrue(wait_until(lambda: self.async_pending() == 2))
        session.cancel(never)
        with self.assertRaises(SessionRequestError) as caught:
            never.result()
        self.assertEqual(caught.exception.status, grpc.StatusCode.CANCELLED)
        self.assertTrue(wait_until(lambda: self.async_pending() == 1))
        timed = session.submit("async_never", timeout_ms=100)
        with self.assertRaises(SessionRequestError) as caught:
            timed.result()
        self.assertEqual(caught.exception.status, grpc.StatusCode.DEADLINE_EXCEEDED)
        session.abort()
        with self.assertRaises(grpc.RpcError):
            other.result()
        self.assertTrue(wait_until(lambda: self.async_pending() == 0))


@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class CommandLineTest(unittest.TestCase):
    def run_cli(self, *args, target=TARGET, stdin=None):
        env = dict(os.environ, SIPD_MI_TARGET=target)
        return subprocess.run(
            [sys.executable, "-m", "sipd_mi", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_session_from_stdin(self):
        result = self.run_cli(
            "--session", "-", stdin="# monitoring\nasync_echo 300 'late reply'\nversion\n\n"
                                    "get_statistics core:\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("## 2 async_echo 300 'late reply'\n200 OK\necho:: late reply\n",
                      result.stdout)
        self.assertIn("## 3 version\n200 OK\nServer:: ", result.stdout)
        self.assertIn("## 5 get_statistics core:\n200 OK\ncore:", result.stdout)
        # The async reply comes last although it was asked first.
        self.assertGreater(result.stdout.index("## 2 "), result.stdout.index("## 3 "))
        result = self.run_cli("--session", "-", stdin="version\nhelp nosuchcmd\n")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("## 2 help nosuchcmd\n404 ", result.stdout)

    def test_ps(self):
        result = self.run_cli("ps")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.startswith("200 OK\n"), result.stdout)
        self.assertIn("Process::  ID=0 PID=", result.stdout)
        self.assertIn(" Type=MI gRPC", result.stdout)

    def test_stream_and_json(self):
        result = self.run_cli("--stream", "get_statistics", "core:")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.startswith("200 OK\ncore:"), result.stdout)
        result = self.run_cli("--json", "version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"name": "Server"', result.stdout)

    def test_error_exit_codes(self):
        result = self.run_cli("help", "nosuchcmd")
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stdout.startswith("404 "), result.stdout)
        result = self.run_cli("--timeout", "3", "ps", target="127.0.0.1:1")
        self.assertEqual(result.returncode, 2)
        self.assertIn("UNAVAILABLE", result.stderr)



@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class LiveTest(unittest.TestCase):
    """sipd.events.v1 through Client.subscribe / watch_statistics and the CLI (usrloc's
    ul_add raises E_UL_AOR_INSERT; no SIP needed)."""

    @classmethod
    def setUpClass(cls):
        cls.client = Client(TARGET, timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def add(self, aor):
        self.client.execute("ul_add", "location", aor, f"sip:{aor}@192.0.2.1", "3600", "1",
                            "0", "0", "0", "0")

    def test_subscribe_yields_events_in_order_with_filter(self):
        with self.client.subscribe("E_UL_AOR_INSERT", timeout=20) as events, \
                self.client.subscribe("E_UL_AOR_INSERT", filter={"aor": "py-b"},
                                      timeout=20) as only_b:
            events.wait_active()
            only_b.wait_active()
            for aor in ("py-a", "py-b", "py-c"):
                self.add(aor)
            got = [next(events) for _ in range(3)]
            self.assertEqual([e.params["aor"] for e in got], ["py-a", "py-b", "py-c"])
            self.assertEqual([e.seq for e in got], [1, 2, 3])
            self.assertEqual({e.name for e in got}, {"E_UL_AOR_INSERT"})
            self.assertEqual(got[0].dropped_before, 0)
            b = next(only_b)
            self.assertEqual((b.params["aor"], b.seq), ("py-b", 1))

    def test_subscribe_unknown_event_is_not_found(self):
        stream = self.client.subscribe("E_NOPE", timeout=20)
        with self.assertRaises(grpc.RpcError) as caught:
            next(stream)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_watch_statistics_samples_with_rates(self):
        with self.client.watch_statistics("usrloc:", interval=0.1, timeout=20) as samples:
            first = next(samples)
            self.assertEqual(first.seq, 1)
            names = {s.name for s in first.statistics}
            self.assertIn("registered_users", names)
            users = [s for s in first.statistics if s.name == "registered_users"][0]
            self.add("py-watch")
            while True:
                sample = next(samples)
                now = [s for s in sample.statistics if s.name == "registered_users"][0]
                if now.value == users.value + 1:
                    break
            self.assertEqual(now.kind, "gauge")
            self.assertGreater(sample.elapsed, 0)

    def test_cli_subscribe_and_watch(self):
        env = dict(os.environ, SIPD_MI_TARGET=TARGET)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sipd_mi", "--subscribe", "--count", "1", "--filter",
             "aor=py-cli", "E_UL_AOR_INSERT"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The subscription is in place some time after start: add until it sees one.
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                self.client.execute("ul_rm", "location", "py-cli")
                self.add("py-cli")
                try:
                    proc.wait(timeout=0.05)  # ends as soon as the CLI got its event
                except subprocess.TimeoutExpired:
                    pass
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, err)
        self.assertRegex(out, r"^\d{4}-\d\d-\d\dT[\d:.]+Z E_UL_AOR_INSERT seq=1 aor=py-cli\n$")
        result = subprocess.run(
            [sys.executable, "-m", "sipd_mi", "--watch", "--interval", "0.1", "--count", "2",
             "usrloc:registered_users", "rcv_requests"],
            env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 4, result.stdout)
        self.assertRegex(lines[0], r"Z usrloc:registered_users \d+$")
        self.assertRegex(lines[1], r"Z core:rcv_requests \d+ \+0 0\.0/s$")
        result = subprocess.run(
            [sys.executable, "-m", "sipd_mi", "--watch", "--interval", "0.01", "all"],
            env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn("INVALID_ARGUMENT", result.stderr)


if __name__ == "__main__":
    unittest.main()
