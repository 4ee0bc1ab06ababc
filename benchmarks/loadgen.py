"""Load generator: a raw ``asyncio.Protocol`` WebSocket client, run under uvloop.

It does the HTTP upgrade itself, sends frames built once before the run (one fixed mask
key: the server cannot tell and must unmask all the same) and parses server frames only as
far as needed to count them: their payloads are skipped, never copied or unmasked. It runs in
its own process, pinned to its own core, and reports its CPU use next to the server's so a
run where the load generator rather than the server was the bottleneck can be seen.

One workload per invocation; the result is one JSON object on stdout::

    python -m benchmarks.loadgen --port 8765 --server-pid 1234 --workload echo --size 64

Workloads:

``echo``
    one connection, ``--inflight`` messages of ``--size`` bytes kept in flight (each echo
    received sends the next one); reports msg/s, MB/s and, with one in flight, round-trip
    percentiles. With ``--compression``: text messages of realistic JSON of about
    ``--size`` bytes (:func:`json_messages`, built from the bundled sample corpus, all
    different), permessage-deflate offered as a browser offers it, each message compressed
    once before the run (see :func:`run_echo`).
``handshake``
    ``--concurrency`` workers each loop: connect, upgrade, send a close frame, wait for the
    server's close frame and its end of the TCP connection. Reports handshakes/s.
``memory``
    opens ``--connections`` idle connections and reads the server's resident set size
    (``/proc/PID/status`` VmRSS) before and after; reports KiB per connection.
``fanout``
    ``--connections`` connections held by client processes (:mod:`benchmarks.fanout`), and
    one more that sends a ``--size``-byte message the server sends to all of them; reports
    the time until the last client has it.

``--tls`` runs any workload over wss:// (uvloop's TLS client, TLS 1.3 with Python's
defaults, full handshakes: no session is resumed). The load generator doesn't check the
server's certificate (it is the harness's own) and loads no CA certificates, which keeps its
side of a handshake as cheap as OpenSSL allows: it still costs the client more CPU than the
server (an ECDSA verification and certificate parsing against one signature), so a figure
marked † there is the load generator's limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import resource
import ssl
import sys
import time
import zlib
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

__all__ = ["main"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# A fixed key is fine for a benchmark: the server computes the accept value all the same.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1(KEY + GUID).digest())
MASK = b"\x5a\xc3\x17\x8e"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9

ECHO_BUFFER = 1024 * 1024  # read buffer of the echo connection
SMALL_BUFFER = 4 * 1024  # read buffer of handshake-only connections (10,000 of them)

JSON = dict[str, Any]

#: The offer Chromium and Firefox send: permessage-deflate, any window the server chooses
#: for the client, context takeover both ways unless the server says otherwise.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"

#: The bundled corpus the JSON messages are made of (``scripts/generate_corpus.py``).
CORPUS = Path(__file__).resolve().parent.parent / "src/wsharbor/bench/data/sample.jsonl"


def upgrade_request(host: str, port: int, path: str = "/", extensions: str = "") -> bytes:
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{offer}"
        "\r\n"
    ).encode()


def negotiated_deflate(response: bytes) -> dict[str, str | None] | None:
    """The permessage-deflate parameters of a 101 response, or None if not accepted."""
    for line in response.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"sec-websocket-extensions":
            continue
        for extension in value.decode("latin-1").split(","):
            name, *params = (part.strip() for part in extension.split(";"))
            if name == "permessage-deflate":
                parsed: dict[str, str | None] = {}
                for param in params:
                    key, eq, val = param.partition("=")
                    parsed[key.strip()] = val.strip().strip('"') if eq else None
                return parsed
    return None


def json_messages(size: int, count: int = 64) -> list[bytes]:
    """Different realistic JSON text messages of about ``size`` bytes, from the corpus.

    Up to 400 bytes: the corpus's own messages (chat, presence, ticker, game deltas)
    within 10% of ``size`` (for 200: the 242 messages of 180 to 220 bytes). Larger:
    ``count`` snapshot documents ``{"type":"snapshot","seq":N,"items":[...]}`` made of
    consecutive corpus messages, each starting elsewhere in the corpus, as large as fits
    in ``size`` bytes.
    """
    corpus = [line for line in CORPUS.read_bytes().split(b"\n") if line.strip()]
    if size <= 400:
        return [m for m in corpus if abs(len(m) - size) <= size // 10]
    messages = []
    for seq in range(count):
        start = seq * 97 % len(corpus)
        head = b'{"type":"snapshot","seq":%d,"items":[' % seq
        items: list[bytes] = []
        length = len(head) + 2
        i = start
        while length + len(corpus[i % len(corpus)]) + 1 <= size:
            items.append(corpus[i % len(corpus)])
            length += len(items[-1]) + 1
            i += 1
        messages.append(head + b",".join(items) + b"]}")
    return messages


def deflate_frames(
    messages: list[bytes], params: dict[str, str | None], opcode: int = OP_TEXT
) -> list[bytes]:
    """Masked client frames, RSV1 set, each message compressed on its own.

    With the window the server allows us (``client_max_window_bits``, 15 if absent),
    level 6, each message from a fresh compressor: valid whatever the context takeover
    parameters (a message that refers to no earlier one is always decodable), and the same
    bytes every time a message is sent again, so they can be built once before the run.
    """
    bits = int(params.get("client_max_window_bits") or 15)
    frames = []
    for message in messages:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -bits, 8)
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        # RFC 7692 section 7.2.1: drop the 00 00 ff ff of the sync flush.
        frames.append(client_frame(opcode, data[:-4], rsv1=True))
    return frames


def mask_payload(payload: bytes, mask: bytes = MASK) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask`` (RFC 6455 section 5.3)."""
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


def client_frame(opcode: int, payload: bytes, mask: bytes = MASK, rsv1: bool = False) -> bytes:
    """A complete masked client frame with FIN set (RFC 6455 section 5.2)."""
    length = len(payload)
    head = bytearray([0x80 | (0x40 if rsv1 else 0) | opcode])
    if length < 126:
        head.append(0x80 | length)
    elif length < 1 << 16:
        head.append(0x80 | 126)
        head += length.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += length.to_bytes(8, "big")
    return bytes(head) + mask + mask_payload(payload, mask)


def server_header(opcode: int, length: int) -> bytes:
    """The header a server sends for an unfragmented, unmasked, uncompressed frame."""
    if length < 126:
        return bytes([0x80 | opcode, length])
    if length < 1 << 16:
        return bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
    return bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")


CLOSE_FRAME = client_frame(OP_CLOSE, (1000).to_bytes(2, "big"))


class BenchError(Exception):
    """A run that could not produce a figure; the message says why."""


class Client(asyncio.BufferedProtocol):
    """Upgrade, then count the frames the server sends without looking at their payloads.

    Reads go straight into one preallocated buffer (``BufferedProtocol``): no bytes object
    per read, and payloads are skipped by arithmetic, never copied.
    """

    def __init__(self, request: bytes, buffer_size: int = SMALL_BUFFER) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.close_received: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._keep = 0  # bytes at the start of _buf kept from the previous read
        self._is_open = False
        self.response = b""  # the server's 101 response
        self.compressed = 0  # data messages received with RSV1 set (permessage-deflate)
        self._skip = 0  # payload bytes of the current frame still to come
        self._pending_b0 = 0  # first header byte of the frame being skipped
        # Fast path for a stream of identical small frames: their header bytes.
        self._fast_len = 0
        self._fast_b0 = b""
        self._fast_b1 = b""

    def expect_small_frames(self, opcode: int, size: int, most: int) -> None:
        """Check runs of ``size``-byte frames in one C-level pass (sizes under 126 only)."""
        if size < 126:
            self._fast_len = 2 + size
            most = min(most, len(self._buf) // self._fast_len + 1)
            self._fast_b0 = bytes([0x80 | opcode]) * most
            self._fast_b1 = bytes([size]) * most

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._is_open = False
        error = exc or ConnectionResetError("connection closed by the server")
        for fut in (self.upgraded, self.close_received):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # mark retrieved: not every caller waits on both
        if not self.lost.done():
            self.lost.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._keep :]

    def buffer_updated(self, nbytes: int) -> None:
        n = self._keep + nbytes
        self._keep = 0
        if self._is_open:
            self._parse(n)
        else:
            self._handshake(n)

    # handshake

    def _handshake(self, n: int) -> None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", 0, n)
        if end < 0:
            if n == len(buf):
                self._fail(BenchError("upgrade response too large"))
            self._keep = n
            return
        response = bytes(buf[: end + 4])
        if not response.startswith(b"HTTP/1.1 101") or ACCEPT not in response:
            first = response.split(b"\r\n", 1)[0].decode("latin-1")
            self._fail(BenchError(f"upgrade refused or invalid: {first!r}"))
            return
        self._is_open = True
        self.response = response
        self.upgraded.set_result(None)
        rest = n - (end + 4)
        if rest:
            buf[:rest] = buf[end + 4 : n]
            self._parse(rest)

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # frames

    def _parse(self, n: int) -> None:
        """Count the frames in ``_buf[:n]``; keep a cut header for the next read."""
        data = self._buf
        pos = 0
        messages = 0
        if self._skip:
            if self._skip > n:
                self._skip -= n
                return
            pos = self._skip
            self._skip = 0
            b0 = self._pending_b0
            if b0 & 0x0F < 8:
                messages += b0 >> 7
                self.compressed += (b0 >> 6) & 1
            else:
                self._control(b0 & 0x0F)
        flen = self._fast_len
        if flen and n - pos >= flen:
            k = min((n - pos) // flen, len(self._fast_b0))
            end = pos + k * flen
            if (
                data[pos:end:flen] == self._fast_b0[:k]
                and data[pos + 1 : end : flen] == self._fast_b1[:k]
            ):
                messages += k
                pos = end
        while n - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            hl = 2
            if length & 0x80:  # masked: servers must not, but skip the key if one does
                hl = 6
                length &= 0x7F
            if length == 126:
                hl += 2
                if n - pos < hl:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                hl += 8
                if n - pos < hl:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            elif n - pos < hl:
                break
            end = pos + hl + length
            if end > n:
                self._skip = end - n
                self._pending_b0 = b0
                pos = n
                break
            pos = end
            if b0 & 0x0F < 8:
                messages += b0 >> 7
                self.compressed += (b0 >> 6) & 1
            else:
                self._control(b0 & 0x0F)
        if pos < n:  # a frame header cut by the read: move it to the front
            data[: n - pos] = data[pos:n]
            self._keep = n - pos
        if messages:
            self.on_messages(messages)

    def _control(self, opcode: int) -> None:
        if opcode == OP_CLOSE and not self.close_received.done():
            self.close_received.set_result(None)
        # Pings are not answered: every server here has keepalive off or at >= 20 s,
        # longer than any run.

    def on_messages(self, count: int) -> None:
        """``count`` complete data messages arrived."""

    # helpers

    async def close(self, timeout: float) -> bool:
        """Send a close frame, wait for the server's and for its end of TCP; True if clean."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(CLOSE_FRAME)
        try:
            await asyncio.wait_for(asyncio.shield(self.close_received), timeout)
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except (TimeoutError, ConnectionError, BenchError):
            transport.abort()
            return False
        return True


class EchoClient(Client):
    """Keeps ``inflight`` messages outstanding; optionally records round-trip times."""

    def __init__(self, request: bytes, frame: bytes, inflight: int, size: int) -> None:
        super().__init__(request, ECHO_BUFFER)
        self.expect_small_frames(OP_BINARY, size, inflight)
        self.batches = [frame * k for k in range(inflight + 1)]
        self.inflight = inflight
        # Refill the window in batches of a tenth so the load generator makes one write
        # for several echoes: between 90 % and 100 % of ``inflight`` stay in flight.
        self.refill = max(1, inflight // 10)
        self.sending = False
        self.received = 0
        self.outstanding = 0
        self.record = False
        self.rtts_ns = array("q")
        self.sent_at = 0
        self.drained: asyncio.Future[None] | None = None
        # Different messages (use_frames): all frames, then the first ``inflight`` again,
        # so that any ``k`` consecutive frames are one slice; ``_offsets[i]`` is where
        # frame ``i`` starts.
        self._ring = b""
        self._offsets: list[int] = []
        self._count = 0
        self._next = 0

    def use_frames(self, frames: list[bytes]) -> None:
        """Send these frames in turn instead of one frame again and again."""
        self._fast_len = 0
        cycle = frames * (self.inflight // len(frames) + 2)
        self._offsets = [0]
        for frame in cycle:
            self._offsets.append(self._offsets[-1] + len(frame))
        self._ring = b"".join(cycle)
        self._count = len(frames)

    def _frames(self, k: int) -> bytes:
        if not self._count:
            return self.batches[k]
        start = self._next
        self._next = (start + k) % self._count
        return self._ring[self._offsets[start] : self._offsets[start + k]]

    def start(self) -> None:
        assert self.transport is not None
        self.sending = True
        self.outstanding = self.inflight
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self._frames(self.inflight))

    def on_messages(self, count: int) -> None:
        self.received += count
        if self.record:
            # Only meaningful with one in flight: the time since the one send.
            self.rtts_ns.append(time.perf_counter_ns() - self.sent_at)
        self.outstanding -= count
        if self.sending:
            missing = self.inflight - self.outstanding
            if missing >= self.refill:
                assert self.transport is not None
                self.sent_at = time.perf_counter_ns()
                self.transport.write(self._frames(missing))
                self.outstanding = self.inflight
        elif self.outstanding <= 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def stop(self, timeout: float) -> None:
        """Stop sending and wait for the echoes of what is in flight."""
        self.sending = False
        self.drained = asyncio.get_running_loop().create_future()
        if self.outstanding <= 0:
            return
        try:
            await asyncio.wait_for(self.drained, timeout)
        except TimeoutError:
            raise BenchError(
                f"{self.outstanding} echoes missing {timeout} s after the run"
            ) from None


# process measurements


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent outside idle and iowait since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Window:
    """Wall time and CPU time (in cores) over the measured part of a run: this process,
    the server and everything else on the machine ("background", which should be ~0)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.scpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        self.busy0 = machine_busy_seconds()

    def finish(self) -> JSON:
        elapsed = time.perf_counter() - self.t0
        loadgen = (time.process_time() - self.cpu0) / elapsed
        busy = (machine_busy_seconds() - self.busy0) / elapsed
        result: JSON = {"seconds": elapsed, "loadgen_cpu": loadgen}
        if self.server_pid:
            server = (cpu_seconds(self.server_pid) - self.scpu0) / elapsed
            result["server_cpu"] = server
            result["background_cpu"] = max(0.0, busy - loadgen - server)
        return result


# workloads


def client_ssl_context(tls: bool) -> ssl.SSLContext | None:
    """None for ws://; for wss://, TLS without certificate checks (see the module docstring)."""
    if not tls:
        return None
    # Not create_default_context(): with the system's CA certificates loaded, OpenSSL
    # 3.0 still builds a chain for each handshake (1.3 ms instead of 0.75 ms here).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def connect(
    factory: Callable[[], Client],
    host: str,
    port: int,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[asyncio.Transport, Client]:
    loop = asyncio.get_running_loop()
    transport, protocol = await asyncio.wait_for(
        loop.create_connection(factory, host, port, ssl=ssl_context), timeout
    )
    await asyncio.wait_for(protocol.upgraded, timeout)
    return transport, protocol


async def read_message(reader: asyncio.StreamReader) -> tuple[bool, bytes]:
    """One whole message from a server: (compressed, payload as sent on the wire)."""
    payload = b""
    rsv1 = None
    while True:
        b0, b1 = await reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        if b1 & 0x80:
            raise BenchError("the server sent a masked frame (RFC 6455 section 5.1)")
        data = await reader.readexactly(length)
        if b0 & 0x0F >= 8:  # a ping or a pong in between: not part of the message
            continue
        if rsv1 is None:
            rsv1 = bool(b0 & 0x40)
        payload += data
        if b0 & 0x80:
            return rsv1, payload


async def check_deflate_echo(args: Args, messages: list[bytes], count: int = 3) -> None:
    """Check on a connection of its own that the server echoes compressed messages right.

    The run itself only counts frames; this decompresses the first ``count`` echoes (in
    order, so the server's context takeover is followed) and compares them.
    """
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        writer.write(upgrade_request(args.host, args.port, extensions=DEFLATE_OFFER))
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        params = negotiated_deflate(response)
        if params is None:
            raise BenchError("the server did not accept permessage-deflate")
        frames = deflate_frames(messages[:count], params)
        writer.write(b"".join(frames))
        decompressor = zlib.decompressobj(-15)  # a larger window than the server's is safe
        for message in messages[:count]:
            compressed, payload = await asyncio.wait_for(read_message(reader), 10)
            if compressed:
                payload = decompressor.decompress(payload + b"\x00\x00\xff\xff")
            if payload != message:
                raise BenchError("the server's echo differs from the message sent")
        writer.write(CLOSE_FRAME)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 10)  # the server's close, then its FIN
    finally:
        writer.close()


async def run_echo(args: Args) -> JSON:
    payload = random.Random(0).randbytes(args.size)
    frame = client_frame(OP_BINARY, payload)
    messages: list[bytes] = []
    if args.compression:
        messages = json_messages(args.size)
        await check_deflate_echo(args, messages)
    request = upgrade_request(
        args.host, args.port, extensions=DEFLATE_OFFER if args.compression else ""
    )
    _, client = await connect(
        lambda: EchoClient(request, frame, args.inflight, args.size),
        args.host,
        args.port,
        10,
        client_ssl_context(args.tls),
    )
    assert isinstance(client, EchoClient)
    if args.compression:
        params = negotiated_deflate(client.response)
        if params is None:
            raise BenchError("the server did not accept permessage-deflate")
        client.use_frames(deflate_frames(messages, params))
    client.start()
    await asyncio.sleep(args.warmup)
    if client.lost.done():
        raise BenchError("the server closed the connection during warm-up")
    count0 = client.received
    window = Window(args.server_pid)
    client.record = args.inflight == 1
    await asyncio.sleep(args.duration)
    client.record = False
    count = client.received - count0
    result = window.finish()
    await client.stop(timeout=10 + args.size / 1e6)
    result["clean_close"] = await client.close(timeout=5)
    seconds = result["seconds"]
    result["messages"] = count
    result["msg_per_s"] = count / seconds
    size = sum(map(len, messages)) / len(messages) if messages else args.size
    result["mb_per_s"] = count * size / seconds / 1e6
    if "server_cpu" in result and count:
        # Server CPU time per message, kernel time included: what capacity planning
        # needs, and less sensitive than msg/s to other processes taking the core.
        result["server_us_per_msg"] = result["server_cpu"] * seconds / count * 1e6
    if args.compression:
        result["mean_size"] = size
        result["distinct_messages"] = len(messages)
        # The share of echoes the server sent compressed (RSV1 set).
        result["compressed_share"] = client.compressed / max(1, client.received)
    if client.rtts_ns:
        rtts = sorted(client.rtts_ns)
        result["p50_us"] = rtts[len(rtts) // 2] / 1e3
        result["p99_us"] = rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)] / 1e3
    return result


async def one_handshake(args: Args, request: bytes, context: ssl.SSLContext | None) -> None:
    """Connect, upgrade, close cleanly; one timer bounds the whole exchange (cheaper than
    a ``wait_for`` per step, which matters when the server does 10,000 of these a second).
    With TLS, the TLS handshake is part of the exchange."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(
        lambda: Client(request), args.host, args.port, ssl=context
    )
    timer = loop.call_later(10, transport.abort)
    try:
        await client.upgraded
        transport.write(CLOSE_FRAME)
        await client.close_received
        await client.lost
    finally:
        timer.cancel()


async def run_handshake(args: Args) -> JSON:
    request = upgrade_request(args.host, args.port)
    context = client_ssl_context(args.tls)
    loop = asyncio.get_running_loop()
    recording = False
    stop = False
    count = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal count
        while not stop:
            try:
                await one_handshake(args, request, context)
            except (OSError, TimeoutError, BenchError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                if len(errors) >= 10:
                    return
                continue
            if recording:
                count += 1

    tasks = [loop.create_task(worker()) for _ in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    recording = True
    window = Window(args.server_pid)
    await asyncio.sleep(args.duration)
    recording = False
    result = window.finish()
    result["handshakes"] = count
    stop = True
    await asyncio.wait(tasks, timeout=15)
    if errors:
        result["errors"] = len(errors)
        if len(errors) >= 10 or count == 0:
            raise BenchError(f"{len(errors)} failed handshakes, first: {errors[0]}")
    result["handshakes_per_s"] = count / result["seconds"]
    if "server_cpu" in result and count:
        # What capacity planning needs, whichever side was the bottleneck.
        result["server_us_per_handshake"] = result["server_cpu"] * result["seconds"] / count * 1e6
    return result


async def run_memory(args: Args) -> JSON:
    if not args.server_pid:
        raise BenchError("the memory workload needs --server-pid")
    limit = raise_nofile_limit()
    if limit < args.connections + 64:
        raise BenchError(
            f"RLIMIT_NOFILE is {limit}, too low for {args.connections} connections "
            "(raise the hard limit: ulimit -Hn)"
        )
    request = upgrade_request(args.host, args.port)
    context = client_ssl_context(args.tls)
    # One connection first, with one echo, so one-time costs (imports done lazily, caches,
    # the first task) are in the baseline rather than in the per-connection figure.
    payload = random.Random(0).randbytes(64)
    _, first = await connect(
        lambda: EchoClient(request, client_frame(OP_BINARY, payload), 1, 64),
        args.host,
        args.port,
        10,
        context,
    )
    assert isinstance(first, EchoClient)
    first.start()
    await first.stop(timeout=10)
    await asyncio.sleep(args.settle)
    before = rss_kib(args.server_pid)

    clients: list[Client] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(args.concurrency)
    t0 = time.perf_counter()

    async def open_one() -> None:
        async with sem:
            if len(errors) >= 10:
                return
            try:
                _, client = await connect(
                    lambda: Client(request), args.host, args.port, 30, context
                )
            except (OSError, TimeoutError, BenchError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            clients.append(client)

    await asyncio.gather(*(open_one() for _ in range(args.connections)))
    open_seconds = time.perf_counter() - t0
    try:
        if errors:
            raise BenchError(
                f"opened {len(clients)} of {args.connections} connections; "
                f"{len(errors)} failed, first: {errors[0]}"
            )
        await asyncio.sleep(args.settle)
        # Wait for the server's memory to stop moving (handlers still starting), 5 s at most.
        after = rss_kib(args.server_pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = rss_kib(args.server_pid)
            if abs(now - after) <= max(64, after // 1000):
                after = now
                break
            after = now
        lost = sum(1 for c in clients if c.lost.done())
        if lost:
            raise BenchError(f"the server closed {lost} of {len(clients)} idle connections")
    finally:
        for client in (*clients, first):
            if client.transport is not None:
                client.transport.abort()
    return {
        "connections": len(clients),
        "open_seconds": open_seconds,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after - before) / len(clients),
    }


# command line


class Args(argparse.Namespace):
    host: str
    port: int
    server_pid: int | None
    workload: str
    size: int
    inflight: int
    duration: float
    warmup: float
    concurrency: int
    connections: int
    settle: float
    cpu: int | None
    tls: bool
    compression: bool
    processes: int
    rounds: int
    source: str | None


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Raw-protocol WebSocket load generator (one workload, JSON on stdout).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, help="server process, for CPU and memory")
    parser.add_argument(
        "--workload", choices=["echo", "handshake", "memory", "fanout"], required=True
    )
    parser.add_argument("--size", type=int, default=64, help="echo message size in bytes")
    parser.add_argument("--inflight", type=int, default=1, help="echo messages in flight")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="handshake workers / connections opening"
    )
    parser.add_argument(
        "--connections", type=int, default=10_000, help="memory: idle conns; fanout: receivers"
    )
    parser.add_argument("--rounds", type=int, default=10, help="fanout: measured messages")
    parser.add_argument(
        "--processes", type=int, default=1, help="fanout: client processes (own 127.0.0.x each)"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="memory: wait before RSS")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--tls", action="store_true", help="wss:// (see the module docstring)")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="echo: offer permessage-deflate and send realistic JSON text messages "
        "of about --size bytes, compressed; fanout: offer permessage-deflate",
    )
    args = parser.parse_args(argv, namespace=Args())
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.host.startswith("127."):
        parser.error("the load generator only targets loopback addresses")
    return args


async def amain(args: Args) -> JSON:
    if args.workload == "fanout":
        from benchmarks.fanout import run_fanout

        return await run_fanout(args)
    runners = {"echo": run_echo, "handshake": run_handshake, "memory": run_memory}
    return await runners[args.workload](args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {args.cpu})
    result: JSON
    try:
        import uvloop
    except ImportError:
        uvloop_run = None
    else:
        uvloop_run = uvloop.run
    try:
        result = uvloop_run(amain(args)) if uvloop_run else asyncio.run(amain(args))
        status = 0
    except (BenchError, OSError, TimeoutError) as exc:
        reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        result = {"error": reason}
        status = 1
    result["loadgen_loop"] = "uvloop" if uvloop_run else "asyncio"
    sys.stdout.write(json.dumps(result) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
