"""A real HTTP/1.1 server on loopback that plays a provider.

It answers each request with a scripted `Reply` (status, headers, body split
into chunks sent with a delay between them) and records what it saw: every
request (method, path, headers, JSON body) and every TCP connection, with
when it opened and closed. Bodies go out with chunked transfer encoding, so
connections stay open for reuse, as real providers' do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int = 200
    # Any iterable: a generator streams a body too large to build (1 GiB).
    chunks: Iterable[bytes] = ()
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    # Seconds to wait before each chunk, or before chunk i: delays[i].
    delay: float = 0.0
    delays: Sequence[float] = ()
    # Seconds to wait before the status line and headers.
    head_delay: float = 0.0
    # Reset the connection (TCP RST) once this many chunks are sent, instead
    # of ending the body.
    reset_after: int | None = None
    # After the chunks, keep the body open (no end of body) until the client
    # closes the connection, as an upstream that never ends its stream.
    hang: bool = False

    @classmethod
    def json(cls, status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return cls(status, [payload], {"content-type": "application/json", **(headers or {})})


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Connection:
    opened: float
    closed: float | None = None
    closed_event: asyncio.Event = field(default_factory=asyncio.Event)


Script = Callable[[SeenRequest], Reply]

# How long a hanging reply keeps its body open at most: the server stops by itself.
HANG_LIMIT = 30.0


class FakeUpstream:
    def __init__(self, script: Script | Reply) -> None:
        self._script: Script = (lambda _request: script) if isinstance(script, Reply) else script
        self.requests: list[SeenRequest] = []
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.request_seen = asyncio.Event()
        self.chunks_sent = 0

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(opened=time.monotonic())
        self.connections.append(connection)
        self._writers.add(writer)
        try:
            while request := await _read_request(reader):
                self.requests.append(request)
                self.request_seen.set()
                await self._reply(self._script(request), reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            connection.closed = time.monotonic()
            connection.closed_event.set()
            self._writers.discard(writer)
            writer.close()

    async def _reply(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if reply.head_delay:
            await _sleep_while_open(reader, reply.head_delay)
        head = [f"HTTP/1.1 {reply.status} X", "transfer-encoding: chunked"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        for i, chunk in enumerate(reply.chunks):
            if delay := (reply.delays[i] if reply.delays else reply.delay):
                await _sleep_while_open(reader, delay)
            if chunk:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                self.chunks_sent += 1
            if i + 1 == reply.reset_after:
                # Linger 0: the close sends RST, as a crashed upstream's would.
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                writer.transport.abort()
                raise ConnectionResetError("reset on cue")
        if reply.hang:
            await _sleep_while_open(reader, HANG_LIMIT)
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> SeenRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, path, _version = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return SeenRequest(method, path, headers, body)


async def _sleep_while_open(reader: asyncio.StreamReader, seconds: float) -> None:
    """Sleep, but notice within 5 ms when the client closes the connection
    (the client sends nothing while it reads a reply, so EOF means closed)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if reader.at_eof():
            raise ConnectionResetError("client closed the connection")
        await asyncio.sleep(min(left, 0.005))


@contextlib.contextmanager
def unconnectable() -> Iterator[str]:
    """A loopback base URL where no TCP connect completes: a listener that
    never accepts, its queue filled, so the kernel drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        host, port = listener.getsockname()
        fillers = [socket.socket() for _ in range(8)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex((host, port))
            yield f"http://{host}:{port}"
        finally:
            for filler in fillers:
                filler.close()
