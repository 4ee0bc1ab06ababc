"""An attack suite: wsharbor and websockets, same limits, attacked from 127.0.0.1.

``make attack`` (or ``python -m benchmarks.attacks``) runs every scenario of
:mod:`benchmarks.attacks.scenarios` against a fresh server process of each library
(:mod:`benchmarks.attacks.server`: an echo server with ``/healthz``, the same
``max_size``, ``max_queue``, ``write_limit``, ``open_timeout`` and keepalive for
both, each library's default compression). For each it records the server's RSS
before, at its peak and once the attacker let go; the round-trip p99 of a probe
client echoing every 50 ms on its own connection (:mod:`.probe`); how the server
ended the attacker's connections (close code, HTTP status, EOF, RST, or still
open); and the tracebacks and ERROR lines the server logged. Each scenario says
what holding means; the table ends with the ones that did not hold and why.

Every attack connects to 127.0.0.1 only, is bounded in count and in time, and
stops by itself. ``--quick`` shrinks counts and budgets; ``--only`` picks
attacks; ``--json`` keeps every figure; ``--markdown`` prints the table for
``SECURITY.md``. The exit status is 1 when a wsharbor row did not hold.
"""

__all__: list[str] = []
