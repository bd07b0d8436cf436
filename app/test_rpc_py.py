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
            (["rdma_get_stats"], "rdma_get_stats", None),
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
            (["bdev_uring_create", "/dev/loop0", "Uring0"], "bdev_uring_create",
             {"filename": "/dev/loop0", "name": "Uring0"}),
            (["bdev_uring_create", "/tmp/f", "Uring1", "4096", "-u", "u-2", "--sqpoll"],
             "bdev_uring_create",
             {"filename": "/tmp/f", "name": "Uring1", "block_size": 4096, "uuid": "u-2",
              "sqpoll": True}),
            (["bdev_uring_delete", "Uring0"], "bdev_uring_delete", {"name": "Uring0"}),
            (["bdev_uring_rescan", "Uring1"], "bdev_uring_rescan", {"name": "Uring1"}),
            (["bdev_nvme_create", "/dev/ng0n1", "Nvme0"], "bdev_nvme_create",
             {"filename": "/dev/ng0n1", "name": "Nvme0"}),
            (["bdev_nvme_create", "/dev/ng0n1", "Nvme1", "4096", "-u", "u-3"],
             "bdev_nvme_create",
             {"filename": "/dev/ng0n1", "name": "Nvme1", "block_size": 4096, "uuid": "u-3"}),
            (["bdev_nvme_delete", "Nvme0"], "bdev_nvme_delete", {"name": "Nvme0"}),
            (["bdev_nvme_send_cmd", "-n", "Nvme0", "-t", "admin", "-r", "c2h", "-c", "BgA=",
              "-D", "4096"], "bdev_nvme_send_cmd",
             {"name": "Nvme0", "cmd_type": "admin", "data_direction": "c2h", "cmdbuf": "BgA=",
              "data_len": 4096}),
            (["bdev_nvme_send_cmd", "-n", "Nvme0", "-t", "io", "-r", "h2c", "-c", "AQA=",
              "-d", "AAAA", "-T", "1000"], "bdev_nvme_send_cmd",
             {"name": "Nvme0", "cmd_type": "io", "data_direction": "h2c", "cmdbuf": "AQA=",
              "data": "AAAA", "timeout_ms": 1000}),
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

    def test_iscsi_sub_command_requests(self):
        target = "iqn.2026-11.io.ferrite:disk0"
        cases = [
            # options and discovery auth
            (["iscsi_set_options"], "iscsi_set_options", None),
            (["iscsi_set_options", "-b", "iqn.2000-01.org.example", "-o", "30", "-n", "10",
              "-a", "16", "-q", "128", "-c", "1", "-w", "0", "-v", "0", "-s", "65536",
              "-l", "0", "-p", "-x", "32", "-k", "8", "-u", "1024", "-j", "512", "-z", "256",
              "-i"],
             "iscsi_set_options",
             {"node_base": "iqn.2000-01.org.example", "nop_timeout": 30, "nop_in_interval": 10,
              "max_sessions": 16, "max_queue_depth": 128, "max_connections_per_session": 1,
              "default_time2wait": 0, "default_time2retain": 0, "first_burst_length": 65536,
              "error_recovery_level": 0, "allow_duplicated_isid": True,
              "max_large_datain_per_connection": 32, "max_r2t_per_connection": 8,
              "pdu_pool_size": 1024, "immediate_data_pool_size": 512,
              "data_out_pool_size": 256, "immediate_data": True}),
            (["iscsi_set_options", "--no-immediate-data", "-r", "-m", "-g", "1", "-f", "x"],
             "iscsi_set_options",
             {"immediate_data": False, "require_chap": True, "mutual_chap": True,
              "chap_group": 1, "auth_file": "x"}),
            (["iscsi_get_options"], "iscsi_get_options", None),
            (["iscsi_set_discovery_auth", "-d"], "iscsi_set_discovery_auth",
             {"disable_chap": True}),
            (["iscsi_set_discovery_auth", "-r", "-m", "-g", "2"], "iscsi_set_discovery_auth",
             {"require_chap": True, "mutual_chap": True, "chap_group": 2}),
            (["iscsi_set_discovery_auth"], "iscsi_set_discovery_auth", None),
            (["iscsi_get_discovery_auth"], "iscsi_get_discovery_auth", None),
            # auth groups
            (["iscsi_create_auth_group", "1"], "iscsi_create_auth_group", {"tag": 1}),
            (["iscsi_create_auth_group", "1", "-c",
              "user:u1 secret:s1 muser:mu1 msecret:ms1,user:u2 secret:s:2"],
             "iscsi_create_auth_group",
             {"tag": 1, "secrets": [
                 {"user": "u1", "secret": "s1", "muser": "mu1", "msecret": "ms1"},
                 {"user": "u2", "secret": "s:2"}]}),
            (["iscsi_delete_auth_group", "1"], "iscsi_delete_auth_group", {"tag": 1}),
            (["iscsi_auth_group_add_secret", "1", "-u", "u", "-s", "s"],
             "iscsi_auth_group_add_secret", {"tag": 1, "user": "u", "secret": "s"}),
            (["iscsi_auth_group_add_secret", "1", "-u", "u", "-s", "s", "-m", "mu", "-r", "ms"],
             "iscsi_auth_group_add_secret",
             {"tag": 1, "user": "u", "secret": "s", "muser": "mu", "msecret": "ms"}),
            (["iscsi_auth_group_remove_secret", "1", "-u", "u"],
             "iscsi_auth_group_remove_secret", {"tag": 1, "user": "u"}),
            (["iscsi_get_auth_groups"], "iscsi_get_auth_groups", None),
            # portal groups
            (["iscsi_create_portal_group", "1", "127.0.0.1:3260"], "iscsi_create_portal_group",
             {"tag": 1, "portals": [{"host": "127.0.0.1", "port": "3260"}]}),
            (["iscsi_create_portal_group", "2", "10.0.0.1:3260  [::1]:3261@iser", "-p", "-w"],
             "iscsi_create_portal_group",
             {"tag": 2, "portals": [{"host": "10.0.0.1", "port": "3260"},
                                    {"host": "[::1]", "port": "3261", "iser": True}],
              "private": True, "wait": True}),
            (["iscsi_create_portal_group", "3", "0.0.0.0:3260", "--iser"],
             "iscsi_create_portal_group",
             {"tag": 3, "portals": [{"host": "0.0.0.0", "port": "3260", "iser": True}]}),
            (["iscsi_start_portal_group", "2"], "iscsi_start_portal_group", {"tag": 2}),
            (["iscsi_delete_portal_group", "2"], "iscsi_delete_portal_group", {"tag": 2}),
            (["iscsi_get_portal_groups"], "iscsi_get_portal_groups", None),
            # initiator groups
            (["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"],
             "iscsi_create_initiator_group",
             {"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}),
            (["iscsi_create_initiator_group", "2", "!iqn.a:bad iqn.b:good", "10.0.0.0/8 [fd00::]/8"],
             "iscsi_create_initiator_group",
             {"tag": 2, "initiators": ["!iqn.a:bad", "iqn.b:good"],
              "netmasks": ["10.0.0.0/8", "[fd00::]/8"]}),
            (["iscsi_initiator_group_add_initiators", "1", "-n", "iqn.c iqn.d", "-m", "10.1.0.0/16"],
             "iscsi_initiator_group_add_initiators",
             {"tag": 1, "initiators": ["iqn.c", "iqn.d"], "netmasks": ["10.1.0.0/16"]}),
            (["iscsi_initiator_group_remove_initiators", "1", "-n", "iqn.c"],
             "iscsi_initiator_group_remove_initiators", {"tag": 1, "initiators": ["iqn.c"]}),
            (["iscsi_delete_initiator_group", "2"], "iscsi_delete_initiator_group", {"tag": 2}),
            (["iscsi_get_initiator_groups"], "iscsi_get_initiator_groups", None),
            # target nodes
            (["iscsi_create_target_node", "disk0", "ferrite disk0", "Malloc0:0 Malloc1:1", "1:1 2:1",
              "64"], "iscsi_create_target_node",
             {"name": "disk0", "alias_name": "ferrite disk0",
              "luns": [{"bdev_name": "Malloc0", "lun_id": 0}, {"bdev_name": "Malloc1", "lun_id": 1}],
              "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}, {"pg_tag": 2, "ig_tag": 1}],
              "queue_depth": 64}),
            (["iscsi_create_target_node", target, "", "Malloc0:0", "1:1", "128",
              "-r", "-m", "-g", "1", "-H", "-D"], "iscsi_create_target_node",
             {"name": target, "alias_name": "", "luns": [{"bdev_name": "Malloc0", "lun_id": 0}],
              "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}], "queue_depth": 128,
              "require_chap": True, "mutual_chap": True, "chap_group": 1,
              "header_digest": True, "data_digest": True}),
            (["iscsi_create_target_node", "d", "a", "Malloc0:0", "1:1", "1", "-d"],
             "iscsi_create_target_node",
             {"name": "d", "alias_name": "a", "luns": [{"bdev_name": "Malloc0", "lun_id": 0}],
              "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}], "queue_depth": 1,
              "disable_chap": True}),
            (["iscsi_delete_target_node", target], "iscsi_delete_target_node", {"name": target}),
            (["iscsi_target_node_add_lun", target, "Malloc2"], "iscsi_target_node_add_lun",
             {"name": target, "bdev_name": "Malloc2"}),
            (["iscsi_target_node_add_lun", target, "Malloc2", "-i", "5"],
             "iscsi_target_node_add_lun", {"name": target, "bdev_name": "Malloc2", "lun_id": 5}),
            (["iscsi_target_node_add_pg_ig_maps", target, "1:2 3:1"],
             "iscsi_target_node_add_pg_ig_maps",
             {"name": target, "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 2},
                                             {"pg_tag": 3, "ig_tag": 1}]}),
            (["iscsi_target_node_remove_pg_ig_maps", target, "1:2"],
             "iscsi_target_node_remove_pg_ig_maps",
             {"name": target, "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 2}]}),
            (["iscsi_target_node_set_auth", target, "-r", "-g", "1"], "iscsi_target_node_set_auth",
             {"name": target, "require_chap": True, "chap_group": 1}),
            (["iscsi_target_node_set_auth", target], "iscsi_target_node_set_auth",
             {"name": target}),
            (["iscsi_get_target_nodes"], "iscsi_get_target_nodes", None),
            (["iscsi_get_connections"], "iscsi_get_connections", None),
        ]
        for argv, method, params in cases:
            with self.subTest(argv=argv):
                self.assert_request(argv, method, params)

    def test_srp_sub_command_requests(self):
        cases = [
            (["srp_create_target", "srp0", "5254000000000001", "0x5254000000000002",
              "169.254.77.1:5001", "Malloc0:0", "Malloc1:3"],
             "srp_create_target",
             {"name": "srp0", "id_ext": "5254000000000001", "ioc_guid": "5254000000000002",
              "host": "169.254.77.1", "port": 5001,
              "luns": [{"bdev_name": "Malloc0", "lun_id": 0},
                       {"bdev_name": "Malloc1", "lun_id": 3}]}),
            (["srp_create_target", "s", "ABCDEF0123456789", "0000000000000001", "[fe80::1]:5002",
              "-i", "169.254.77.2", "-i", "0x0000000000000000fe80000000000001"],
             "srp_create_target",
             {"name": "s", "id_ext": "abcdef0123456789", "ioc_guid": "0000000000000001",
              "host": "fe80::1", "port": 5002, "luns": [],
              "initiators": ["169.254.77.2", "0x0000000000000000fe80000000000001"]}),
            (["srp_delete_target", "srp0"], "srp_delete_target", {"name": "srp0"}),
            (["srp_target_add_lun", "srp0", "Malloc2:7"], "srp_target_add_lun",
             {"name": "srp0", "bdev_name": "Malloc2", "lun_id": 7}),
            (["srp_get_targets"], "srp_get_targets", None),
            (["srp_get_targets", "-n", "srp0"], "srp_get_targets", {"name": "srp0"}),
            (["srp_get_channels"], "srp_get_channels", None),
        ]
        for argv, method, params in cases:
            with self.subTest(argv=argv):
                self.assert_request(argv, method, params)

    def test_bad_srp_arguments_send_nothing(self):
        for argv in (["srp_create_target", "s", "123", "0000000000000001", "1.2.3.4:5"],
                     ["srp_create_target", "s", "000000000000000g", "0000000000000001", "h:5"],
                     ["srp_create_target", "s", "0000000000000001", "0000000000000001", "1.2.3.4"],
                     ["srp_create_target", "s", "0000000000000001", "0000000000000001",
                      "1.2.3.4:5", "Malloc0"],
                     ["srp_target_add_lun", "s", "Malloc0:x"],
                     ["srp_delete_target"]):
            with self.subTest(argv=argv):
                r = self.rpc(*argv)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertNotIn("Traceback", r.stderr)
        self.assertEqual(self.server.requests, [])

    def test_bad_iscsi_arguments_send_nothing(self):
        for argv in (["iscsi_create_portal_group", "1", "127.0.0.1"],
                     ["iscsi_create_portal_group", "1", "127.0.0.1:3260@rdma"],
                     ["iscsi_create_portal_group", "x", "127.0.0.1:3260"],
                     ["iscsi_create_target_node", "d", "a", "Malloc0", "1:1", "64"],
                     ["iscsi_create_target_node", "d", "a", "Malloc0:x", "1:1", "64"],
                     ["iscsi_create_target_node", "d", "a", "Malloc0:0", "1-1", "64"],
                     ["iscsi_create_target_node", "d", "a", "Malloc0:0", "1:1", "64", "-d", "-r"],
                     ["iscsi_create_target_node", "d", "a", "Malloc0:0", "1:1"],
                     ["iscsi_create_auth_group", "1", "-c", "user:u pass:s"],
                     ["iscsi_create_auth_group", "1", "-c", "user"],
                     ["iscsi_auth_group_add_secret", "1", "-u", "u"],
                     ["iscsi_set_discovery_auth", "-d", "-r"],
                     ["iscsi_create_initiator_group", "1", "ANY"],
                     ["iscsi_target_node_add_lun", "t", "b", "-i", "x"]):
            with self.subTest(argv=argv):
                r = self.rpc(*argv)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertNotIn("Traceback", r.stderr)
        self.assertEqual(self.server.requests, [])

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
