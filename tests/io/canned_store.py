"""A local HTTP server that answers every request with one canned error, for the refusals the
emulators cannot produce.

fake-gcs-server checks no credentials (it never answers 401 or 403), and moto has no
expiring tokens. The bodies below are the error documents the real services send (GCS JSON
API ``{"error": {...}}``, S3 ``<Error><Code>...``), so s3fs and gcsfs parse them as they
would in production; nothing is patched. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["CannedAnswer", "canned_store", "gcs_error", "s3_error"]

LOOPBACK = "127.0.0.1"


@dataclass
class CannedAnswer:
    """What the server answers (changeable while it runs) and the requests it saw."""

    status: int
    body: bytes
    content_type: str
    requests: list[str] = field(default_factory=list)


def gcs_error(status: int, message: str, reason: str) -> CannedAnswer:
    """A GCS JSON API error answer."""
    error = {"code": status, "message": message, "errors": [{"message": message,
             "domain": "global", "reason": reason}]}  # fmt: skip
    return CannedAnswer(status, json.dumps({"error": error}).encode(), "application/json")


def s3_error(status: int, code: str, message: str) -> CannedAnswer:
    """An S3 REST API error answer."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>0</RequestId></Error>"
    )
    return CannedAnswer(status, body.encode(), "application/xml")


@contextmanager
def canned_store(answer: CannedAnswer) -> Iterator[str]:
    """Serve ``answer`` to every request on 127.0.0.1; yields the endpoint URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            answer.requests.append(f"{self.command} {self.path}")
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _answer

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
