"""Attacks on the opening handshake and on the number of connections.

slowloris, malformed requests, stalled TLS handshakes, fd exhaustion and a churn
soak. Each opens its connections to 127.0.0.1 only, is bounded in count and in
time, and closes everything it opened before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass

from benchmarks.attacks.runner import JSON, Outcomes, Target
from benchmarks.attacks.server import LIMITS
from benchmarks.attacks.wire import (
    EOF,
    HOST,
    OP_CLOSE,
    OP_TEXT,
    OPEN,
    RST,
    HandshakeFailed,
    RawConnection,
    close_payload,
    frame,
    http_ending,
    request,
)
from benchmarks.loadgen import KEY

__all__ = [
    "MALFORMED_KINDS",
    "churn",
    "fd_exhaustion",
    "malformed",
    "slowloris",
    "tls_partial_hello",
    "tls_silent",
]

OPEN_TIMEOUT: float = LIMITS["open_timeout"]
#: Attackers dropped later than open_timeout plus this count as not dropped in time.
GRACE = 2.0


# slowloris


async def slowloris(target: Target) -> JSON:
    """Many connections trickle an endless header block, one line every 2 s."""
    count = target.budget.pick(2000, 300)
    return await _hold_open(target, count, first=b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")


async def _hold_open(
    target: Target,
    count: int,
    *,
    first: bytes,
    trickle: bytes | None = b"X-Slow: 1\r\n",
    ssl_hold: bool = False,
) -> JSON:
    """Open ``count`` connections, send ``first`` (then ``trickle`` every 2 s) and wait
    until the server drops each one or ``open_timeout + 5`` s passed since the last opened."""
    loop = asyncio.get_running_loop()
    outcomes = Outcomes()
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(50)
    opened = asyncio.Event()
    pending = count
    hold_until = [float("inf")]
    rss0 = target.rss_kib()

    async def one() -> None:
        nonlocal pending
        async with sem:
            t0 = loop.time()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, target.port), 5
                )
            except (OSError, TimeoutError):
                outcomes.add("connect failed")
                return
            finally:
                pending -= 1
                if pending == 0:
                    opened.set()
        writers.append(writer)
        writer.write(first)
        await opened.wait()
        status = ""
        try:
            while True:
                timeout = min(2.0, hold_until[0] - loop.time())
                if timeout <= 0:
                    outcomes.add(OPEN)
                    return
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout)
                except TimeoutError:
                    if trickle:
                        writer.write(trickle)
                    continue
                if not data:
                    outcomes.add(f"{status}+EOF" if status else EOF, loop.time() - t0)
                    return
                if not status and data.startswith(b"HTTP/1.1 "):
                    status = data[9:12].decode(errors="replace")
        except (ConnectionResetError, BrokenPipeError):
            outcomes.add(f"{status}+RST" if status else RST, loop.time() - t0)

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    await opened.wait()
    await asyncio.sleep(0.5 if ssl_hold else 0.2)  # let the server take the last ones in
    held_kib = target.rss_kib() - rss0
    hold_until[0] = loop.time() + OPEN_TIMEOUT + 5
    await asyncio.gather(*tasks)
    for writer in writers:
        writer.transport.abort()
    counts = outcomes.counts()
    late = [
        t
        for outcome, times in outcomes.times.items()
        if outcome not in (OPEN, "connect failed")
        for t in times
        if t > OPEN_TIMEOUT + GRACE
    ]
    held = counts.get(OPEN, 0) == 0 and not late and counts.get("connect failed", 0) == 0
    why = []
    if counts.get(OPEN):
        why.append(f"{counts[OPEN]} still open after {OPEN_TIMEOUT + 5:g} s")
    if late:
        why.append(f"{len(late)} dropped after open_timeout + {GRACE:g} s")
    return {
        "closes": outcomes.summary(with_times=True),
        "held": held,
        "why": why,
        "outcomes": counts,
        "connections": count,
        "kib_per_connection": round(held_kib / max(1, count), 1),
    }


# stalled TLS handshakes


def client_hello() -> bytes:
    """The first flight of a real TLS client (its ClientHello), from the ssl module."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def tls_silent(target: Target) -> JSON:
    """TCP connections to the TLS port that never send a byte."""
    count = target.budget.pick(500, 100)
    result = await _hold_open(target, count, first=b"", trickle=None, ssl_hold=True)
    result["closes"] += f" (~{result['kib_per_connection']:,.0f} KiB each while held)"
    return result


async def tls_partial_hello(target: Target) -> JSON:
    """TCP connections to the TLS port that send half a ClientHello, then nothing."""
    count = target.budget.pick(500, 100)
    hello = client_hello()
    result = await _hold_open(
        target, count, first=hello[: len(hello) // 2], trickle=None, ssl_hold=True
    )
    result["closes"] += f" (~{result['kib_per_connection']:,.0f} KiB each while held)"
    return result


# malformed handshakes


@dataclass(frozen=True)
class Kind:
    """One kind of malformed request and the status wsharbor documents for it."""

    name: str
    data: bytes
    expect: str  # wsharbor's status, as a string ("400")


def _req(port: int, drop: str = "", add: list[tuple[str, str]] | None = None, **kw: str) -> bytes:
    headers = [
        ("Host", f"{HOST}:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY.decode()),
        ("Sec-WebSocket-Version", "13"),
    ]
    headers = [(k, v) for k, v in headers if k.lower() != drop.lower()]
    for name, value in add or []:
        replaced = False
        for i, (k, _) in enumerate(headers):
            if k.lower() == name.lower() and not name.startswith("+"):
                headers[i] = (k, value)
                replaced = True
        if not replaced:
            headers.append((name.lstrip("+"), value))
    return request(port, headers=headers, **kw)


def malformed_kinds(port: int) -> list[Kind]:
    """The malformed requests, each with wsharbor's documented status (see
    ``wsharbor.exceptions``: 400 malformed or bad header, 405 not GET, 426 not an
    upgrade or bad version, 431 over a size limit, 505 not HTTP/1.1)."""
    rng = random.Random(13)
    good = _req(port)
    ok_head = good[: good.index(b"\r\n\r\n")]
    many = [(f"+X-Filler-{i}", "x") for i in range(200)]
    big = [(f"+X-Big-{i}", "x" * 1000) for i in range(100)]
    return [
        # request line
        Kind("request line without version", b"GET /\r\nHost: x\r\n\r\n", "505"),
        Kind("request line of one word", b"HELLO\r\n\r\n", "400"),
        Kind("request line with 4 parts", good.replace(b"HTTP/1.1", b"HTTP/1.1 x", 1), "400"),
        Kind("lowercase method", good.replace(b"GET", b"get", 1), "400"),
        Kind("unknown method", good.replace(b"GET", b"BREW", 1), "400"),
        Kind("POST", _req(port, method="POST"), "405"),
        Kind("HEAD", _req(port, method="HEAD"), "405"),
        Kind("HTTP/1.0", _req(port, version="HTTP/1.0"), "505"),
        Kind("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "505"),
        Kind("request-target of 10 KB", _req(port, path="/" + "a" * 10_000), "431"),
        # headers
        Kind("no Host", _req(port, drop="Host"), "400"),
        Kind("two Host", _req(port, add=[("+Host", "other")]), "400"),
        Kind("no Upgrade", _req(port, drop="Upgrade"), "426"),
        Kind("Upgrade: h2c", _req(port, add=[("Upgrade", "h2c")]), "426"),
        Kind("no Connection", _req(port, drop="Connection"), "426"),
        Kind("Connection: keep-alive", _req(port, add=[("Connection", "keep-alive")]), "426"),
        Kind("no Sec-WebSocket-Key", _req(port, drop="Sec-WebSocket-Key"), "400"),
        Kind("key not base64", _req(port, add=[("Sec-WebSocket-Key", "not base64!")]), "400"),
        Kind(
            "key of 15 bytes",
            _req(port, add=[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA")]),
            "400",
        ),
        Kind("two keys", _req(port, add=[("+Sec-WebSocket-Key", KEY.decode())]), "400"),
        Kind("no Sec-WebSocket-Version", _req(port, drop="Sec-WebSocket-Version"), "426"),
        Kind("version 8", _req(port, add=[("Sec-WebSocket-Version", "8")]), "426"),
        Kind("version 13, 8", _req(port, add=[("Sec-WebSocket-Version", "13, 8")]), "426"),
        Kind("header value of 10 KB", _req(port, add=[("+X-Long", "v" * 10_000)]), "431"),
        Kind("200 headers", _req(port, add=many), "431"),
        Kind("100 KB of headers", _req(port, add=big), "431"),
        Kind("header line of 1 MiB", ok_head + b"\r\nX-Huge: " + b"v" * (1 << 20), "431"),
        Kind("header without colon", ok_head + b"\r\nNoColonHere\r\n\r\n", "400"),
        Kind("space before colon", ok_head + b"\r\nX-Bad : 1\r\n\r\n", "400"),
        Kind("obs-fold", ok_head + b"\r\nX-Fold: a\r\n  b\r\n\r\n", "400"),
        Kind("bare LF line ends", good.replace(b"\r\n", b"\n"), "400"),
        Kind("NUL in a header value", ok_head + b"\r\nX-Nul: a\x00b\r\n\r\n", "400"),
        Kind("non-ASCII header name", ok_head + b"\r\nX-\xe9t\xe9: 1\r\n\r\n", "400"),
        Kind("Content-Length body", _req(port, add=[("+Content-Length", "10")]), "400"),
        Kind(
            "Transfer-Encoding: chunked",
            _req(port, add=[("+Transfer-Encoding", "chunked")]),
            "400",
        ),
        Kind(
            "extension header not in the grammar",
            _req(port, add=[("+Sec-WebSocket-Extensions", "permessage-deflate;;=")]),
            "400",
        ),
        # not HTTP at all
        Kind("1 KiB of random bytes", rng.randbytes(1024), "400"),
        Kind("1 KiB of NUL bytes", bytes(1024), "400"),
        Kind("TLS ClientHello on the plain port", client_hello(), "400"),
        Kind("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n", "400"),
    ]


#: The names of the malformed kinds, in order (for documentation and tests).
MALFORMED_KINDS = [kind.name for kind in malformed_kinds(0)]


async def _send_malformed(port: int, data: bytes) -> tuple[str, str]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5)
    except (OSError, TimeoutError):
        return "connect failed", OPEN
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await asyncio.wait_for(writer.drain(), 5)
        return await http_ending(reader, OPEN_TIMEOUT + GRACE)
    except TimeoutError:
        return "no answer", OPEN
    finally:
        writer.transport.abort()


async def malformed(target: Target) -> JSON:
    """Every kind of :func:`malformed_kinds`, ``repeat`` times each, 50 at a time."""
    repeat = target.budget.pick(50, 1)
    kinds = malformed_kinds(target.port)
    sem = asyncio.Semaphore(50)
    got: dict[str, Counter[str]] = {kind.name: Counter() for kind in kinds}
    outcomes = Outcomes()

    async def one(kind: Kind) -> None:
        async with sem:
            status, then = await _send_malformed(target.port, kind.data)
        got[kind.name][f"{status}+{then}" if then != EOF else status] += 1
        outcomes.add(status if then == EOF else f"{status}+{then}")

    await asyncio.gather(*(one(kind) for kind in kinds for _ in range(repeat)))
    why = []
    for kind in kinds:
        answers = got[kind.name]
        if target.lib == "wsharbor" and set(answers) != {kind.expect}:
            why.append(f"{kind.name}: {dict(answers)} (documented: {kind.expect})")
        elif not all(a[:1] in "45" and a[1:3].isdigit() and "+" not in a for a in answers):
            why.append(f"{kind.name}: {dict(answers)}")
    return {
        "closes": outcomes.summary(),
        "held": not why,
        "why": why,
        "requests": repeat * len(kinds),
        "kinds": {
            kind.name: {"expect": kind.expect, "got": dict(got[kind.name])} for kind in kinds
        },
    }


# fd exhaustion


async def _new_handshake(port: int, timeout: float) -> str:
    try:
        conn = await RawConnection.open(port, timeout=timeout)
    except HandshakeFailed as exc:
        return exc.status
    except (OSError, TimeoutError):
        return "timeout"
    conn.abort()
    return "101"


async def _healthz(port: int, timeout: float) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    except (OSError, TimeoutError):
        return "timeout"
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _ = await http_ending(reader, timeout)
        return "timeout" if status in ("open", "none") else status
    finally:
        writer.transport.abort()


async def fd_exhaustion(target: Target) -> JSON:
    """With the server's RLIMIT_NOFILE at 256: open more connections than it has fds,
    hold them idle, measure the server's CPU and log volume meanwhile, try a new
    handshake and /healthz, then let go and time the recovery."""
    count = target.budget.pick(600, 400)
    hold = target.budget.pick(10.0, 4.0)
    loop = asyncio.get_running_loop()
    outcomes = Outcomes()
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(50)

    async def one() -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, target.port), 3
                )
            except (OSError, TimeoutError):
                outcomes.add("connect failed")
                return
            writers.append(writer)
            writer.write(request(target.port))
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
                outcomes.add(head[9:12].decode(errors="replace"))
            except TimeoutError:
                outcomes.add("no answer")
            except asyncio.IncompleteReadError:
                outcomes.add(EOF)
            except ConnectionError:
                outcomes.add(RST)

    await asyncio.gather(*(one() for _ in range(count)))
    # The idle window: the attacker does nothing; a quiet server uses no CPU.
    log0, cpu0, t0 = target.log_size(), target.cpu_seconds(), time.monotonic()
    await asyncio.sleep(hold)
    idle_cpu = (target.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    log_rate = (target.log_size() - log0) / (time.monotonic() - t0)
    new_ws = await _new_handshake(target.port, 3)
    healthz = await _healthz(target.port, 3)
    for writer in writers:
        writer.transport.abort()
    # Recovery: how long until a new handshake works once the attacker let go.
    released = loop.time()
    recovered: float | None = None
    while loop.time() - released < 10:
        if await _new_handshake(target.port, 2) == "101":
            recovered = loop.time() - released
            break
        await asyncio.sleep(0.25)
    why = []
    if idle_cpu > 0.2:
        why.append(f"server CPU {idle_cpu:.0%} while idle at the fd limit")
    if log_rate > 1024:
        why.append(f"{log_rate / 1024:,.0f} KiB/s of log while idle at the fd limit")
    if recovered is None:
        why.append("no new handshake within 10 s of letting go")
    closes = (
        f"{outcomes.summary()}; idle CPU {idle_cpu:.0%}, log {log_rate / 1024:,.1f} KiB/s; "
        f"at the limit: new WS {new_ws}, /healthz {healthz}; "
        + (f"recovered {recovered:.1f} s after release" if recovered is not None else "no recovery")
    )
    return {
        "closes": closes,
        "held": not why,
        "why": why,
        "outcomes": outcomes.counts(),
        "idle_cpu": round(idle_cpu, 3),
        "log_bytes_per_s": round(log_rate),
        "new_handshake_at_limit": new_ws,
        "healthz_at_limit": healthz,
        "recovered_s": None if recovered is None else round(recovered, 2),
    }


# churn soak


async def churn(target: Target) -> JSON:
    """Connect, upgrade (every other one with permessage-deflate), one echo, close,
    8 at a time, for the whole duration; the RSS must stay flat."""
    duration = target.budget.pick(60.0, 8.0)
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    failures: Counter[str] = Counter()
    cycles = 0
    message = frame(OP_TEXT, b"churn message 0123456789abcdef")
    bye = frame(OP_CLOSE, close_payload(1000))

    async def cycle(deflate: bool) -> None:
        conn = await RawConnection.open(
            target.port, extensions="permessage-deflate" if deflate else None
        )
        try:
            conn.writer.write(message)
            _, opcode, _ = await asyncio.wait_for(conn.read_frame(), 5)
            if opcode != OP_TEXT:
                raise ValueError(f"echo has opcode {opcode}")
            conn.writer.write(bye)
            code = await conn.ending(5)
            if code != "1000":
                raise ValueError(f"close {code}")
            then = await conn.closed_by_server(5)
            if then != EOF:
                raise ValueError(f"TCP {then} after the close frame")
        finally:
            conn.abort()

    async def worker(i: int) -> None:
        nonlocal cycles
        n = i
        while loop.time() < end:
            n += 1
            try:
                await cycle(n % 2 == 0)
                cycles += 1
            except HandshakeFailed as exc:
                failures[f"handshake {exc.status}"] += 1
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                failures[str(exc) if isinstance(exc, ValueError) else type(exc).__name__] += 1

    async def quarter_rss() -> int:
        await asyncio.sleep(duration / 4)
        return target.rss_kib()

    q1 = asyncio.ensure_future(quarter_rss())
    await asyncio.gather(*(worker(i) for i in range(8)))
    growth = target.rss_kib() - await q1
    why = []
    if failures:
        why.append(f"{sum(failures.values())} failed cycles: {dict(failures)}")
    if growth > 4 * 1024:
        why.append(f"RSS grew {growth / 1024:.1f} MiB over the last three quarters")
    closes = f"{cycles:,} cycles, {sum(failures.values())} failed; "
    closes += f"RSS {growth / 1024:+.1f} MiB over the last 3/4"
    return {
        "closes": closes,
        "held": not why,
        "why": why,
        "cycles": cycles,
        "cycles_per_s": round(cycles / duration, 1),
        "failures": dict(failures),
        "rss_growth_last_3q_kib": growth,
    }
