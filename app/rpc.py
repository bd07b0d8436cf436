#!/usr/bin/env python3
"""rpc.py: the JSON-RPC client of ferrite-tgt (Python 3, standard library only).

Shaped like SPDK's scripts/rpc.py:

    rpc.py [-s SOCK] [-t TIMEOUT] [-v] METHOD [args]

It sends one JSON-RPC 2.0 request over the target's Unix socket, prints the
result and exits 0; on a JSON-RPC error it prints the request and the error to
stderr and exits 1.
"""

import argparse
import json
import os
import socket
import sys
import time

DEFAULT_SOCK = "/var/tmp/ferrite.sock"
DEFAULT_TIMEOUT = 60.0
PROG = "rpc.py"


class RpcError(Exception):
    """A failure that ends the program with one message on stderr and exit 1."""


class JSONRPCError(RpcError):
    """The server answered with a JSON-RPC error object."""

    def __init__(self, request, error):
        self.request = request
        self.error = error
        super().__init__("\n".join([
            "request:",
            json.dumps(request, indent=2),
            "Got JSON-RPC error response",
            "response:",
            json.dumps(error, indent=2),
        ]))


class Client:
    """One connection to the target's RPC socket; one request at a time."""

    def __init__(self, sock_path, timeout=DEFAULT_TIMEOUT, verbose=False):
        self.sock_path = sock_path
        self.timeout = timeout
        self.verbose = verbose
        self.next_id = 1
        self.deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(sock_path)
        except socket.timeout:
            self.sock.close()
            raise RpcError("%s: timed out connecting to %s after %gs"
                           % (PROG, sock_path, timeout))
        except OSError as e:
            self.sock.close()
            raise RpcError("%s: cannot connect to %s: ferrite-tgt is not running? (%s)"
                           % (PROG, sock_path, e.strerror or e))

    def close(self):
        self.sock.close()

    def _log(self, what, obj):
        if self.verbose:
            print("%s: %s %s" % (PROG, what, json.dumps(obj)), file=sys.stderr)

    def _remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        return left

    def call(self, method, params=None):
        """Send one request and return its result; raise JSONRPCError on an error response."""
        request = {"jsonrpc": "2.0", "method": method, "id": self.next_id}
        self.next_id += 1
        if params:
            request["params"] = params
        self._log("request", request)
        try:
            self.sock.settimeout(self._remaining())
            self.sock.sendall(json.dumps(request).encode())
            response = self._recv()
        except socket.timeout:
            raise RpcError("%s: no response to %s from %s within %gs"
                           % (PROG, method, self.sock_path, self.timeout))
        except OSError as e:
            raise RpcError("%s: connection to %s failed: %s"
                           % (PROG, self.sock_path, e.strerror or e))
        self._log("response", response)
        if not isinstance(response, dict):
            raise RpcError("%s: response is not a JSON object: %s" % (PROG, json.dumps(response)))
        if "error" in response:
            raise JSONRPCError(request, response["error"])
        if "result" not in response:
            raise RpcError("%s: response has neither result nor error: %s"
                           % (PROG, json.dumps(response)))
        return response["result"]

    def _recv(self):
        """Read until the buffer holds one complete JSON value (newline or not)."""
        decoder = json.JSONDecoder()
        buf = b""
        while True:
            self.sock.settimeout(self._remaining())
            chunk = self.sock.recv(65536)
            if chunk:
                buf += chunk
            text = buf.decode("utf-8", errors="replace").lstrip()
            if text:
                try:
                    value, _ = decoder.raw_decode(text)
                    return value
                except ValueError:
                    pass
            if not chunk:
                if text:
                    raise RpcError("%s: connection closed inside an incomplete response: %r"
                                   % (PROG, text[:200]))
                raise RpcError("%s: %s closed the connection without a response"
                               % (PROG, self.sock_path))


def print_json(value):
    """Print a result as SPDK's rpc.py does: JSON with indent 2, strings bare."""
    print(json.dumps(value, indent=2).strip('"'))


def compact(**params):
    """The params object without the entries whose value is None."""
    return {k: v for k, v in params.items() if v is not None}


def size_to_blocks(total_size_mib, block_size):
    return int((total_size_mib * 1024 * 1024) // block_size)


def json_object(text):
    """argparse type of `call`'s params: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("params are not valid JSON: %s" % e)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("params must be a JSON object, got %s" % text)
    return value


def command(subparsers, name, help_text, method=None, build=None, show=print_json):
    """Add one sub-command that calls `method` (default: its own name) with build(args)."""
    p = subparsers.add_parser(name, help=help_text, description=help_text)

    def run(client, args):
        params = build(args) if build else None
        show(client.call(method or name, params))

    p.set_defaults(func=run)
    return p


def add_rpc_commands(sub):
    p = command(sub, "rpc_get_methods", "List the RPC methods the target serves",
                build=lambda a: compact(current=a.current, include_aliases=a.include_aliases))
    p.add_argument("--current", action="store_true", default=None,
                   help="only the methods callable in the current state")
    p.add_argument("--include-aliases", action="store_true", default=None,
                   help="include deprecated aliases")

    p = sub.add_parser("call", help="Call any METHOD with a JSON object of params",
                       description="Call any METHOD with a JSON object of params")
    p.add_argument("method", help="the method name, e.g. bdev_get_bdevs")
    p.add_argument("params", nargs="?", type=json_object,
                   help='params as one JSON object, e.g. \'{"name": "Malloc0"}\'')
    p.set_defaults(func=lambda client, a: print_json(client.call(a.method, a.params)))


def add_framework_commands(sub):
    command(sub, "framework_get_reactors", "Show the reactors and their pollers")
    command(sub, "framework_shutdown", "Stop the target")
    command(sub, "rdma_get_stats", "Show the RDMA layer's CM ids, queue pairs and per-reactor queues")

    def save_config(client, args):
        config = client.call("save_config")
        indent = args.indent if args.indent >= 0 else None
        text = json.dumps(config, indent=indent) + "\n"
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)

    p = sub.add_parser("save_config", help="Print the live configuration as a --json config file",
                       description="Print the live configuration as a --json config file")
    p.add_argument("-i", "--indent", type=int, default=2,
                   help="indent level (default 2; below 0 prints compact JSON)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=save_config)


def add_bdev_commands(sub):
    # malloc
    p = command(sub, "bdev_malloc_create", "Create a bdev in memory",
                build=lambda a: compact(name=a.name,
                                        num_blocks=size_to_blocks(a.total_size, a.block_size),
                                        block_size=a.block_size, uuid=a.uuid))
    p.add_argument("-b", "--name", help="name of the bdev (default: chosen by the target)")
    p.add_argument("-u", "--uuid", help="UUID of the bdev")
    p.add_argument("total_size", type=float, help="size of the bdev in MiB (float > 0)")
    p.add_argument("block_size", type=int, help="block size in bytes")

    p = command(sub, "bdev_malloc_delete", "Delete a malloc bdev",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="malloc bdev name")

    # null
    p = command(sub, "bdev_null_create", "Create a bdev that drops writes and reads zeroes",
                build=lambda a: compact(name=a.name,
                                        num_blocks=size_to_blocks(a.total_size, a.block_size),
                                        block_size=a.block_size, uuid=a.uuid))
    p.add_argument("name", help="name of the bdev")
    p.add_argument("-u", "--uuid", help="UUID of the bdev")
    p.add_argument("total_size", type=float, help="size of the bdev in MiB")
    p.add_argument("block_size", type=int, help="block size in bytes")

    p = command(sub, "bdev_null_delete", "Delete a null bdev",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="null bdev name")

    # uring
    p = command(sub, "bdev_uring_create",
                "Create a bdev on a file or block device, through io_uring",
                build=lambda a: compact(filename=a.filename, name=a.name,
                                        block_size=a.block_size, uuid=a.uuid,
                                        sqpoll=True if a.sqpoll else None))
    p.add_argument("filename", help="path of the file or block device")
    p.add_argument("name", help="name of the bdev")
    p.add_argument("block_size", type=int, nargs="?",
                   help="block size in bytes (default: the device's logical block size, "
                        "512 for a file)")
    p.add_argument("-u", "--uuid", help="UUID of the bdev")
    p.add_argument("--sqpoll", action="store_true",
                   help="submit through an SQPOLL ring (a kernel thread polls for I/O)")

    p = command(sub, "bdev_uring_delete", "Delete a uring bdev",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="uring bdev name")

    p = command(sub, "bdev_uring_rescan", "Pick up the new size of a uring bdev's file",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="uring bdev name")

    # nvme
    p = command(sub, "bdev_nvme_create",
                "Create a bdev on an NVMe namespace through io_uring passthrough",
                build=lambda a: compact(filename=a.filename, name=a.name,
                                        block_size=a.block_size, uuid=a.uuid))
    p.add_argument("filename", help="the namespace's generic char device, /dev/ngXnY")
    p.add_argument("name", help="name of the bdev")
    p.add_argument("block_size", type=int, nargs="?",
                   help="block size in bytes; must be the namespace's (default: it)")
    p.add_argument("-u", "--uuid", help="UUID of the bdev (default: the namespace's NGUID)")

    p = command(sub, "bdev_nvme_delete", "Delete an nvme bdev",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="nvme bdev name")

    p = command(sub, "bdev_nvme_send_cmd", "NVMe passthrough command (SPDK's parameters)",
                build=lambda a: compact(name=a.name, cmd_type=a.cmd_type,
                                        data_direction=a.data_direction, cmdbuf=a.cmdbuf,
                                        data=a.data, metadata=a.metadata,
                                        data_len=a.data_len, metadata_len=a.metadata_len,
                                        timeout_ms=a.timeout_ms))
    p.add_argument("-n", "--nvme-name", dest="name", required=True, help="nvme bdev name")
    p.add_argument("-t", "--cmd-type", choices=["admin", "io"], required=True,
                   help="admin (to the controller) or io (to the namespace)")
    p.add_argument("-r", "--data-direction", choices=["c2h", "h2c"], required=True,
                   help="c2h: data comes from the device; h2c: data goes to it")
    p.add_argument("-c", "--cmdbuf", required=True,
                   help="the 64-byte NVMe command, URL-safe base64")
    p.add_argument("-d", "--data", help="data for an h2c command, URL-safe base64")
    p.add_argument("-m", "--metadata", help="metadata (not supported by ferrite)")
    p.add_argument("-D", "--data-length", dest="data_len", type=int,
                   help="bytes of data a c2h command returns")
    p.add_argument("-M", "--metadata-length", dest="metadata_len", type=int,
                   help="bytes of metadata (not supported by ferrite)")
    p.add_argument("-T", "--timeout-ms", dest="timeout_ms", type=int,
                   help="command timeout in milliseconds (default: the kernel's)")

    # split
    p = command(sub, "bdev_split_create", "Split a bdev into split_count bdevs",
                build=lambda a: compact(base_bdev=a.base_bdev, split_count=a.split_count,
                                        split_size_mb=a.split_size_mb))
    p.add_argument("base_bdev", help="base bdev name")
    p.add_argument("-s", "--split-size-mb", type=int,
                   help="size in MiB of each split bdev (default: base size / split_count)")
    p.add_argument("split_count", type=int, help="number of split bdevs to create")

    p = command(sub, "bdev_split_delete", "Delete the split bdevs of a base bdev",
                build=lambda a: {"base_bdev": a.base_bdev})
    p.add_argument("base_bdev", help="base bdev name")

    # delay
    p = command(sub, "bdev_delay_create", "Add a delay bdev on an existing bdev",
                build=lambda a: compact(base_bdev_name=a.base_bdev_name, name=a.name,
                                        avg_read_latency=a.avg_read_latency,
                                        p99_read_latency=a.nine_nine_read_latency,
                                        avg_write_latency=a.avg_write_latency,
                                        p99_write_latency=a.nine_nine_write_latency))
    p.add_argument("-b", "--base-bdev-name", required=True, help="name of the existing bdev")
    p.add_argument("-d", "--name", required=True, help="name of the delay bdev")
    p.add_argument("-r", "--avg-read-latency", type=int, required=True,
                   help="average read latency to add, in microseconds")
    p.add_argument("-t", "--nine-nine-read-latency", type=int, required=True,
                   help="p99 read latency to add, in microseconds")
    p.add_argument("-w", "--avg-write-latency", type=int, required=True,
                   help="average write latency to add, in microseconds")
    p.add_argument("-n", "--nine-nine-write-latency", type=int, required=True,
                   help="p99 write latency to add, in microseconds")

    p = command(sub, "bdev_delay_delete", "Delete a delay bdev",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="delay bdev name")

    # error
    p = command(sub, "bdev_error_create", "Add an error-injection bdev on top of a bdev",
                build=lambda a: {"base_name": a.base_name})
    p.add_argument("base_name", help="base bdev name")

    p = command(sub, "bdev_error_delete", "Delete an error-injection bdev",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="error bdev name")

    p = command(sub, "bdev_error_inject_error", "Make an error bdev fail its next I/Os",
                build=lambda a: compact(name=a.name, io_type=a.io_type,
                                        error_type=a.error_type, num=a.num))
    p.add_argument("name", help="error bdev name")
    p.add_argument("io_type", choices=["read", "write", "unmap", "flush", "write_zeroes",
                                       "compare", "reset", "all"], help="the I/O type to fail")
    p.add_argument("error_type", choices=["failure", "nomem"], help="how to fail it")
    p.add_argument("-n", "--num", type=int, default=1,
                   help="number of I/Os to fail (default 1)")

    # queries
    p = command(sub, "bdev_get_bdevs", "List the bdevs, or the one named",
                build=lambda a: compact(name=a.name))
    p.add_argument("-b", "--name", help="only this bdev")

    p = command(sub, "bdev_get_iostat", "Show I/O statistics of the bdevs, or the one named",
                build=lambda a: compact(name=a.name))
    p.add_argument("-b", "--name", help="only this bdev")


# iscsi: argument shapes as SPDK's rpc.py (space-separated lists in one quoted
# argument, TAG:TAG maps, bdev:LUN pairs); flags are sent only when given.

def words(text):
    """argparse type: a quoted, whitespace-separated list ('ANY 127.0.0.1/32')."""
    return text.split()


def _pairs(text, what, left, right, convert_left):
    out = []
    for item in text.split():
        a, sep, b = item.rpartition(":")
        if not sep or not a or not b:
            raise argparse.ArgumentTypeError("%r is not %s" % (item, what))
        try:
            out.append({left: convert_left(a), right: int(b)})
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (item, what))
    return out


def pg_ig_maps(text):
    """argparse type: '1:1 2:1' -> [{"pg_tag": 1, "ig_tag": 1}, ...]."""
    return _pairs(text, "PG_TAG:IG_TAG", "pg_tag", "ig_tag", int)


def luns(text):
    """argparse type: 'Malloc0:0 Malloc1:1' -> [{"bdev_name": "Malloc0", "lun_id": 0}, ...]."""
    return _pairs(text, "BDEV:LUN_ID", "bdev_name", "lun_id", str)


def portals(text):
    """argparse type: 'HOST:PORT[@iser] ...' (IPv6 in brackets: '[::1]:3260')."""
    out = []
    for item in text.split():
        address, _, suffix = item.partition("@")
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port or suffix not in ("", "iser"):
            raise argparse.ArgumentTypeError(
                "%r is not HOST:PORT or HOST:PORT@iser (IPv6 as [::1]:3260)" % item)
        portal = {"host": host, "port": port}
        if suffix:
            portal["iser"] = True
        out.append(portal)
    return out


SECRET_KEYS = ("user", "secret", "muser", "msecret")


def chap_secrets(text):
    """argparse type: 'user:u1 secret:s1 muser:mu1 msecret:ms1,user:u2 secret:s2'."""
    out = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        secret = {}
        for item in entry.split():
            key, sep, value = item.partition(":")
            if not sep or key not in SECRET_KEYS or not value:
                raise argparse.ArgumentTypeError(
                    "%r is not KEY:VALUE with KEY one of %s" % (item, ", ".join(SECRET_KEYS)))
            secret[key] = value
        out.append(secret)
    return out


def add_chap_flags(p, what):
    """-d|-r, -m and -g, as SPDK's rpc.py has them."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-d", "--disable-chap", action="store_true", default=None,
                   help="disable CHAP for %s" % what)
    g.add_argument("-r", "--require-chap", action="store_true", default=None,
                   help="require CHAP for %s" % what)
    p.add_argument("-m", "--mutual-chap", action="store_true", default=None,
                   help="require mutual (bidirectional) CHAP for %s" % what)
    p.add_argument("-g", "--chap-group", type=int,
                   help="auth group of the CHAP secrets for %s" % what)


def chap_params(a):
    return compact(disable_chap=a.disable_chap, require_chap=a.require_chap,
                   mutual_chap=a.mutual_chap, chap_group=a.chap_group)


ISCSI_OPTIONS = [
    # (short, long, type or None for a flag, help)
    ("-f", "--auth-file", str, "CHAP secrets file (SPDK's; refused: use iscsi_create_auth_group)"),
    ("-b", "--node-base", str, "prefix of target names given without one"),
    ("-o", "--nop-timeout", int, "seconds without a NOP-In answer before dropping a connection"),
    ("-n", "--nop-in-interval", int, "seconds between NOP-Ins to an idle initiator"),
    ("-a", "--max-sessions", int, "sessions accepted at once"),
    ("-q", "--max-queue-depth", int, "largest target node queue depth"),
    ("-c", "--max-connections-per-session", int, "offered MaxConnections"),
    ("-w", "--default-time2wait", int, "offered DefaultTime2Wait, seconds"),
    ("-v", "--default-time2retain", int, "offered DefaultTime2Retain, seconds"),
    ("-s", "--first-burst-length", int, "offered FirstBurstLength, bytes"),
    ("-l", "--error-recovery-level", int, "offered ErrorRecoveryLevel (only 0)"),
    ("-p", "--allow-duplicated-isid", None, "allow a second session with an ISID in use"),
    ("-x", "--max-large-datain-per-connection", int, "large reads outstanding per connection"),
    ("-k", "--max-r2t-per-connection", int, "R2Ts outstanding per connection"),
    ("-u", "--pdu-pool-size", int, "PDUs in the pool"),
    ("-j", "--immediate-data-pool-size", int, "immediate-data buffers in the pool"),
    ("-z", "--data-out-pool-size", int, "Data-Out buffers in the pool"),
]


def add_iscsi_commands(sub):
    # options and discovery auth
    def set_options_params(a):
        params = {}
        for _, long_name, _, _ in ISCSI_OPTIONS:
            key = long_name[2:].replace("-", "_")
            if getattr(a, key) is not None:
                params[key] = getattr(a, key)
        if a.immediate_data is not None:
            params["immediate_data"] = a.immediate_data
        params.update(chap_params(a))
        return params

    p = command(sub, "iscsi_set_options",
                "Set the global iSCSI options (before any portal group or target node)",
                build=set_options_params)
    for short, long_name, kind, help_text in ISCSI_OPTIONS:
        if kind is None:
            p.add_argument(short, long_name, action="store_true", default=None, help=help_text)
        else:
            p.add_argument(short, long_name, type=kind, help=help_text)
    p.add_argument("-i", "--immediate-data", dest="immediate_data", action="store_const",
                   const=True, default=None, help="offer ImmediateData=Yes (the default)")
    p.add_argument("--no-immediate-data", dest="immediate_data", action="store_const",
                   const=False, help="offer ImmediateData=No")
    add_chap_flags(p, "discovery sessions")

    command(sub, "iscsi_get_options", "Show the global iSCSI options")

    p = command(sub, "iscsi_set_discovery_auth", "Set CHAP for discovery sessions",
                build=chap_params)
    add_chap_flags(p, "discovery sessions")

    command(sub, "iscsi_get_discovery_auth", "Show the CHAP settings of discovery sessions")

    # auth groups
    p = command(sub, "iscsi_create_auth_group", "Create a group of CHAP secrets",
                build=lambda a: compact(tag=a.tag, secrets=a.secrets or None))
    p.add_argument("tag", type=int, help="auth group tag (integer > 0)")
    p.add_argument("-c", "--secrets", type=chap_secrets,
                   help="comma-separated secrets, each 'user:U secret:S [muser:MU msecret:MS]'")

    p = command(sub, "iscsi_delete_auth_group", "Delete an auth group",
                build=lambda a: {"tag": a.tag})
    p.add_argument("tag", type=int, help="auth group tag")

    p = command(sub, "iscsi_auth_group_add_secret", "Add a CHAP secret to an auth group",
                build=lambda a: compact(tag=a.tag, user=a.user, secret=a.secret,
                                        muser=a.muser, msecret=a.msecret))
    p.add_argument("tag", type=int, help="auth group tag")
    p.add_argument("-u", "--user", required=True, help="CHAP name of the initiator")
    p.add_argument("-s", "--secret", required=True, help="CHAP secret of the initiator")
    p.add_argument("-m", "--muser", help="CHAP name of the target, for mutual CHAP")
    p.add_argument("-r", "--msecret", help="CHAP secret of the target, for mutual CHAP")

    p = command(sub, "iscsi_auth_group_remove_secret", "Remove a CHAP secret from an auth group",
                build=lambda a: {"tag": a.tag, "user": a.user})
    p.add_argument("tag", type=int, help="auth group tag")
    p.add_argument("-u", "--user", required=True, help="CHAP name of the secret to remove")

    command(sub, "iscsi_get_auth_groups", "List the auth groups and their secrets")

    # portal groups
    def portal_group_params(a):
        ps = a.portals
        if a.iser:
            ps = [dict(q, iser=True) for q in ps]
        return compact(tag=a.tag, portals=ps, private=a.private, wait=a.wait)

    p = command(sub, "iscsi_create_portal_group", "Create a portal group and listen on its portals",
                build=portal_group_params)
    p.add_argument("tag", type=int, help="portal group tag (1..65535)")
    p.add_argument("portals", type=portals,
                   help="'HOST:PORT ...', e.g. '127.0.0.1:3260 [::1]:3260'; "
                        "HOST:PORT@iser for an iSER portal")
    p.add_argument("-p", "--private", action="store_true", default=None,
                   help="never report these portals in discovery (SendTargets)")
    p.add_argument("-w", "--wait", action="store_true", default=None,
                   help="do not accept connections until iscsi_start_portal_group")
    p.add_argument("--iser", action="store_true",
                   help="every portal of the group is an iSER (RDMA) portal")

    p = command(sub, "iscsi_start_portal_group", "Start accepting on a portal group made with -w",
                build=lambda a: {"tag": a.tag})
    p.add_argument("tag", type=int, help="portal group tag")

    p = command(sub, "iscsi_delete_portal_group", "Delete a portal group no target node uses",
                build=lambda a: {"tag": a.tag})
    p.add_argument("tag", type=int, help="portal group tag")

    command(sub, "iscsi_get_portal_groups", "List the portal groups")

    # initiator groups
    p = command(sub, "iscsi_create_initiator_group", "Create an initiator group",
                build=lambda a: {"tag": a.tag, "initiators": a.initiators,
                                 "netmasks": a.netmasks})
    p.add_argument("tag", type=int, help="initiator group tag (integer > 0)")
    p.add_argument("initiators", type=words,
                   help="'ANY' or initiator names, '!NAME' to deny one, e.g. "
                        "'!iqn.2016-06.io.spdk:bad ANY'")
    p.add_argument("netmasks", type=words,
                   help="'ANY' or networks, '!NET' to deny one, e.g. '127.0.0.1/32 [fd00::]/8'")

    for name, verb in (("iscsi_initiator_group_add_initiators", "Add initiators or netmasks to"),
                       ("iscsi_initiator_group_remove_initiators",
                        "Remove initiators or netmasks from")):
        p = command(sub, name, "%s an initiator group" % verb,
                    build=lambda a: compact(tag=a.tag, initiators=a.initiators,
                                            netmasks=a.netmasks))
        p.add_argument("tag", type=int, help="initiator group tag")
        p.add_argument("-n", dest="initiators", type=words, help="'NAME ...' (quoted)")
        p.add_argument("-m", dest="netmasks", type=words, help="'NETMASK ...' (quoted)")

    p = command(sub, "iscsi_delete_initiator_group", "Delete an initiator group no target node uses",
                build=lambda a: {"tag": a.tag})
    p.add_argument("tag", type=int, help="initiator group tag")

    command(sub, "iscsi_get_initiator_groups", "List the initiator groups")

    # target nodes
    def target_node_params(a):
        params = {"name": a.name, "alias_name": a.alias_name, "pg_ig_maps": a.pg_ig_maps,
                  "luns": a.luns, "queue_depth": a.queue_depth}
        params.update(chap_params(a))
        params.update(compact(header_digest=a.header_digest, data_digest=a.data_digest))
        return params

    p = command(sub, "iscsi_create_target_node", "Create a target node",
                build=target_node_params)
    p.add_argument("name", help="target name: a full iSCSI name, or one the node base "
                                "is put in front of (disk0 -> NODE_BASE:disk0)")
    p.add_argument("alias_name", help="target alias ('' for none)")
    p.add_argument("luns", type=luns, help="'BDEV:LUN_ID ...', e.g. 'Malloc0:0 Malloc1:1' "
                                           "(LUN 0 is required)")
    p.add_argument("pg_ig_maps", type=pg_ig_maps,
                   help="'PG_TAG:IG_TAG ...', e.g. '1:1 2:1'")
    p.add_argument("queue_depth", type=int, help="commands outstanding per session")
    add_chap_flags(p, "this target node")
    p.add_argument("-H", "--header-digest", action="store_true", default=None,
                   help="require HeaderDigest=CRC32C")
    p.add_argument("-D", "--data-digest", action="store_true", default=None,
                   help="require DataDigest=CRC32C")

    p = command(sub, "iscsi_delete_target_node", "Delete a target node (its sessions drop)",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="target name")

    p = command(sub, "iscsi_target_node_add_lun", "Add a LUN to a target node",
                build=lambda a: compact(name=a.name, bdev_name=a.bdev_name, lun_id=a.lun_id))
    p.add_argument("name", help="target name")
    p.add_argument("bdev_name", help="bdev to export")
    p.add_argument("-i", dest="lun_id", type=int,
                   help="LUN id (default: the lowest free one)")

    for name, verb in (("iscsi_target_node_add_pg_ig_maps", "Add"),
                       ("iscsi_target_node_remove_pg_ig_maps", "Remove")):
        p = command(sub, name, "%s portal group to initiator group maps of a target node" % verb,
                    build=lambda a: {"name": a.name, "pg_ig_maps": a.pg_ig_maps})
        p.add_argument("name", help="target name")
        p.add_argument("pg_ig_maps", type=pg_ig_maps, help="'PG_TAG:IG_TAG ...', e.g. '1:1 2:1'")

    p = command(sub, "iscsi_target_node_set_auth", "Set CHAP for logins to a target node",
                build=lambda a: dict(name=a.name, **chap_params(a)))
    p.add_argument("name", help="target name")
    add_chap_flags(p, "this target node")

    command(sub, "iscsi_get_target_nodes", "List the target nodes")
    command(sub, "iscsi_get_connections", "List the iSCSI connections")


def hex16(text):
    """argparse type of id_ext and ioc_guid: 16 hex digits, as ib_srp's add_target takes them."""
    digits = text[2:] if text.lower().startswith("0x") else text
    if len(digits) != 16 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise argparse.ArgumentTypeError("%r is not 16 hex digits" % text)
    return digits.lower()


def srp_lun(text):
    """argparse type of a LUN: BDEV:LUN_ID."""
    bdev, sep, lun = text.rpartition(":")
    if not sep or not bdev or not lun.isdigit():
        raise argparse.ArgumentTypeError("%r is not BDEV:LUN_ID" % text)
    return {"bdev_name": bdev, "lun_id": int(lun)}


def host_port(text):
    """argparse type of an RDMA CM listen address: HOST:PORT ([V6]:PORT)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError("%r is not HOST:PORT" % text)
    return host.strip("[]"), int(port)


def add_srp_commands(sub):
    def create(a):
        host, port = a.address
        return compact(name=a.name, id_ext=a.id_ext, ioc_guid=a.ioc_guid, host=host, port=port,
                       luns=a.luns, initiators=a.initiators)

    p = command(sub, "srp_create_target",
                "Create an SRP target listening on HOST:PORT over RDMA CM", build=create)
    p.add_argument("name", help="target name")
    p.add_argument("id_ext", type=hex16, help="identifier extension, 16 hex digits")
    p.add_argument("ioc_guid", type=hex16, help="I/O controller GUID, 16 hex digits")
    p.add_argument("address", type=host_port, help="RDMA CM listen address HOST:PORT")
    p.add_argument("luns", nargs="*", type=srp_lun, help="LUNs as BDEV:LUN_ID")
    p.add_argument("-i", "--initiator", dest="initiators", action="append",
                   help="allowed initiator: port id (0x + 32 hex digits) or source address; "
                        "repeat for more (default: any)")

    p = command(sub, "srp_delete_target", "Delete an SRP target",
                build=lambda a: {"name": a.name})
    p.add_argument("name", help="target name")

    p = command(sub, "srp_target_add_lun", "Add a LUN to an SRP target",
                build=lambda a: {"name": a.name, "bdev_name": a.lun["bdev_name"],
                                 "lun_id": a.lun["lun_id"]})
    p.add_argument("name", help="target name")
    p.add_argument("lun", type=srp_lun, help="BDEV:LUN_ID")

    p = command(sub, "srp_get_targets", "List the SRP targets",
                build=lambda a: compact(name=a.name))
    p.add_argument("-n", "--name", help="only this target")
    command(sub, "srp_get_channels", "List the SRP channels")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="JSON-RPC client of ferrite-tgt")
    parser.add_argument("-s", "--server", dest="server_addr", metavar="SOCK",
                        default=os.environ.get("FERRITE_RPC_SOCK", DEFAULT_SOCK),
                        help="Unix socket of the target (default: $FERRITE_RPC_SOCK or %s)"
                        % DEFAULT_SOCK)
    parser.add_argument("-t", "--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for the response (default %g)" % DEFAULT_TIMEOUT)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the request and the response on stderr")
    sub = parser.add_subparsers(dest="called_rpc_name", metavar="METHOD")
    sub.required = True
    add_rpc_commands(sub)
    add_framework_commands(sub)
    add_bdev_commands(sub)
    add_iscsi_commands(sub)
    add_srp_commands(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        client = Client(args.server_addr, args.timeout, args.verbose)
        try:
            args.func(client, args)
        finally:
            client.close()
    except RpcError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:  # e.g. save_config -o to an unwritable file
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
