"""Attacks after the opening handshake: bad frames, huge lengths, bombs, floods.

Each upgrades one or more connections to 127.0.0.1 by hand (:mod:`.wire`), sends
what a real client never would, and reads how the server ended the connection.
Floods stop at a byte budget, a frame count or a time budget, whichever comes
first, and report how much the server took in before it closed the connection or
stopped reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.attacks.runner import JSON, Outcomes, Target
from benchmarks.attacks.server import LIMITS
from benchmarks.attacks.wire import (
    MASK,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    OPEN,
    ZERO_MASK,
    HandshakeFailed,
    RawConnection,
    close_payload,
    frame,
    header,
)

__all__ = [
    "FRAME_CASES",
    "deflate_bomb",
    "deflate_bomb_fragmented",
    "deflate_bomb_many",
    "fragments_2b",
    "fragments_empty",
    "frame_abuse",
    "huge_length_deflate",
    "huge_length_plain",
    "huge_length_rsv1",
    "non_reader",
    "ping_flood",
]

MAX_SIZE: int = LIMITS["max_size"]
MAX_QUEUE: int = LIMITS["max_queue"]
MIB = 1 << 20
DEFLATE = "permessage-deflate"
#: No progress writing for this long when the time runs out: the server stopped reading.
STALL = 2.0
#: Seconds to wait for the server's close frame once the attacker stopped sending.
LINGER = 5.0


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB" if n < 10 * MIB else f"{n / MIB:,.0f} MiB"


# frame abuse


@dataclass(frozen=True)
class Case:
    """A bad frame sequence and the close codes RFC 6455 allows in answer."""

    name: str
    data: bytes
    expect: tuple[str, ...]


def _close(code: int, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, close_payload(code, reason))


def frame_cases() -> list[Case]:
    p = ("1002",)  # protocol error (RFC 6455 section 7.4.1)
    u = ("1007",)  # invalid data: bad UTF-8 (section 8.1)
    big = ("1009",)  # message too big
    cases = [
        Case("unmasked client frame", frame(OP_TEXT, b"hello", mask=None), p),
        Case("opcode 0x3", frame(0x3, b"x"), p),
        Case("opcode 0x7", frame(0x7, b"x"), p),
        Case("opcode 0xB", frame(0xB, b""), p),
        Case("opcode 0xF", frame(0xF, b""), p),
        Case("RSV1 without extension", frame(OP_TEXT, b"hi", rsv=4), p),
        Case("RSV2", frame(OP_TEXT, b"hi", rsv=2), p),
        Case("RSV3", frame(OP_TEXT, b"hi", rsv=1), p),
        Case("RSV2 on a ping", frame(OP_PING, b"", rsv=2), p),
        Case("fragmented ping", frame(OP_PING, b"x", fin=False), p),
        Case("fragmented close", frame(OP_CLOSE, close_payload(1000), fin=False), p),
        Case("ping of 126 bytes", frame(OP_PING, b"x" * 126), p),
        Case("close of 126 bytes", _close(1000, b"x" * 124), p),
        Case("close of 1 byte", frame(OP_CLOSE, b"\x03"), p),
        *(
            Case(f"close code {code}", _close(code), p)
            for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
        ),
        Case("close reason not UTF-8", _close(1000, b"\xff\xfe"), u),
        Case("text not UTF-8", frame(OP_TEXT, b"\xff\xfe"), u),
        Case("text with a surrogate", frame(OP_TEXT, b"\xed\xa0\x80"), u),
        Case("text with an overlong form", frame(OP_TEXT, b"\xc0\xaf"), u),
        Case("text cut mid-character", frame(OP_TEXT, b"ok\xe2\x82"), u),
        Case(
            "bad UTF-8 in a continuation",
            frame(OP_TEXT, b"ok", fin=False) + frame(OP_CONT, b"\xff"),
            u,
        ),
        Case("continuation without start", frame(OP_CONT, b"x"), p),
        Case(
            "new message inside a fragmented one",
            frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),
            p,
        ),
        Case(
            "length with the high bit set",
            header(OP_BINARY, 1 << 63, mask=MASK) + b"x" * 16,
            ("1002", "1009"),
        ),
        Case(
            "message of max_size + 1",
            frame(OP_BINARY, bytes(MAX_SIZE + 1), mask=ZERO_MASK),
            big,
        ),
        Case(
            "fragments over max_size",
            frame(OP_BINARY, bytes(MAX_SIZE // 2 + 1), fin=False, mask=ZERO_MASK)
            + frame(OP_CONT, bytes(MAX_SIZE // 2 + 1), mask=ZERO_MASK),
            big,
        ),
        Case("close code 3000 (valid, echoed)", _close(3000), ("3000",)),
    ]
    return cases


#: The names of the frame-abuse cases, in order (for documentation and tests).
FRAME_CASES = [case.name for case in frame_cases()]


async def frame_abuse(target: Target) -> JSON:
    """Each case on its own connection (no extension negotiated), one after another."""
    outcomes = Outcomes()
    got: dict[str, str] = {}
    why = []
    for case in frame_cases():
        try:
            conn = await RawConnection.open(target.port)
        except HandshakeFailed as exc:
            got[case.name] = f"handshake {exc.status}"
        else:
            try:
                await conn.send(case.data, 5)
                code = await conn.ending(5)
                then = await conn.closed_by_server(3) if code.isdigit() else ""
            finally:
                conn.abort()
            got[case.name] = code if then in ("", "EOF") else f"{code}+{then}"
        outcomes.add(got[case.name])
        if got[case.name] not in case.expect:
            why.append(f"{case.name}: {got[case.name]} (expected {'/'.join(case.expect)})")
    cases = frame_cases()
    matched = sum(1 for case in cases if got[case.name] in case.expect)
    return {
        "closes": f"{outcomes.summary()}; {matched}/{len(cases)} as RFC 6455 says",
        "held": not why,
        "why": why,
        "cases": {
            case.name: {"expect": list(case.expect), "got": got[case.name]} for case in cases
        },
    }


# floods: shared pump


async def _pump(
    conn: RawConnection,
    chunks: Iterator[bytes],
    *,
    seconds: float,
    max_bytes: int,
    watch: asyncio.Future[str] | None,
) -> tuple[int, str]:
    """Write chunks until ``max_bytes``, ``seconds`` or the server ending the connection
    (``watch`` done); return the bytes written and why it stopped: ``"budget"``,
    ``"time"``, ``"closed"``, ``"write failed"``, or ``"stalled"`` (the time ran out
    while the server had not read anything for the last ``STALL`` seconds: it stopped
    reading). A slow server is waited for until the time runs out."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    sent = 0
    while True:
        if sent >= max_bytes:
            return sent, "budget"
        if loop.time() >= end:
            return sent, "time"
        if watch is not None and watch.done():
            return sent, "closed"
        try:
            chunk = next(chunks)
        except StopIteration:
            return sent, "budget"
        try:
            conn.writer.write(chunk)
            written = loop.time()
            drain = asyncio.ensure_future(conn.writer.drain())
            waiters: set[asyncio.Future[None] | asyncio.Future[str]] = {drain}
            if watch is not None:
                waiters.add(watch)
            done, _ = await asyncio.wait(
                waiters,
                timeout=max(0.0, end - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if drain not in done:
                drain.cancel()
                if watch is not None and watch.done():
                    return sent, "closed"
                return sent, "stalled" if loop.time() - written >= STALL else "time"
            drain.result()
        except (ConnectionError, RuntimeError):
            return sent, "write failed"
        sent += len(chunk)


def _repeat(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


async def _open(target: Target, deflate: bool) -> RawConnection:
    conn = await RawConnection.open(target.port, extensions=DEFLATE if deflate else None)
    if deflate and not conn.deflate:
        conn.abort()
        raise HandshakeFailed("permessage-deflate not negotiated")
    return conn


async def _flood(
    target: Target,
    *,
    first: bytes,
    chunks: Iterator[bytes],
    seconds: float,
    max_bytes: int,
    deflate: bool = False,
    watch_close: bool = True,
    unit: str = "bytes",
    unit_size: int = 1,
) -> JSON:
    """One connection: send ``first``, then ``chunks`` until a bound; report how it ended."""
    conn = await _open(target, deflate)
    watch: asyncio.Future[str] | None = None
    try:
        if watch_close:
            watch = asyncio.ensure_future(conn.ending(seconds + 10))
        conn.writer.write(first)
        sent, stop = await _pump(conn, chunks, seconds=seconds, max_bytes=max_bytes, watch=watch)
        ending = OPEN
        if watch is not None:
            if not watch.done():
                # Give the server time to read what is in the socket buffers and
                # send its close frame.
                await asyncio.wait({watch}, timeout=LINGER)
            if watch.done():
                ending = watch.result()
            else:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                # Half-close: the server sees EOF with whatever it buffered.
                await conn.close(5)
    finally:
        if watch is not None:
            watch.cancel()
        conn.abort()
    amount = f"{mib(sent)}" if unit == "bytes" else f"{sent // unit_size:,} {unit}"
    if ending == OPEN:
        text = {
            "stalled": f"open, server stopped reading after {amount}",
            "budget": f"open after {amount} (the whole budget)",
            "time": f"open after {amount} in {seconds:g} s",
        }.get(stop, f"open after {amount} ({stop})")
    else:
        text = f"{ending} after {amount}"
    return {"closes": text, "ending": ending, "stopped": stop, "sent_bytes": sent}


# huge declared length (issue 13, finding 1)


HUGE = 1 << 62


def _huge_budget(target: Target) -> tuple[float, int]:
    return target.budget.pick(20.0, 8.0), target.budget.pick(512 * MIB, 128 * MIB)


#: What the two kernels' socket buffers may hold on loopback: bytes counted as sent
#: that the server may never have read.
BUFFERED = 16 * MIB


def _judge_1009(result: JSON, within: int) -> JSON:
    """Held if the server closed with 1009 before ``within`` bytes (+ socket buffers)."""
    limit = within + BUFFERED
    ok = result["ending"] == "1009" and result["sent_bytes"] <= limit
    result["held"] = ok
    result["why"] = [] if ok else [f"expected 1009 within {mib(limit)} sent: {result['closes']}"]
    return result


async def huge_length_plain(target: Target) -> JSON:
    """No extension: a binary frame header declaring 2^62 bytes, then zeros."""
    seconds, budget = _huge_budget(target)
    result = await _flood(
        target,
        first=header(OP_BINARY, HUGE),
        chunks=_repeat(bytes(MIB)),
        seconds=seconds,
        max_bytes=budget,
    )
    return _judge_1009(result, 2 * MAX_SIZE)


async def huge_length_deflate(target: Target) -> JSON:
    """permessage-deflate negotiated: an uncompressed frame declaring 2^62 bytes."""
    seconds, budget = _huge_budget(target)
    result = await _flood(
        target,
        first=header(OP_BINARY, HUGE),
        chunks=_repeat(bytes(MIB)),
        seconds=seconds,
        max_bytes=budget,
        deflate=True,
    )
    return _judge_1009(result, 2 * MAX_SIZE)


#: A raw deflate stored block of 65,535 zeros: a valid stream that never ends.
STORED_BLOCK = b"\x00\xff\xff\x00\x00" + bytes(65535)


async def huge_length_rsv1(target: Target) -> JSON:
    """permessage-deflate negotiated: a compressed (RSV1) frame declaring 2^62 bytes,
    whose payload is an endless valid deflate stream (stored blocks)."""
    seconds, budget = _huge_budget(target)
    result = await _flood(
        target,
        first=header(OP_BINARY, HUGE, rsv=4),
        chunks=_repeat(STORED_BLOCK * 16),
        seconds=seconds,
        max_bytes=budget,
        deflate=True,
    )
    return _judge_1009(result, 2 * MAX_SIZE)


# deflate bombs


@functools.lru_cache(maxsize=2)
def bomb(size: int) -> bytes:
    """``size`` zero bytes compressed as one permessage-deflate message (RFC 7692
    section 7.2.1: the final 00 00 ff ff removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MIB)
    parts = [compressor.compress(chunk) for _ in range(size // MIB)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(parts)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def _bomb_size(target: Target) -> int:
    return int(target.budget.pick(256 * MIB, 64 * MIB))


async def _one_bomb(target: Target, frames: int) -> str:
    data = bomb(_bomb_size(target))
    try:
        conn = await _open(target, deflate=True)
    except HandshakeFailed as exc:
        return f"handshake {exc.status}"
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__
    try:
        step = -(-len(data) // frames)
        parts = [data[i : i + step] for i in range(0, len(data), step)]
        wire = b"".join(
            header(
                OP_BINARY if i == 0 else OP_CONT,
                len(part),
                fin=i == len(parts) - 1,
                rsv=4 if i == 0 else 0,
            )
            + part
            for i, part in enumerate(parts)
        )
        await conn.send(wire, 10)
        return await conn.ending(10)
    finally:
        conn.abort()


def _bomb_result(outcomes: Outcomes, size: int) -> JSON:
    counts = outcomes.counts()
    held = set(counts) == {"1009"}
    ratio = size // len(bomb(size))
    return {
        "closes": f"{outcomes.summary()} ({mib(size)} inflating from {len(bomb(size)):,} B, "
        f"{ratio:,}:1)",
        "held": held,
        "why": [] if held else [f"expected 1009 for every bomb: {counts}"],
        "outcomes": counts,
    }


async def deflate_bomb(target: Target) -> JSON:
    """One compressed frame inflating to 256 MiB of zeros."""
    outcomes = Outcomes()
    outcomes.add(await _one_bomb(target, 1))
    return _bomb_result(outcomes, _bomb_size(target))


async def deflate_bomb_fragmented(target: Target) -> JSON:
    """The same bomb split across 32 frames (RSV1 on the first)."""
    outcomes = Outcomes()
    outcomes.add(await _one_bomb(target, 32))
    return _bomb_result(outcomes, _bomb_size(target))


async def deflate_bomb_many(target: Target) -> JSON:
    """50 connections (10 at a time) each sending the one-frame bomb."""
    count = target.budget.pick(50, 10)
    sem = asyncio.Semaphore(10)
    outcomes = Outcomes()

    async def one() -> None:
        async with sem:
            outcomes.add(await _one_bomb(target, 1))

    await asyncio.gather(*(one() for _ in range(count)))
    return _bomb_result(outcomes, _bomb_size(target))


# endless fragments (issue 13, finding 3)


def _fragment_chunk(payload: bytes, per_chunk: int) -> bytes:
    return frame(OP_CONT, payload, fin=False) * per_chunk


async def fragments_empty(target: Target) -> JSON:
    """A fragmented message of empty continuation frames that never ends."""
    count = target.budget.pick(20_000_000, 2_000_000)
    per = 10_000
    chunk = _fragment_chunk(b"", per)
    result = await _flood(
        target,
        first=frame(OP_BINARY, b"", fin=False),
        chunks=_repeat(chunk),
        seconds=target.budget.pick(20.0, 6.0),
        max_bytes=count // per * len(chunk),
        unit="frames",
        unit_size=len(chunk) // per,
    )
    held = result["ending"] != OPEN
    result["held"] = held
    result["why"] = [] if held else [f"never closed: {result['closes']}"]
    return result


async def fragments_2b(target: Target) -> JSON:
    """A fragmented message of 2-byte continuation frames, past max_size."""
    per = 10_000
    chunk = _fragment_chunk(b"ab", per)
    frames = (MAX_SIZE * 3 // 2) // 2
    result = await _flood(
        target,
        first=frame(OP_BINARY, b"ab", fin=False),
        chunks=_repeat(chunk),
        seconds=target.budget.pick(25.0, 6.0),
        max_bytes=frames // per * len(chunk),
        unit="frames",
        unit_size=len(chunk) // per,
    )
    return _judge_1009(result, (MAX_SIZE // 2 + per) * len(chunk) // per)


# readers that don't read (issue 13, finding 2)


async def ping_flood(target: Target) -> JSON:
    """125-byte pings, as fast as the server takes them, never reading a pong."""
    per = 500
    chunk = frame(OP_PING, b"p" * 125) * per
    result = await _flood(
        target,
        first=b"",
        chunks=_repeat(chunk),
        seconds=target.budget.pick(20.0, 5.0),
        max_bytes=4 << 30,
        watch_close=False,
    )
    held = result["stopped"] in ("stalled", "write failed")
    result["held"] = held
    result["why"] = [] if held else [f"the server never stopped reading: {result['closes']}"]
    return result


async def non_reader(target: Target) -> JSON:
    """Messages just under max_size to the echo handler, never reading an echo."""
    size = MAX_SIZE - 1024
    result = await _flood(
        target,
        first=b"",
        chunks=_repeat(frame(OP_BINARY, bytes(size), mask=ZERO_MASK)),
        seconds=target.budget.pick(8.0, 4.0),
        max_bytes=4 << 30,
        watch_close=False,
    )
    held = result["stopped"] in ("stalled", "write failed")
    result["held"] = held
    result["why"] = [] if held else [f"the server never stopped reading: {result['closes']}"]
    return result
