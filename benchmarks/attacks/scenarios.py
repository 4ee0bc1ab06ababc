"""Every attack scenario, in the order the suite runs them.

A scenario is one row per server in the final table. ``--only`` takes scenario
names or attack names (an attack groups the scenarios of one weakness, e.g.
``huge-length`` runs ``huge-length``, ``huge-length-deflate`` and
``huge-length-rsv1``).
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.attacks import frames, handshakes
from benchmarks.attacks.runner import Budget, Scenario
from benchmarks.attacks.server import LIMITS

__all__ = ["ATTACKS", "SCENARIOS", "select"]

_QUEUE_BOUND_MIB = LIMITS["max_queue"] * LIMITS["max_size"] / 2**20


def _limit(full: float, quick: float) -> Callable[[Budget], float]:
    def limit(budget: Budget) -> float:
        return float(budget.pick(full, quick))

    return limit


SCENARIOS: list[Scenario] = [
    Scenario(
        "frame-abuse",
        "frame-abuse",
        f"{len(frames.FRAME_CASES)} bad frame sequences, each on its own connection: "
        "unmasked, reserved opcodes and RSV bits, fragmented and oversized control "
        "frames, bad close codes and reasons, invalid UTF-8, stray continuations, "
        "over max_size",
        "each closed with the code RFC 6455 requires (1002, 1007 or 1009), then EOF",
        frames.frame_abuse,
        _limit(120, 120),
    ),
    Scenario(
        "malformed",
        "malformed",
        f"{len(handshakes.MALFORMED_KINDS)} kinds of malformed handshake x 50 (x 1 with "
        "--quick), 50 at a time: bad request lines, methods and versions, missing or "
        "invalid Upgrade/Connection/Key/Version, oversized and too many headers, "
        "bodies, garbage bytes",
        "each answered with an HTTP error status (wsharbor: the one it documents) and "
        "a clean close (no RST), no traceback",
        handshakes.malformed,
        _limit(300, 120),
    ),
    Scenario(
        "huge-length",
        "huge-length",
        "no extension: one frame header declaring 2^62 bytes, then zeros up to 512 MiB "
        "(128 MiB --quick) or 20 s (8 s)",
        "1009 right after the header; peak RSS within +16 MiB",
        frames.huge_length_plain,
        _limit(60, 30),
        max_growth_mib=16,
    ),
    Scenario(
        "huge-length-deflate",
        "huge-length",
        "permessage-deflate negotiated: an uncompressed frame declaring 2^62 bytes, then "
        "zeros (same budget)",
        "1009 right after the header; peak RSS within +16 MiB",
        frames.huge_length_deflate,
        _limit(60, 30),
        max_growth_mib=16,
    ),
    Scenario(
        "huge-length-rsv1",
        "huge-length",
        "permessage-deflate negotiated: a compressed (RSV1) frame declaring 2^62 bytes, "
        "then an endless valid deflate stream of stored blocks (same budget)",
        "1009 right after the header; peak RSS within +16 MiB",
        frames.huge_length_rsv1,
        _limit(60, 30),
        max_growth_mib=16,
    ),
    Scenario(
        "deflate-bomb",
        "deflate-bomb",
        "one compressed frame inflating to 256 MiB of zeros (64 MiB --quick)",
        "1009; peak RSS within +16 MiB; RSS after within +8 MiB",
        frames.deflate_bomb,
        _limit(60, 30),
        max_growth_mib=16,
        max_after_mib=8,
    ),
    Scenario(
        "deflate-bomb-fragmented",
        "deflate-bomb",
        "the same bomb split across 32 frames",
        "1009; peak RSS within +16 MiB; RSS after within +8 MiB",
        frames.deflate_bomb_fragmented,
        _limit(60, 30),
        max_growth_mib=16,
        max_after_mib=8,
    ),
    Scenario(
        "deflate-bomb-many",
        "deflate-bomb",
        "50 connections (10 --quick), 10 at a time, each sending the one-frame bomb",
        "1009 each; peak RSS within +64 MiB; RSS after within +8 MiB",
        frames.deflate_bomb_many,
        _limit(120, 60),
        max_growth_mib=64,
        max_after_mib=8,
    ),
    Scenario(
        "ping-flood",
        "ping-flood",
        "125-byte pings as fast as the server reads them, never reading a pong; 20 s (5 s --quick)",
        "the server stops reading (backpressure); peak RSS within +16 MiB",
        frames.ping_flood,
        _limit(60, 30),
        max_growth_mib=16,
    ),
    Scenario(
        "non-reader",
        "non-reader",
        "messages of max_size - 1 KiB to the echo handler, never reading an echo; 8 s "
        "(4 s --quick)",
        f"the server stops reading; peak RSS within max_queue x max_size + 16 MiB "
        f"(+{_QUEUE_BOUND_MIB + 16:g} MiB)",
        frames.non_reader,
        _limit(60, 30),
        max_growth_mib=_QUEUE_BOUND_MIB + 16,
    ),
    Scenario(
        "fragments-empty",
        "fragments",
        "a message of empty continuation frames that never ends: up to 20 M frames "
        "(2 M --quick) or 20 s (6 s)",
        "the connection is closed (websockets: 1009); peak RSS within +16 MiB",
        frames.fragments_empty,
        _limit(60, 30),
        max_growth_mib=16,
    ),
    Scenario(
        "fragments-2b",
        "fragments",
        "a message of 2-byte continuation frames, up to 1.5 x max_size of payload",
        "1009 once the message passes max_size; peak RSS within +16 MiB",
        frames.fragments_2b,
        _limit(60, 30),
        max_growth_mib=16,
    ),
    Scenario(
        "slowloris",
        "slowloris",
        "2,000 connections (300 --quick) send a request line and then one header line "
        "every 2 s, never ending the request",
        "each dropped by open_timeout + 2 s; probe unaffected",
        handshakes.slowloris,
        _limit(90, 60),
    ),
    Scenario(
        "tls-silent",
        "tls-stall",
        "500 TCP connections (100 --quick) to the TLS port that never send a byte",
        "each dropped by open_timeout + 2 s",
        handshakes.tls_silent,
        _limit(60, 60),
        tls=True,
    ),
    Scenario(
        "tls-partial-hello",
        "tls-stall",
        "500 connections (100 --quick) to the TLS port that send half a ClientHello, then nothing",
        "each dropped by open_timeout + 2 s",
        handshakes.tls_partial_hello,
        _limit(60, 60),
        tls=True,
    ),
    Scenario(
        "fd-exhaustion",
        "fd-exhaustion",
        "server at RLIMIT_NOFILE 256: 600 connections (400 --quick) try to upgrade, then "
        "stay idle 10 s (4 s) while the server's CPU and log are measured; then a new "
        "handshake and GET /healthz; then all let go",
        "server CPU under 20 % and log under 1 KiB/s while idle at the limit; new "
        "handshakes work within 10 s of letting go",
        handshakes.fd_exhaustion,
        _limit(90, 60),
        nofile=256,
    ),
    Scenario(
        "churn",
        "churn",
        "8 workers connect, upgrade (every other one with permessage-deflate), echo one "
        "message and close, for 60 s (8 s --quick)",
        "no failed cycle; RSS flat (within +4 MiB over the last three quarters)",
        handshakes.churn,
        _limit(120, 40),
    ),
]

#: Attack names (what ``--only`` takes besides scenario names), in order.
ATTACKS: list[str] = list(dict.fromkeys(s.attack for s in SCENARIOS))


def select(names: list[str] | None) -> list[Scenario]:
    """The scenarios named, or belonging to an attack named; all of them for None."""
    if not names:
        return list(SCENARIOS)
    known = set(ATTACKS) | {s.name for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown attack: {', '.join(unknown)} (choose from {', '.join(sorted(known))})"
        )
    return [s for s in SCENARIOS if s.name in names or s.attack in names]
