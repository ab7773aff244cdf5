"""A lean HTTP/1.1 client for load generation."""

from __future__ import annotations

import asyncio
import contextlib
import time


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client for the load generator: requests are prebuilt
    bytes, responses are (status, body). It costs far less CPU per request than a general
    client, which matters when the generator shares two cores with what it measures."""

    IDLE_MAX_S = 3.0  # below uvicorn's keep-alive timeout (5 s): older idle connections are not reused

    def __init__(self, host: str, port: int, *, connections: int, timeout: float = 60.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(connections)
        self.connections = connections
        self.busy = 0  # requests on a connection now
        self.busy_max = 0  # the most at once since the caller last reset it

    def build(self, method: str, path: str, body: bytes = b"", token: str | None = None) -> bytes:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(body)}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def request(self, raw: bytes) -> tuple[int, bytes, float]:
        """Send one prebuilt request; returns (status, body, wall time it was sent)."""
        async with self._slots:
            self.busy += 1
            self.busy_max = max(self.busy_max, self.busy)
            try:
                return await self._request(raw)
            finally:
                self.busy -= 1

    async def _request(self, raw: bytes) -> tuple[int, bytes, float]:
        for attempt in (0, 1):
            conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            while attempt == 0 and self._idle and conn is None:
                reader, writer, used = self._idle.pop()
                if time.monotonic() - used < self.IDLE_MAX_S:
                    conn = (reader, writer)
                else:
                    self._close((reader, writer))
            reused = conn is not None
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
            sent = time.time()
            try:
                async with asyncio.timeout(self.timeout):
                    conn[1].write(raw)
                    await conn[1].drain()
                    status, body, keep = await self._response(conn[0])
            except (ConnectionError, asyncio.IncompleteReadError):
                self._close(conn)
                if reused and attempt == 0:
                    continue  # the server had closed this idle keep-alive connection: once more, on a new one
                raise
            except BaseException:
                self._close(conn)
                raise
            if keep:
                self._idle.append((conn[0], conn[1], time.monotonic()))
            else:
                self._close(conn)
            return status, body, sent
        raise AssertionError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        keep = headers.get("connection", "").lower() != "close"
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if "content-length" in headers:
            return status, await reader.readexactly(int(headers["content-length"])), keep
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return status, b"".join(chunks), keep
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        return status, await reader.read(), False

    @staticmethod
    def _close(conn) -> None:
        with contextlib.suppress(Exception):
            conn[1].close()

    async def close(self) -> None:
        while self._idle:
            self._close(self._idle.pop())


class Spread:
    """Several intake instances behind one client, as a load balancer would put them: each request
    goes to the next instance in turn (round robin). Same interface as `RawHttp`; instances can be
    added and removed between requests (an instance scaled in is removed before it stops)."""

    def __init__(self, clients: list[RawHttp] | None = None) -> None:
        self.clients: list[RawHttp] = list(clients or [])
        self._turn = 0
        self.busy = 0
        self.busy_max = 0

    @property
    def connections(self) -> int:
        return sum(c.connections for c in self.clients)

    def add(self, client: RawHttp) -> None:
        self.clients.append(client)

    async def remove(self, port: int) -> None:
        """Stops sending to the instance on `port` and closes its idle connections."""
        gone = [c for c in self.clients if c.port == port]
        self.clients = [c for c in self.clients if c.port != port]
        for c in gone:
            await c.close()

    def next_client(self) -> RawHttp:
        if not self.clients:
            raise ConnectionError("no intake instance to send to")
        client = self.clients[self._turn % len(self.clients)]
        self._turn += 1
        return client

    def build(self, method: str, path: str, body: bytes = b"", token: str | None = None) -> bytes:
        """The request as bytes (the Host header names the first instance; intake does not read it)."""
        return self.clients[0].build(method, path, body, token)

    async def request(self, raw: bytes) -> tuple[int, bytes, float]:
        client = self.next_client()
        self.busy += 1
        self.busy_max = max(self.busy_max, self.busy)
        try:
            return await client.request(raw)
        finally:
            self.busy -= 1

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


Intake = RawHttp | Spread  # what the load generator sends submissions through
