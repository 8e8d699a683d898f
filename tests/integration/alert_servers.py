"""Real HTTP servers standing in for Slack's incoming webhook and Sentry's ingest API.

``SlackServer`` records every POST (JSON body) and can answer 429 with Retry-After a
number of times first; ``SentryServer`` records every envelope the real Sentry SDK
sends and splits it into items (events, check-ins, ...).
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, reply = outer.handle(self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SlackServer(_Server):
    def __init__(self) -> None:
        #: The secret part of the webhook path: tests assert it is never logged.
        self.secret = uuid.uuid4().hex
        self.rate_limit_times = 0
        self.retry_after = 1
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0AAAA/B0BBBB/{self.secret}"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        with self.lock:
            request: dict[str, Any] = {"path": path, "body": json.loads(body), "accepted": True}
            self.requests.append(request)
            if self.rate_limit_times > 0:
                self.rate_limit_times -= 1
                request["accepted"] = False
                return 429, {"Retry-After": str(self.retry_after)}, b"rate_limited"
        return 200, {"Content-Type": "text/html"}, b"ok"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Bodies Slack accepted (a 429'd POST is not a message)."""
        with self.lock:
            return [r["body"] for r in self.requests if r.get("accepted", True)]


class SentryServer(_Server):
    def __init__(self) -> None:
        self.key = uuid.uuid4().hex
        super().__init__()

    @property
    def dsn(self) -> str:
        return f"http://{self.key}@127.0.0.1:{self.port}/42"

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        encoding = {k.lower(): v for k, v in headers.items()}.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        with self.lock:
            self.requests.append({"path": path, "items": parse_envelope(body)})
        return 200, {"Content-Type": "application/json"}, b"{}"

    def items(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                payload
                for r in self.requests
                for header, payload in r["items"]
                if header.get("type") == kind
            ]


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """Split a Sentry envelope into (item header, payload) pairs."""
    items: list[tuple[dict[str, Any], Any]] = []
    _, _, rest = body.partition(b"\n")
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        header = json.loads(line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header, json.loads(payload)))
        except ValueError:
            items.append((header, payload))
    return items


# Registered by name, so test modules import them as ``slack_server_fixture`` (no
# clash with the parameter name ``slack_server``).
@pytest.fixture(name="slack_server")
def slack_server_fixture() -> Iterator[SlackServer]:
    server = SlackServer()
    yield server
    server.close()


@pytest.fixture(name="sentry_server")
def sentry_server_fixture() -> Iterator[SentryServer]:
    server = SentryServer()
    yield server
    server.close()
