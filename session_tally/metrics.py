"""Prometheus-style metrics and health checks of a worker, served on 127.0.0.1 over plain HTTP
(stdlib asyncio; no extra dependency).

- ``GET /healthz``  200 when the consumer, relay and clock loops are alive and PostgreSQL answers; 503
  otherwise, with a JSON body saying which check failed.
- ``GET /metrics``  counters and gauges in the Prometheus text format (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.started = time.time()

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        key = name + _labels(labels)
        self.counters[key] = self.counters.get(key, 0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name + _labels(labels)] = value

    def render(self) -> str:
        lines = [f"session_tally_uptime_seconds {time.time() - self.started:.3f}"]
        lines += [f"{k} {v:g}" for k, v in sorted(self.counters.items())]
        lines += [f"{k} {v:g}" for k, v in sorted(self.gauges.items())]
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


class HttpEndpoint:
    """A tiny HTTP/1.0 server for /healthz and /metrics."""

    def __init__(
        self,
        metrics: Metrics,
        health: Callable[[], Awaitable[dict[str, Any]]],
        refresh: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.refresh = refresh
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/healthz"):
                checks = await self.health()
                ok = all(v for v in checks.values() if isinstance(v, bool))  # other values are details
                body = json.dumps({"status": "ok" if ok else "failing", "checks": checks}).encode()
                status, ctype = ("200 OK" if ok else "503 Service Unavailable"), "application/json"
            elif path.startswith("/metrics"):
                if self.refresh is not None:
                    try:  # the gauges read PostgreSQL; when it is away the counters are served all the same
                        await asyncio.wait_for(self.refresh(), 3.0)
                    except Exception:
                        self.metrics.inc("session_tally_gauge_refresh_failures_total")
                body, status, ctype = self.metrics.render().encode(), "200 OK", "text/plain; version=0.0.4"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
        except Exception:  # a broken probe never hurts the worker
            pass
        finally:
            writer.close()
