"""``wsharbor bench compression|memory``: the measurement commands.

Every error is one line on stderr and exit status 2 (bad usage, bad corpus,
missing optional dependency); a run that completes exits 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from ..protocol.deflate import BACKENDS, set_backend, shared_backend
from .compression import (
    ALL_SETTINGS,
    GUIDE_SETTINGS,
    Setting,
    benchmark,
    format_csv,
    format_json,
    format_table,
    parse_settings,
)
from .console import ArgumentParser, ProgressBar, UsageError, write_output
from .corpus import SAMPLE_NAME, CorpusError, load_corpus, sample_corpus

__all__ = ["main"]

USAGE = """\
usage: wsharbor bench compression (CORPUS | --sample) [options]
       wsharbor bench memory [options]

  compression   compression trade-offs (memory, size, time) for a corpus of
                messages: a directory (one message per file), a JSON-lines
                file, or a text file (one message per line)
  memory        memory per connection, on real connections on 127.0.0.1

  wsharbor bench compression --help / wsharbor bench memory --help for options
"""


def _thresholds(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"invalid --threshold {text!r}: expected integers, e.g. 0,32,64") from None
    if not values or min(values) < 0:
        raise UsageError(f"invalid --threshold {text!r}: expected integers >= 0")
    return values


def compression_main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(
        prog="wsharbor bench compression",
        description="Memory, compressed size and time of permessage-deflate settings "
        "for a corpus of messages (the deployment guide's table).",
    )
    parser.add_argument(
        "corpus",
        nargs="?",
        help="a directory (one message per file), a JSON-lines file (.jsonl/.ndjson) "
        "or a text file (one message per line)",
    )
    parser.add_argument("--sample", action="store_true", help="use the bundled sample corpus")
    parser.add_argument(
        "--all", action="store_true", help="every window bits (9-15) x memory level (1-9)"
    )
    parser.add_argument(
        "--settings", metavar="W/M,...", help="settings to measure, e.g. 15/8,12/5,disabled"
    )
    parser.add_argument(
        "--threshold",
        metavar="N[,N...]",
        default="0",
        help="messages shorter than N bytes are sent uncompressed; several values "
        "measure each setting with each threshold (default: 0)",
    )
    parser.add_argument(
        "--context-takeover",
        choices=("on", "off", "both"),
        default="on",
        help="measure with context takeover (on, the default), without it (off: "
        "server_no_context_takeover and client_no_context_takeover), or both",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help=f"zlib implementation (installed: {', '.join(BACKENDS)}; default: the first)",
    )
    parser.add_argument("--level", type=int, default=6, help="zlib compression level (6)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, best counts (3)")
    parser.add_argument("--json", metavar="FILE", help="write results as JSON (- for stdout)")
    parser.add_argument("--csv", metavar="FILE", help="write results as CSV (- for stdout)")
    parser.add_argument("--plot", metavar="FILE.png", help="chart size vs. memory (matplotlib)")
    args = parser.parse_args(argv)

    if args.sample == (args.corpus is not None):
        raise UsageError("give a CORPUS or --sample (one of them)")
    if args.all and args.settings:
        raise UsageError("--all and --settings are exclusive")
    if not -1 <= args.level <= 9:
        raise UsageError(f"invalid --level {args.level}: expected -1 to 9")
    if args.repeat < 1:
        raise UsageError(f"invalid --repeat {args.repeat}: expected at least 1")
    try:
        base = parse_settings(args.settings) if args.settings else None
    except ValueError as exc:
        raise UsageError(f"invalid --settings: {exc}") from None
    if base is None:
        base = list(ALL_SETTINGS if args.all else GUIDE_SETTINGS)
    thresholds = _thresholds(args.threshold)
    takeovers = {"on": (True,), "off": (False,), "both": (True, False)}[args.context_takeover]
    settings: list[Setting] = []
    for setting in base:
        if setting.disabled:
            if setting not in settings:
                settings.append(setting)
            continue
        for takeover in takeovers:
            for threshold in thresholds:
                settings.append(
                    Setting(setting.window_bits, setting.memory_level, threshold, takeover)
                )
    # Move "disabled" last, as in the guide.
    settings.sort(key=lambda s: s.disabled)

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'wsharbor[plot]'") from None

    try:
        messages = sample_corpus() if args.sample else load_corpus(args.corpus)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    source = f"{SAMPLE_NAME} (bundled)" if args.sample else str(args.corpus)

    bar = ProgressBar(sys.stderr)

    def progress(done: int, total: int, setting: Setting) -> None:
        bar(done, total, setting.label)

    previous = set_backend(args.backend) if args.backend else None
    try:
        # What compresses without context takeover (with it, the standard
        # library's zlib always: see BACKENDS).
        implementation = shared_backend(args.level)
        started = time.perf_counter()
        results = benchmark(
            messages, settings, level=args.level, repeat=args.repeat, progress=progress
        )
        elapsed = time.perf_counter() - started
    finally:
        if previous is not None:
            set_backend(previous)

    if args.json != "-" and args.csv != "-":
        sys.stdout.write(f"corpus: {source}; zlib implementation: {implementation}\n")
        sys.stdout.write(format_table(results))
        sys.stdout.write(f"measured in {elapsed:.1f} s\n")
    if args.json:
        info = {
            "corpus": source,
            "messages": len(messages),
            "bytes": sum(map(len, messages)),
            "level": args.level,
            "backend": implementation,
            "elapsed": round(elapsed, 3),
        }
        write_output(args.json, format_json(results, **info))
    if args.csv:
        write_output(args.csv, format_csv(results))
    if args.plot:
        from .compression import plot

        try:
            plot(results, args.plot, title=f"permessage-deflate on {source}")
        except OSError as exc:
            raise UsageError(f"can't write {args.plot}: {exc.strerror or exc}") from None
    return 0


def main(argv: Sequence[str]) -> int:
    """Entry point of ``wsharbor bench``; returns the exit status."""
    args = list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "compression":
            return compression_main(rest)
        if command == "memory":
            from .memory import main as memory_main

            return memory_main(rest)
        raise UsageError(f"unknown command {command!r} (expected compression or memory)")
    except UsageError as exc:
        sys.stderr.write(f"wsharbor bench {command}: error: {exc}\n")
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
