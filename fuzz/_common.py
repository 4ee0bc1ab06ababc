"""What the fuzz harnesses share: the wsharbor imports, input splitting, the runner.

Every harness imports wsharbor through this module only, so that atheris
instruments it (coverage feedback comes from the ``wsharbor`` package, not from
the standard library) and so that a module moved inside ``wsharbor.protocol``
is fixed here, in one place.

Input layout: each harness reads a few leading bytes of the fuzz input as its
settings (documented in the harness and in ``fuzz/README.md``) and the rest as
the bytes to parse. The split into chunks is derived from a seed byte, so that
a crash file replays exactly.
"""

from __future__ import annotations

import random
import sys
import types
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["wsharbor"]):
    from wsharbor import exceptions

    # The HTTP/1.1 parsers, Headers, the header-value grammar, URIs and the
    # handshake rules, under one name for the harnesses.
    from wsharbor.protocol import (
        connection,
        datastructures,
        deflate,
        frames,
        handshake,
        headers,
        http11,
        uri,
        utf8,
    )

http = types.SimpleNamespace(
    **{
        name: getattr(module, name)
        for module in (datastructures, http11, headers, uri, handshake)
        for name in module.__all__
    }
)

__all__ = [
    "connection",
    "deflate",
    "exceptions",
    "frames",
    "http",
    "run",
    "split",
    "utf8",
]


def split(data: bytes, seed: int) -> list[bytes]:
    """Cut ``data`` into chunks chosen by ``seed`` (0-255).

    ``seed % 4 == 0``: one byte at a time; otherwise chunks of random sizes,
    small ones more often, from a PRNG seeded with ``seed`` (so the same input
    is always cut the same way).
    """
    if seed % 4 == 0:
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    chunks = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 1 << rng.randint(0, 10))
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under libFuzzer with the command line's arguments."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
