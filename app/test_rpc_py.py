"""Tests of app/rpc.py against a throwaway JSON-RPC server on a Unix socket (stdlib only).

Run from the repository root: python3 -m unittest app/test_rpc_py.py
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

RPC_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rpc.py")

SAVED_CONFIG = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "Malloc0", "num_blocks": 2048, "block_size": 512}}]}]}


class FakeServer:
    """Answers each request on its own connection; how depends on the method name.

    Records every request it decoded. Methods: fail_me (JSON-RPC error), hang (no answer),
    close_me (close without answer), string_result, bool_result, save_config, slow_chunks
    (answer in pieces); anything else echoes {"method", "params"} back as the result.
    """

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rpc-py-test-")
        self.path = os.path.join(self.dir, "rpc.sock")
        self.newline = True
        self.requests = []
        self.held = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        for c in self.held:
            c.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self._handle(conn):
                    conn.close()
            except OSError:
                conn.close()

    def _read_request(self, conn):
        buf = b""
        decoder = json.JSONDecoder()
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            buf += chunk
            try:
                return decoder.raw_decode(buf.decode())[0]
            except ValueError:
                continue

    def _handle(self, conn):
        """Serve one connection; return False to keep it open."""
        conn.settimeout(10)
        req = self._read_request(conn)
        if req is None:
            return True
        self.requests.append(req)
        method = req.get("method")
        reply = {"jsonrpc": "2.0", "id": req.get("id")}
        if method == "hang":
            self.held.append(conn)
            return False
        if method == "close_me":
            return True
        if method == "fail_me":
            reply["error"] = {"code": -19, "message": "No such device"}
        elif method == "string_result":
            reply["result"] = "Malloc7"
        elif method == "bool_result":
            reply["result"] = True
        elif method == "save_config":
            reply["result"] = SAVED_CONFIG
        else:
            reply["result"] = {"method": method, "params": req.get("params")}
        data = json.dumps(reply).encode() + (b"\n" if self.newline else b"")
        if method == "slow_chunks":
            for i in range(0, len(data), 7):
                conn.sendall(data[i:i + 7])
                time.sleep(0.005)
        else:
            conn.sendall(data)
        return True


class RpcPyTest(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer()
        self.addCleanup(self.server.stop)

    def rpc(self, *argv, sock=None, env=None, timeout=20):
        cmd = [sys.executable, RPC_PY]
        if sock is not False:
            cmd += ["-s", sock or self.server.path]
        return subprocess.run(cmd + list(argv), capture_output=True, text=True,
                              timeout=timeout, env=env)

    def request_of(self, *argv):
        """Run rpc.py, check it succeeded, and return the one request the server saw."""
        before = len(self.server.requests)
        r = self.rpc(*argv)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.server.requests), before + 1)
        return self.server.requests[-1]

    def assert_request(self, argv, method, params):
        req = self.request_of(*argv)
        expected = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            expected["params"] = params
        self.assertEqual(req, expected, "for %s" % " ".join(argv))

    def test_sub_command_requests(self):
        cases = [
            (["rpc_get_methods"], "rpc_get_methods", None),
            (["rpc_get_methods", "--current", "--include-aliases"], "rpc_get_methods",
             {"current": True, "include_aliases": True}),
            (["framework_get_reactors"], "framework_get_reactors", None),
            (["framework_shutdown"], "framework_shutdown", None),
            (["bdev_malloc_create", "-b", "Malloc1", "64", "512"], "bdev_malloc_create",
             {"name": "Malloc1", "num_blocks": 131072, "block_size": 512}),
            (["bdev_malloc_create", "0.5", "4096", "-u", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"],
             "bdev_malloc_create",
             {"num_blocks": 128, "block_size": 4096, "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}),
            (["bdev_malloc_delete", "Malloc1"], "bdev_malloc_delete", {"name": "Malloc1"}),
            (["bdev_null_create", "Null0", "16", "4096"], "bdev_null_create",
             {"name": "Null0", "num_blocks": 4096, "block_size": 4096}),
            (["bdev_null_create", "-u", "u-1", "Null1", "1", "512"], "bdev_null_create",
             {"name": "Null1", "num_blocks": 2048, "block_size": 512, "uuid": "u-1"}),
            (["bdev_null_delete", "Null0"], "bdev_null_delete", {"name": "Null0"}),
            (["bdev_split_create", "Malloc0", "4"], "bdev_split_create",
             {"base_bdev": "Malloc0", "split_count": 4}),
            (["bdev_split_create", "-s", "128", "Malloc0", "2"], "bdev_split_create",
             {"base_bdev": "Malloc0", "split_count": 2, "split_size_mb": 128}),
            (["bdev_split_delete", "Malloc0"], "bdev_split_delete", {"base_bdev": "Malloc0"}),
            (["bdev_delay_create", "-b", "Malloc0", "-d", "Delay0", "-r", "10", "-t", "20",
              "-w", "30", "-n", "40"], "bdev_delay_create",
             {"base_bdev_name": "Malloc0", "name": "Delay0", "avg_read_latency": 10,
              "p99_read_latency": 20, "avg_write_latency": 30, "p99_write_latency": 40}),
            (["bdev_delay_delete", "Delay0"], "bdev_delay_delete", {"name": "Delay0"}),
            (["bdev_error_create", "Malloc0"], "bdev_error_create", {"base_name": "Malloc0"}),
            (["bdev_error_delete", "EE_Malloc0"], "bdev_error_delete", {"name": "EE_Malloc0"}),
            (["bdev_error_inject_error", "EE_Malloc0", "read", "failure"],
             "bdev_error_inject_error",
             {"name": "EE_Malloc0", "io_type": "read", "error_type": "failure", "num": 1}),
            (["bdev_error_inject_error", "EE_Malloc0", "all", "nomem", "-n", "5"],
             "bdev_error_inject_error",
             {"name": "EE_Malloc0", "io_type": "all", "error_type": "nomem", "num": 5}),
            (["bdev_get_bdevs"], "bdev_get_bdevs", None),
            (["bdev_get_bdevs", "-b", "Malloc0"], "bdev_get_bdevs", {"name": "Malloc0"}),
            (["bdev_get_iostat"], "bdev_get_iostat", None),
            (["bdev_get_iostat", "-b", "Malloc0"], "bdev_get_iostat", {"name": "Malloc0"}),
            (["call", "bdev_get_bdevs", '{"name": "Malloc0", "timeout": 5}'], "bdev_get_bdevs",
             {"name": "Malloc0", "timeout": 5}),
            (["call", "iscsi_get_portal_groups"], "iscsi_get_portal_groups", None),
            (["call", "bdev_get_bdevs", "{}"], "bdev_get_bdevs", None),
        ]
        for argv, method, params in cases:
            with self.subTest(argv=argv):
                self.assert_request(argv, method, params)

    def test_bad_arguments_send_nothing(self):
        for argv in (["bdev_error_inject_error", "EE_Malloc0", "read", "corrupt_data"],
                     ["bdev_error_inject_error", "EE_Malloc0", "readv", "failure"],
                     ["bdev_delay_create", "-b", "Malloc0", "-d", "Delay0"],
                     ["bdev_malloc_create", "64"],
                     ["call", "m", "[1, 2]"],
                     ["call", "m", "{not json"],
                     ["no_such_command"]):
            with self.subTest(argv=argv):
                r = self.rpc(*argv)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertNotIn("Traceback", r.stderr)
        self.assertEqual(self.server.requests, [])

    def test_result_printed_as_json(self):
        r = self.rpc("bdev_get_bdevs", "-b", "Malloc0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout),
                         {"method": "bdev_get_bdevs", "params": {"name": "Malloc0"}})
        self.assertIn('\n  "method": "bdev_get_bdevs"', r.stdout)  # indent=2

    def test_plain_results_printed_like_spdk(self):
        r = self.rpc("call", "string_result")
        self.assertEqual((r.returncode, r.stdout), (0, "Malloc7\n"))
        r = self.rpc("call", "bool_result")
        self.assertEqual((r.returncode, r.stdout), (0, "true\n"))

    def test_response_with_or_without_newline_and_in_pieces(self):
        for newline in (True, False):
            self.server.newline = newline
            for method in ("framework_get_reactors", "slow_chunks"):
                with self.subTest(newline=newline, method=method):
                    r = self.rpc("call", method, '{"x": "a longer string to cut in pieces"}')
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(json.loads(r.stdout)["method"], method)

    def test_error_response(self):
        r = self.rpc("call", "fail_me", '{"name": "Nope"}')
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertTrue(r.stderr.startswith("request:\n"), r.stderr)
        self.assertIn('"method": "fail_me"', r.stderr)
        self.assertIn('"name": "Nope"', r.stderr)
        self.assertIn("Got JSON-RPC error response", r.stderr)
        self.assertIn('"code": -19', r.stderr)
        self.assertIn('"message": "No such device"', r.stderr)
        self.assertNotIn("Traceback", r.stderr)

    def test_not_running(self):
        missing = os.path.join(self.server.dir, "missing.sock")
        r = self.rpc("bdev_get_bdevs", sock=missing)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr, "rpc.py: cannot connect to %s: ferrite-tgt is not running? "
                                   "(No such file or directory)\n" % missing)

    def test_connection_refused(self):
        stale = os.path.join(self.server.dir, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)  # bound, never listening: a socket file left behind by a dead target
        self.addCleanup(s.close)
        r = self.rpc("bdev_get_bdevs", sock=stale)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "rpc.py: cannot connect to %s: ferrite-tgt is not running? "
                                   "(Connection refused)\n" % stale)

    def test_default_socket_from_env(self):
        env = dict(os.environ, FERRITE_RPC_SOCK=self.server.path)
        r = self.rpc("framework_get_reactors", sock=False, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.server.requests[-1]["method"], "framework_get_reactors")

    def test_timeout(self):
        start = time.monotonic()
        r = self.rpc("-t", "0.5", "call", "hang")
        self.assertLess(time.monotonic() - start, 10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no response to hang", r.stderr)
        self.assertIn("0.5s", r.stderr)
        self.assertNotIn("Traceback", r.stderr)

    def test_closed_without_response(self):
        r = self.rpc("call", "close_me")
        self.assertEqual(r.returncode, 1)
        self.assertIn("closed the connection without a response", r.stderr)
        self.assertNotIn("Traceback", r.stderr)

    def test_save_config(self):
        r = self.rpc("save_config")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), SAVED_CONFIG)
        self.assertNotIn("params", self.server.requests[-1])

        r = self.rpc("save_config", "-i", "-1")
        self.assertEqual(r.stdout, json.dumps(SAVED_CONFIG) + "\n")

        out = os.path.join(self.server.dir, "saved.json")
        r = self.rpc("save_config", "-o", out)
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        with open(out) as f:
            self.assertEqual(json.load(f), SAVED_CONFIG)

    def test_verbose_shows_request_on_stderr(self):
        r = self.rpc("-v", "bdev_get_bdevs")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"method": "bdev_get_bdevs"', r.stderr)


if __name__ == "__main__":
    unittest.main()
