"""The worker's HTTP endpoint: probes and metrics over plain HTTP/1.0 (a small asyncio server in the
worker's event loop, so that a probe that answers proves the loop runs).

- ``GET /metrics``  the Prometheus text format (OpenMetrics when the scraper asks for it), content type
  from prometheus_client; the outbox and waiting-event gauges are read from PostgreSQL first (bounded:
  when it is away the rest is served all the same);
- ``GET /healthz``  200 or 503 with ``{"status", "checks", "details"}``: every check of the monitor;
- ``GET /livez``    200 while the event loop, the health monitor and the consumer loops make progress;
  never fails because PostgreSQL or Kafka is away (a restart would not bring them back);
- ``GET /readyz``   200 once PostgreSQL and Kafka answered the last round and both consumers joined
  their groups (docs/observability.md).

Binding: ``host`` is configurable (0.0.0.0 in containers); a port that is taken is an error
(:class:`EndpointError`), never a silent move to another port; port 0 asks for any free port.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from session_tally.metrics import Metrics

log = logging.getLogger("session_tally.http")

Verdict = tuple[dict[str, bool], dict[str, Any]]


class Probes(Protocol):
    def verdict(self) -> Verdict: ...
    def liveness(self) -> Verdict: ...
    def readiness(self) -> Verdict: ...


class EndpointError(Exception):
    """The endpoint cannot listen where it was told to (the message is one line for the CLI)."""


class HttpEndpoint:
    def __init__(
        self, metrics: Metrics, probes: Probes | None = None, refresh: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.metrics = metrics
        self.probes = probes  # None while starting: /livez 200, the others 503
        self.refresh = refresh
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port``; the port listened on (port 0: one the system chose)."""
        try:
            self.server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EndpointError(
                    f"cannot serve health and metrics on {host}:{port}: the port is in use (another worker on "
                    "this machine?); choose another with --http-port or SESSION_TALLY_HTTP_PORT (0: any free port, "
                    "-1: none)"
                ) from None
            raise EndpointError(f"cannot serve health and metrics on {host}:{port}: {exc.strerror or exc}") from None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = (parts[1] if len(parts) > 1 else "/").split("?", 1)[0]
            accept = ""
            while True:  # the headers, up to the blank line (only Accept is used)
                line = await asyncio.wait_for(reader.readline(), 5)
                if not line.strip():
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            status, ctype, body = await self._route(path, accept)
            head = f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except Exception:  # a broken probe never hurts the worker
            pass
        finally:
            writer.close()

    async def _route(self, path: str, accept: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            if self.refresh is not None:
                try:  # the gauges read PostgreSQL; when it is away the rest is served all the same
                    await asyncio.wait_for(self.refresh(), 3.0)
                except Exception:
                    self.metrics.inc("session_tally_gauge_refresh_failures_total")
            body, ctype = self.metrics.exposition(accept)
            return "200 OK", ctype, body
        probes = self.probes
        if path == "/healthz":
            verdict = probes.verdict() if probes else ({"started": False}, {})
        elif path == "/livez":
            verdict = probes.liveness() if probes else ({"started": True}, {"starting": True})
        elif path == "/readyz":
            verdict = probes.readiness() if probes else ({"started": False}, {})
        else:
            return "404 Not Found", "text/plain", b"not found\n"
        checks, details = verdict
        ok = all(checks.values())
        body = json.dumps({"status": "ok" if ok else "failing", "checks": checks, "details": details}).encode()
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
