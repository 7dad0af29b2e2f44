"""A fault-injecting HTTP proxy for the object-store tests (tests/faults.rs).

It stands between pretext and an S3-compatible server (moto) on loopback and, reproducibly by
seed, answers some requests with a 503 SlowDown or a 429, cuts some response bodies (GET, LIST)
or request bodies (PUT) short with a connection reset, delays requests, or resets every
connection during an outage of N seconds. Every decision is a hash of the seed, the request
(method, path, range) and how many times that request was seen, so a run's faults do not depend
on the order in which threads happen to ask.

    python3 fault_proxy.py --upstream 127.0.0.1:5000 [--seed 7] [--reset-get 0.15]
        [--reset-list 0.15] [--reset-put 0.1] [--status-rate 0.25] [--statuses 503,429]
        [--latency-ms 0] [--outage-after 40] [--outage-after-reads 2] [--outage-s 30]

It prints `listening on PORT` once it accepts connections. `GET /__faults` answers with the
counts of what it injected and of the requests it saw, as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
TOO_MANY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>TooManyRequests</Code>'
    b"<Message>Too many requests.</Message></Error>"
)


class Faults:
    """The settings, the per-request counts behind the decisions, and what was injected."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.statuses = [int(s) for s in args.statuses.split(",") if s]
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.reads = 0
        self.outage_from: float | None = None
        self.lock = threading.Lock()

    def draw(self, request: str, what: str) -> float:
        """A number in [0, 1) fixed by the seed, the request, its occurrence and `what`."""
        with self.lock:
            n = self.seen[request + what]
            self.seen[request + what] += 1
        digest = hashlib.sha256(f"{self.args.seed}|{what}|{request}|{n}".encode()).digest()
        return struct.unpack(">Q", digest[:8])[0] / 2**64

    def count(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def in_outage(self, read: bool) -> bool:
        """Counts the request; whether it falls in the outage."""
        with self.lock:
            self.requests += 1
            self.reads += read
            a = self.args
            if a.outage_s <= 0:
                return False
            due = self.requests > a.outage_after and self.reads > a.outage_after_reads
            if self.outage_from is None and due:
                self.outage_from = time.monotonic()
                sys.stderr.write(f"outage for {a.outage_s} s from request {self.requests}\n")
            return self.outage_from is not None and time.monotonic() - self.outage_from < a.outage_s


def reset(sock: socket.socket) -> None:
    """Closes the connection with a TCP reset, as a dropped connection looks to the client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    faults: Faults
    upstream: tuple[str, int]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    def do_GET(self) -> None:
        self.handle_any()

    def do_HEAD(self) -> None:
        self.handle_any()

    def do_PUT(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def do_DELETE(self) -> None:
        self.handle_any()

    def read_body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length if limit is None else min(limit, length))

    def handle_any(self) -> None:
        f = self.faults
        if self.path == "/__faults":
            body = json.dumps({**f.injected, "requests": f.requests, "reads": f.reads}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        is_list = self.command == "GET" and ("list-type" in self.path or "prefix=" in self.path)
        if f.args.log:
            with f.lock, open(f.args.log, "a") as log:
                log.write(f"{f.requests} {self.command} {self.path} {self.headers.get('Range', '')}\n")
        if f.in_outage(self.command == "GET" and not is_list):
            f.count("outage_reset")
            self.close_connection = True
            reset(self.connection)
            return
        a = f.args
        request = f"{self.command} {self.path} {self.headers.get('Range', '')}"
        if a.latency_ms > 0:
            time.sleep(a.latency_ms / 1000 * f.draw(request, "latency"))
        if self.command == "PUT" and f.draw(request, "reset-put") < a.reset_put:
            # Cut the upload off half-way through its body.
            f.count("reset_PUT")
            self.read_body(limit=int(self.headers.get("Content-Length", "0")) // 2)
            self.close_connection = True
            reset(self.connection)
            return
        body = self.read_body()
        if f.statuses and f.draw(request, "status") < a.status_rate:
            status = f.statuses[int(f.draw(request, "which") * len(f.statuses))]
            f.count(f"status_{status}_{self.command}")
            text = SLOW_DOWN if status == 503 else TOO_MANY
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(text)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
        }
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = a.reset_list if is_list else a.reset_get
        if self.command == "GET" and len(data) > 1 and f.draw(request, "reset") < cut:
            # Half the body, then a reset: the client's read fails part-way.
            f.count("reset_LIST" if is_list else "reset_GET")
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            reset(self.connection)
            return
        self.wfile.write(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, help="HOST:PORT of the server behind the proxy")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reset-get", type=float, default=0.0, help="share of object GETs whose body is cut short")
    p.add_argument("--reset-list", type=float, default=0.0, help="share of LISTs whose body is cut short")
    p.add_argument("--reset-put", type=float, default=0.0, help="share of PUTs cut off mid-body")
    p.add_argument("--status-rate", type=float, default=0.0, help="share of requests answered with an error status")
    p.add_argument("--statuses", default="503", help="the error statuses to answer with, e.g. 503,429")
    p.add_argument("--latency-ms", type=float, default=0.0, help="each request waits up to this long")
    p.add_argument("--outage-after", type=int, default=0, help="requests served before the outage")
    p.add_argument(
        "--outage-after-reads", type=int, default=0, help="object GETs (not listings) served before the outage"
    )
    p.add_argument("--outage-s", type=float, default=0.0, help="how long every connection is reset")
    p.add_argument("--log", help="append each request (method, path, range) to this file")
    args = p.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    Handler.faults = Faults(args)
    Handler.upstream = (host, int(port))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
