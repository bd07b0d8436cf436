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
