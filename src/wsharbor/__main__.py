"""The ``wsharbor`` command (also ``python -m wsharbor``).

    wsharbor run module:handler [options]     the application server
    wsharbor bench compression|memory [...]   measurement commands

Each subcommand lives in its own layer (``wsharbor.app``, ``wsharbor.bench``) and
is imported only when used.
"""

from __future__ import annotations

import sys

USAGE = """\
usage: wsharbor <command> [options]

commands:
  run MODULE:HANDLER    serve a WebSocket handler (see: wsharbor run --help)
  bench compression     compression trade-offs for your messages (see: wsharbor bench --help)
  bench memory          memory per connection, measured on real connections
  --version             print the versions of wsharbor, Python and uvloop
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "--version":
        from .version import describe

        sys.stdout.write(describe() + "\n")
        return 0
    if command == "run":
        from .app.cli import main as run_main

        return run_main(rest)
    if command == "bench":
        from .bench.cli import main as bench_main

        return bench_main(rest)
    sys.stderr.write(f"wsharbor: unknown command {command!r}\n{USAGE}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
