"""Fan-out: one message to many open connections, timed from the clients.

The ``fanout`` workload of :mod:`benchmarks.loadgen` (the coordinator, :func:`run_fanout`)
starts ``--processes`` client processes (this module's ``main``), each holding its share of
``--connections`` WebSocket connections to a server started with ``--fanout`` (every
message it receives goes to every open connection). Then, round after round, the
coordinator sends one ``--size``-byte JSON text message on a connection of its own and
notes the time; each client process notes when the last of its connections has the
message (a whole frame read from the socket) and reports it. A round's figure is the time
from the send to the last client process's last delivery; the server's ``broadcast()`` (or
loop of sends) is in it, and so are the kernel and the client processes reading 10,000
sockets.

Client processes are plain non-blocking sockets and ``select.epoll``, no event loop: a
delivery costs one ``epoll`` entry and one ``os.read`` (a few µs of Python), less than any
server here spends to send it, and their CPU use during the rounds is reported
(``loadgen_cpu``: the figure is flagged † when it is near a whole core). They answer pings,
check that every delivery is one whole data message, and decompress and compare the
messages of a few connections of theirs (with ``--compression``: permessage-deflate offered
as a browser offers it). All processes read ``time.monotonic_ns()``, the same clock
(``CLOCK_MONOTONIC``) on Linux. Each process may use its own 127.0.0.x source address, for
more connections than one address has ephemeral ports.

Protocol between the coordinator and a client process, one line each on stdout:
``READY <connections> <cpu_ns>`` once all are open, then ``ROUND <n> <first_ns> <last_ns>
<cpu_ns>`` after round ``n``, or ``ERROR <reason>``. The process exits when its stdin
closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import select
import socket
import statistics
import sys
import time
import zlib
from typing import Any

from benchmarks.loadgen import (
    ACCEPT,
    DEFLATE_OFFER,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Args,
    BenchError,
    client_frame,
    cpu_seconds,
    deflate_frames,
    machine_busy_seconds,
    negotiated_deflate,
    raise_nofile_limit,
    read_message,
    upgrade_request,
)

__all__ = ["fanout_messages", "main", "run_fanout"]

JSON = dict[str, Any]

OP_PONG = 0xA
#: Connections per client process that decompress and compare every message.
CHECKED = 4
#: Handshakes in progress at once in a client process.
CONCURRENCY = 200
#: Linux: choose the source port at connect() time (per destination), not at bind().
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: Rounds sent before the measured ones (first-use allocations, caches).
WARMUP_ROUNDS = 1


def fanout_messages(size: int, rounds: int) -> list[bytes]:
    """One chat message of exactly ``size`` bytes of JSON per round, all different."""
    messages = []
    words = b"deploy the fix after lunch please check the logs again great thanks".split()
    for n in range(rounds):
        head = b'{"type":"chat.message","room":"general","seq":%d,"text":"' % n
        text = b""
        i = n
        while len(head) + len(text) + 2 < size:
            text += words[i % len(words)] + b" "
            i += 3
        messages.append(head + text[: size - len(head) - 2] + b'"}')
    return messages


# Client process.


class _Conn:
    __slots__ = ("buffer", "checked", "decompressor", "message", "sock")

    def __init__(self, sock: socket.socket, checked: bool, compression: bool) -> None:
        self.sock = sock
        self.checked = checked
        self.buffer = b""
        self.message = b""  # the message being reassembled (checked connections only)
        self.decompressor = zlib.decompressobj(-15) if checked and compression else None


class _Client:
    """The receiving side: counts whole data messages, answers pings, checks a few."""

    def __init__(self, args: Args, messages: list[bytes]) -> None:
        self.args = args
        self.messages = messages
        self.conns: dict[int, _Conn] = {}
        self.received = 0
        self.round = 0
        self.first_ns = 0

    def say(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def run(self) -> None:
        poller = select.epoll()
        self._open(poller)
        stdin = sys.stdin.fileno()
        poller.register(stdin, select.EPOLLIN)
        self.say(f"READY {len(self.conns)} {time.process_time_ns()}")
        total = len(self.conns)
        conns = self.conns
        read = os.read
        while True:
            for fd, _ in poller.poll():
                if fd == stdin:
                    return  # the coordinator is done (or gone)
                data = read(fd, 65536)
                if not data:
                    raise BenchError("the server closed a connection")
                conn = conns[fd]
                if conn.buffer:
                    data = conn.buffer + data
                    conn.buffer = b""
                received = self.received
                # The common case: exactly one whole unmasked small data frame, FIN set.
                if (
                    len(data) > 1
                    and data[1] < 126
                    and len(data) == 2 + data[1]
                    and data[0] & 0x8F in (0x81, 0x82)
                    and not conn.checked
                ):
                    self.received += 1
                else:
                    self._parse(conn, data)
                if self.received == received:
                    continue
                if not self.first_ns:
                    self.first_ns = time.monotonic_ns()
                if self.received >= total * (self.round + 1):
                    now = time.monotonic_ns()
                    self.say(f"ROUND {self.round} {self.first_ns} {now} {time.process_time_ns()}")
                    self.round += 1
                    self.first_ns = 0

    def _open(self, poller: select.epoll) -> None:
        """Open and upgrade the connections, at most CONCURRENCY handshakes at once.

        Connections already open are read meanwhile, so that pings are answered
        (websockets closes a connection whose pong is 20 s late, and opening
        10,000 can take longer than that on a busy machine).
        """
        args = self.args
        extensions = DEFLATE_OFFER if args.compression else ""
        request = upgrade_request(args.host, args.port, extensions=extensions)
        count = args.connections
        deadline = time.monotonic() + 60 + count / 100
        pending: dict[int, list[Any]] = {}  # fd: [socket, bytes received, request sent]
        started = 0
        while len(self.conns) < count:
            while started < count and len(pending) < CONCURRENCY:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                if args.source:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((args.source, 0))
                code = sock.connect_ex((args.host, args.port))
                if code not in (0, errno.EINPROGRESS):
                    reason = os.strerror(code)
                    raise BenchError(f"connect: {reason} after {len(self.conns)} connections")
                poller.register(sock.fileno(), select.EPOLLOUT)
                pending[sock.fileno()] = [sock, b"", False]
                started += 1
            if time.monotonic() > deadline:
                raise BenchError(f"opened {len(self.conns)} of {count} connections in time")
            for fd, _ in poller.poll(1.0):
                conn = self.conns.get(fd)
                if conn is not None:  # open already: pings, most likely
                    data = os.read(fd, 65536)
                    if not data:
                        raise BenchError("the server closed a connection while others opened")
                    self._parse(conn, conn.buffer + data)
                    continue
                state = pending[fd]
                sock = state[0]
                if not state[2]:
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        reason = os.strerror(code)
                        raise BenchError(f"connect: {reason} after {len(self.conns)} connections")
                    sock.send(request)
                    state[2] = True
                    poller.modify(fd, select.EPOLLIN)
                    continue
                chunk = sock.recv(4096)
                if not chunk:
                    raise BenchError(f"the server closed a connection after {len(self.conns)}")
                state[1] += chunk
                end = state[1].find(b"\r\n\r\n")
                if end < 0:
                    continue
                response = state[1][: end + 4]
                if not response.startswith(b"HTTP/1.1 101") or ACCEPT not in response:
                    first = response.split(b"\r\n", 1)[0].decode("latin-1")
                    raise BenchError(f"upgrade refused or invalid: {first!r}")
                if args.compression and negotiated_deflate(response) is None:
                    raise BenchError("the server did not accept permessage-deflate")
                del pending[fd]
                conn = self.conns[fd] = _Conn(sock, len(self.conns) < CHECKED, args.compression)
                if len(state[1]) > end + 4:
                    self._parse(conn, state[1][end + 4 :])

    def _parse(self, conn: _Conn, data: bytes) -> None:
        pos = 0
        checked = conn.checked
        while len(data) - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            if b1 & 0x80:
                raise BenchError("the server sent a masked frame (RFC 6455 section 5.1)")
            length, head = b1 & 0x7F, 2
            if length == 126:
                head = 4
            elif length == 127:
                head = 10
            if len(data) - pos < head:
                break
            if head > 2:
                length = int.from_bytes(data[pos + 2 : pos + head], "big")
            end = pos + head + length
            if end > len(data):
                break
            payload = data[pos + head : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == OP_PING:
                conn.sock.send(client_frame(OP_PONG, payload))
                continue
            if opcode == OP_CLOSE:
                raise BenchError("the server sent a close frame")
            if opcode >= 8:
                continue
            if checked:
                conn.message += payload
            if not b0 & 0x80:
                continue
            self.received += 1
            if checked:
                message, conn.message = conn.message, b""
                if conn.decompressor is not None and b0 & 0x40:
                    message = conn.decompressor.decompress(message + b"\x00\x00\xff\xff")
                expected = self.messages[self.round % len(self.messages)]
                if message != expected:
                    raise BenchError(
                        f"round {self.round}: a client received {message[:40]!r}..., "
                        f"expected {expected[:40]!r}..."
                    )
        conn.buffer = data[pos:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, required=True, help="rounds, warm-up included")
    parser.add_argument("--source", help="source address (127.0.0.x)")
    parser.add_argument("--compression", action="store_true")
    args = parser.parse_args(argv, namespace=Args())
    raise_nofile_limit()
    try:
        _Client(args, fanout_messages(args.size, args.rounds)).run()
    except (BenchError, OSError, zlib.error) as exc:
        reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        sys.stdout.write(f"ERROR {reason}\n")
        sys.stdout.flush()
        return 1
    return 0


# Coordinator.


class _Process:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"a client process said nothing for {timeout:.0f} s") from None
        words = raw.decode().split()
        if not words:
            raise BenchError("a client process exited")
        if words[0] == "ERROR":
            raise BenchError(f"client process: {' '.join(words[1:])}")
        return words


async def run_fanout(args: Args) -> JSON:
    """Open the connections in client processes, send the rounds, time each."""
    limit = raise_nofile_limit()
    per_process = -(-args.connections // args.processes)
    if limit < per_process + 64:
        raise BenchError(f"RLIMIT_NOFILE is {limit}, too low for {per_process} connections")
    rounds = WARMUP_ROUNDS + args.rounds
    messages = fanout_messages(args.size, rounds)
    procs: list[_Process] = []
    left = args.connections
    try:
        for i in range(args.processes):
            count = min(per_process, left)
            left -= count
            cmd = [sys.executable, "-m", "benchmarks.fanout", "--host", args.host]
            cmd += ["--port", str(args.port), "--connections", str(count)]
            cmd += ["--size", str(args.size), "--rounds", str(rounds)]
            if args.processes > 1:
                cmd += ["--source", f"127.0.0.{2 + i}"]
            if args.compression:
                cmd.append("--compression")
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            procs.append(_Process(proc))
        opening = 60 + args.connections / 100
        t0 = time.perf_counter()
        cpu = [int((await p.line(opening))[2]) for p in procs]
        open_seconds = time.perf_counter() - t0

        reader, writer = await asyncio.open_connection(args.host, args.port)
        extensions = DEFLATE_OFFER if args.compression else ""
        writer.write(upgrade_request(args.host, args.port, extensions=extensions))
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not response.startswith(b"HTTP/1.1 101"):
            first = response.split(b"\r\n", 1)[0].decode("latin-1")
            raise BenchError(f"upgrade refused: {first!r}")
        if args.compression:
            params = negotiated_deflate(response)
            if params is None:
                raise BenchError("the server did not accept permessage-deflate")
            frames = deflate_frames(messages, params)
        else:
            frames = [client_frame(OP_TEXT, message) for message in messages]

        last_ms: list[float] = []
        first_ms: list[float] = []
        busy_ns = 0
        clients_cpu_ns = 0
        server_cpu = 0.0
        machine_cpu = 0.0
        for n in range(rounds):
            server0 = cpu_seconds(args.server_pid) if args.server_pid else 0.0
            busy0 = machine_busy_seconds()
            sent = time.monotonic_ns()
            writer.write(frames[n])
            reports = [await p.line(60) for p in procs]
            if any(int(words[1]) != n for words in reports):
                raise BenchError(f"round {n}: out of step: {reports}")
            last = max(int(words[3]) for words in reports)
            firsts = [int(words[2]) for words in reports if int(words[2])]
            await asyncio.wait_for(read_message(reader), 10)  # the sender's own copy
            now_cpu = [int(words[4]) for words in reports]
            if n >= WARMUP_ROUNDS:
                last_ms.append((last - sent) / 1e6)
                first_ms.append(((min(firsts) if firsts else last) - sent) / 1e6)
                busy_ns += last - sent
                clients_cpu_ns += sum(now_cpu) - sum(cpu)
                machine_cpu += machine_busy_seconds() - busy0
                if args.server_pid:
                    server_cpu += cpu_seconds(args.server_pid) - server0
            cpu = now_cpu
            # Let the server finish what follows a round (its own ACKs, write buffers).
            await asyncio.sleep(0.1)
        writer.write(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        writer.close()
    finally:
        for p in procs:
            if p.proc.stdin is not None:
                p.proc.stdin.close()
        for p in procs:
            try:
                await asyncio.wait_for(p.proc.wait(), 10)
            except TimeoutError:
                p.proc.kill()
                await p.proc.wait()
    median = statistics.median(last_ms)
    result: JSON = {
        "connections": args.connections,
        "processes": args.processes,
        "rounds": args.rounds,
        "open_seconds": open_seconds,
        "last_ms": median,
        "first_ms": statistics.median(first_ms),
        "last_ms_all": last_ms,
        "deliveries_per_s": args.connections / (median / 1e3),
        # CPU (in cores) while a message was on its way, summed over the rounds.
        "loadgen_cpu": clients_cpu_ns / busy_ns,
    }
    if args.server_pid:
        # /proc counts in clock ticks (10 ms): rough for one round, fine over all.
        busy = busy_ns / 1e9
        result["server_cpu"] = server_cpu / busy
        # Server CPU time per delivery (clock ticks of 10 ms over all the rounds).
        result["server_us_per_msg"] = server_cpu / (args.rounds * args.connections) * 1e6
        others = machine_cpu - server_cpu - clients_cpu_ns / 1e9
        result["background_cpu"] = max(0.0, others / busy)
    return result


if __name__ == "__main__":
    sys.exit(main())
