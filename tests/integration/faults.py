"""Fault injection for the integration tests, on loopback only.

- ``TcpProxy``: a TCP proxy between a worker and PostgreSQL that a test can cut (every open connection
  is closed and new ones are refused, as during a database restart, a fail-over or a network partition)
  and restore, or pause (connections stay open and new ones are accepted, but no byte goes through: a
  server that hangs) and resume, or slow down (``latency_s``: every round trip takes that much longer, as
  a database across a slow network would).
- ``private_broker``: a second Apache Kafka broker in a temporary directory on free ports, which a test
  may stop and start again without disturbing the broker every other test uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from session_tally.localsvc.kafka import LocalKafka
from session_tally.localsvc.proc import free_port

__all__ = ["TcpProxy", "free_port", "private_broker"]


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``, in a thread with its own event loop.

    ``cut()`` closes every connection at once and refuses new ones (accepted, then closed at once) until
    ``restore()``. ``pause()`` holds every byte in both directions (open connections and new ones) until
    ``resume()``. ``accepted`` and ``dropped`` count connections, so a test can show the cut was felt.

    ``latency_s`` (settable at any time, for open connections too) holds every chunk from the server for
    that long before it reaches the client, in order: each request/response round trip gets that much
    slower, while throughput of a stream (a COPY, a large result) is not limited."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self.dropped = 0
        self.latency_s = 0.0
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._cut = False
        self._flowing: asyncio.Event | None = None  # created in the proxy's loop; cleared while paused
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()

        async def make_event() -> asyncio.Event:
            flowing = asyncio.Event()
            flowing.set()
            return flowing

        self._flowing = asyncio.run_coroutine_threadsafe(make_event(), self._loop).result(10)
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            self._drop_all()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> int:
        """Close every open connection and refuse new ones; returns how many were closed."""

        async def go() -> int:
            self._cut = True
            return self._drop_all()

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    def restore(self) -> None:
        async def go() -> None:
            self._cut = False

        asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    def pause(self) -> None:
        """Forward nothing (connections stay open, new ones are accepted) until :meth:`resume`."""
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _drop_all(self) -> int:
        pairs = list(self._open)
        for pair in pairs:
            for writer in pair:
                with contextlib.suppress(Exception):
                    writer.transport.abort()  # a reset, not a polite FIN: what a dead server looks like
        self._open.clear()
        self.dropped += len(pairs)
        return len(pairs)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._open.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe_delayed(up_reader, writer))
        finally:
            self._open.discard(pair)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # held while paused
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _pipe_delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Like ``_pipe``, each chunk delivered ``latency_s`` after it arrived (order kept)."""
        assert self._flowing is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()  # held while paused
                writer.write(data)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.latency_s, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await delivery
            with contextlib.suppress(Exception):
                writer.transport.abort()


@contextlib.contextmanager
def private_broker(state_dir: Path) -> Iterator[LocalKafka]:
    """A single-node KRaft broker of its own (state in ``state_dir``, free ports), stopped at the end."""
    broker = LocalKafka(state_dir, port=free_port(), controller_port=free_port())
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
