#!/usr/bin/env python
"""Generate the sample corpus of ``wsharbor bench compression --sample``.

The corpus is one connection's stream of small JSON documents as a typical
WebSocket application sends them: chat messages, presence updates, ticker
updates and game state deltas, interleaved, with timestamps that increase.
It is generated from a fixed seed with :mod:`random` only (no download), so
running this script again rewrites the bundled file byte for byte::

    python scripts/generate_corpus.py            # rewrite the bundled file
    python scripts/generate_corpus.py --check    # exit 1 if it differs

Output: ``src/wsharbor/bench/data/sample.jsonl``, one JSON document per line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["OUTPUT", "SEED", "generate", "main"]

SEED = 7692  # RFC 7692
COUNT = 3000
OUTPUT = (
    Path(__file__).resolve().parents[1] / "src" / "wsharbor" / "bench" / "data" / "sample.jsonl"
)

_FIRST_NAMES = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy "
    "rupert sybil trent victor walter yuki zoe amir bea chen dmitri esme farah goran"
)
_FIRST = _FIRST_NAMES.split()
_ROOMS = ["general", "random", "support", "dev", "ops", "announcements", "gaming", "music"]
_WORD_LIST = (
    "the a to and of is it you that in for on this be with have are not i we can just "
    "deploy server client message connection update build test release fix bug ticket "
    "meeting today tomorrow lunch coffee thanks great ok sure yes no maybe later now "
    "please check look see think know need want works broken again why how what when "
    "latency memory compression window socket proxy nginx kubernetes pod restart logs "
    "error warning timeout retry cache database query index migration rollback merge"
)
_WORDS = _WORD_LIST.split()
_EMOJI = ["", "", "", "", " :)", " :D", " 👍", " 🎉", " 🚀", " 😅"]
_STATUSES = ["online", "away", "busy", "offline", "typing"]
_SYMBOLS = {
    "BTC-USD": 64250.0,
    "ETH-USD": 3120.0,
    "SOL-USD": 145.2,
    "AAPL": 189.3,
    "MSFT": 415.8,
    "EUR-USD": 1.0842,
    "GBP-USD": 1.2671,
    "XAU-USD": 2331.4,
}
_ITEMS = ["sword", "shield", "potion", "arrow", "gem", "key", "scroll", "ring"]


# Zipf's law: the n-th most frequent word is n times rarer than the first.
_WORD_WEIGHTS = [1 / (rank + 1) for rank in range(len(_WORDS))]


def _zipf_word(rng: random.Random) -> str:
    return rng.choices(_WORDS, _WORD_WEIGHTS)[0]


class _State:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ts = 1_717_000_000_000  # milliseconds
        self.message_id = 100_000
        self.tick = 0
        self.prices = dict(_SYMBOLS)
        self.players: dict[int, dict[str, Any]] = {
            pid: {
                "id": pid,
                "name": rng.choice(_FIRST),
                "x": rng.randint(0, 1000),
                "y": rng.randint(0, 1000),
                "hp": 100,
                "score": 0,
            }
            for pid in range(1, 9)
        }
        self.sequence = 0


def _user(rng: random.Random) -> dict[str, Any]:
    index = rng.randrange(len(_FIRST))
    return {"id": f"u{1000 + index}", "name": _FIRST[index].capitalize()}


def _chat(state: _State) -> dict[str, Any]:
    rng = state.rng
    state.message_id += 1
    words = [_zipf_word(rng) for _ in range(max(1, int(rng.expovariate(1 / 9))))]
    text = " ".join(words).capitalize() + rng.choice([".", "!", "?", ""]) + rng.choice(_EMOJI)
    message: dict[str, Any] = {
        "type": "chat.message",
        "id": f"msg_{state.message_id}",
        "room": rng.choice(_ROOMS),
        "user": _user(rng),
        "text": text,
        "ts": state.ts,
    }
    if rng.random() < 0.15:
        message["reply_to"] = f"msg_{state.message_id - rng.randint(1, 50)}"
    if rng.random() < 0.1:
        message["reactions"] = {rng.choice(["+1", "heart", "laugh"]): rng.randint(1, 9)}
    return message


def _presence(state: _State) -> dict[str, Any]:
    rng = state.rng
    return {
        "type": "presence",
        "user": _user(rng),
        "status": rng.choice(_STATUSES),
        "room": rng.choice(_ROOMS),
        "ts": state.ts,
    }


def _ticker(state: _State) -> dict[str, Any]:
    rng = state.rng
    symbol = rng.choice(list(state.prices))
    price = state.prices[symbol] * (1 + rng.gauss(0, 0.0008))
    state.prices[symbol] = price
    digits = 4 if price < 10 else 2
    spread = price * 0.0002
    return {
        "type": "ticker",
        "symbol": symbol,
        "bid": round(price - spread / 2, digits),
        "ask": round(price + spread / 2, digits),
        "last": round(price, digits),
        "volume_24h": round(rng.uniform(1e3, 5e6), 2),
        "change_24h": round(rng.gauss(0, 2.5), 2),
        "ts": state.ts,
    }


def _game(state: _State) -> dict[str, Any]:
    rng = state.rng
    state.tick += rng.randint(1, 3)
    moved = rng.sample(sorted(state.players), rng.randint(1, 4))
    deltas: list[dict[str, Any]] = []
    for pid in moved:
        player = state.players[pid]
        player["x"] = max(0, min(1000, player["x"] + rng.randint(-15, 15)))
        player["y"] = max(0, min(1000, player["y"] + rng.randint(-15, 15)))
        delta: dict[str, Any] = {"id": pid, "x": player["x"], "y": player["y"]}
        if rng.random() < 0.2:
            player["hp"] = max(0, player["hp"] - rng.randint(1, 20))
            delta["hp"] = player["hp"]
        if rng.random() < 0.1:
            player["score"] += rng.randint(1, 50)
            delta["score"] = player["score"]
        deltas.append(delta)
    message: dict[str, Any] = {"type": "game.delta", "tick": state.tick, "players": deltas}
    if rng.random() < 0.05:
        message["events"] = [
            {"kind": "pickup", "player": rng.choice(moved), "item": rng.choice(_ITEMS)}
        ]
    return message


_KINDS: list[tuple[Callable[[_State], dict[str, Any]], float]] = [
    (_chat, 0.3),
    (_presence, 0.15),
    (_ticker, 0.3),
    (_game, 0.25),
]


def generate(count: int = COUNT, seed: int = SEED) -> list[str]:
    """Return ``count`` JSON documents, deterministic for a given seed."""
    rng = random.Random(seed)
    state = _State(rng)
    makers = [maker for maker, _ in _KINDS]
    weights = [weight for _, weight in _KINDS]
    documents: list[str] = []
    for _ in range(count):
        state.ts += int(rng.expovariate(1 / 120)) + 1
        state.sequence += 1
        (maker,) = rng.choices(makers, weights)
        document = maker(state)
        document["seq"] = state.sequence
        documents.append(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    return documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    args = parser.parse_args(argv)
    content = "".join(f"{document}\n" for document in generate(args.count, args.seed))
    data = content.encode()
    if args.check:
        try:
            current = args.output.read_bytes()
        except OSError as exc:
            sys.stderr.write(f"generate_corpus: {exc}\n")
            return 1
        if current != data:
            sys.stderr.write(f"generate_corpus: {args.output} is out of date\n")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    sys.stdout.write(f"wrote {args.count} messages, {len(data)} bytes to {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
