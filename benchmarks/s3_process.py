"""A local S3 server (moto, ``tests/servers.py``) in a process of its own, for the benchmarks.

In the benchmark's process the server's request handling would compete for the GIL with the
code being measured. The child creates one bucket and answers commands over a pipe: set the
injected latency, clear the request log, and count what it saw.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

__all__ = ["Server"]


def _serve(conn: Any, bucket: str) -> None:
    from servers import RecordingMotoServer  # tests/ is on the parent's sys.path (spawn copies it)

    with RecordingMotoServer() as server:
        server.create_bucket(bucket)
        conn.send(server.endpoint_url)
        while True:
            command, arg = conn.recv()
            if command == "latency":
                server.latency = arg
                reply: Any = None
            elif command == "clear":
                server.log.clear()
                reply = None
            elif command == "stats":  # (requests, GET body bytes)
                gets = server.log.gets()
                reply = (len(server.log.requests), sum(g.bytes_sent or 0 for g in gets))
            elif command == "counts":  # (GETs, HEADs, requests)
                log = server.log
                reply = (log.count("GET"), log.count("HEAD"), log.count())
            elif command == "stop":
                conn.send(None)
                return
            else:
                reply = ValueError(f"unknown command {command!r}")
            conn.send(reply)


class Server:
    """The moto process: its latency, its request log, and fsspec options to reach it."""

    def __init__(self, bucket: str = "bench") -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, bucket), daemon=True)
        self.process.start()
        self.endpoint_url: str = self.conn.recv()
        self.options = {"endpoint_url": self.endpoint_url, "key": "testing", "secret": "testing"}
        self._latency = 0.0

    def call(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return self.conn.recv()

    @property
    def latency(self) -> float:
        """Seconds the server waits before answering each request."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.call("latency", seconds)
        self._latency = seconds

    def close(self) -> None:
        self.call("stop")
        self.process.join(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
