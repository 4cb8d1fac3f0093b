"""sipd_mi against a real sipd: started by tests/python/python_client_test.cc, which
passes the mi_grpc address in SIPD_MI_TARGET. Skipped when run without it."""

import os
import subprocess
import sys
import unittest

import grpc

from sipd_mi import Client, MiError

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


@unittest.skipUnless(TARGET, "SIPD_MI_TARGET not set (run through CTest)")
class CommandLineTest(unittest.TestCase):
    def run_cli(self, *args, target=TARGET):
        env = dict(os.environ, SIPD_MI_TARGET=target)
        return subprocess.run(
            [sys.executable, "-m", "sipd_mi", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

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


if __name__ == "__main__":
    unittest.main()
