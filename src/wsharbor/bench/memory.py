"""Memory per connection, measured on real connections: ``wsharbor bench memory``.

For each library (wsharbor, and websockets when it is importable) and each
compression setting, the command starts a server process and a client process
on 127.0.0.1, so that each process's memory is attributable to one side:

1. the client opens and closes one warm-up connection (first-use allocations:
   modules, caches, the shared read buffer), then both sides record a baseline;
2. the client opens ``N`` connections (at most 100 handshakes in flight); each
   exchanges the messages and stays open. By default (``--messages json``) one
   100-byte JSON text message each way (the client sends it, the server echoes
   it): above every compression threshold (wsharbor's are 16 and 64 bytes,
   websockets has none), so with compression on it is compressed both ways,
   and the figure is that of an idle connection after real compressed traffic.
   ``--messages hello`` exchanges ``"hello"`` as text then as binary (under the
   thresholds: wsharbor allocates no zlib state for it), ``--messages sample``
   the first 8 messages of the bundled corpus (each as text and as binary);
3. both sides record their memory again; per connection = delta / ``N``.

Each pair of processes runs twice: once with :mod:`tracemalloc` on (the
``traced`` figure: Python and zlib allocations) and once without it (the
``rss`` figure: resident set size from ``/proc/self/statm``, which includes
allocator overhead and isn't inflated by tracemalloc's own bookkeeping).

Both libraries run with their own defaults, on the default asyncio event loop.
Settings: ``disabled``, ``default`` (each library's and each side's default
compression: wsharbor's server keeps no context between messages), ``takeover``
(wsharbor's server with ``SERVER_CONTEXT_TAKEOVER``; websockets' default),
``nct`` and ``nct-server`` (the server asks for no context takeover on both
sides, or on its own side only; websockets with its default window and memory
level; the clients at their defaults) and
``W/M`` rows (both sides compress with window bits ``W`` and memory level ``M``,
with context takeover, and ask the peer to use window bits ``W``). Every process is
bounded in time and stops by itself; the parent kills a process that doesn't.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import resource
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from .console import ArgumentParser, ProgressBar, UsageError, grid_table, write_output

__all__ = [
    "DEFAULT_SETTINGS",
    "LIBRARIES",
    "Measurement",
    "format_table",
    "main",
    "raise_nofile_limit",
    "run",
    "zlib_memory",
]

LIBRARIES = ("wsharbor", "websockets")
DEFAULT_SETTINGS = (
    "disabled",
    "default",
    "takeover",
    "15/8",
    "14/7",
    "13/6",
    "12/5",
    "11/4",
    "10/3",
    "9/2",
)
MAX_CONNECTIONS = 10_000
#: Handshakes in flight at once on the client side.
CONCURRENCY = 100
#: Deadline for every step of a worker (start, warm-up, N connections, measure).
STEP_TIMEOUT = 120.0
#: Messages of the sample corpus each connection exchanges with ``--messages sample``.
SAMPLE_MESSAGES = 8
#: The message of ``--messages json``: 100 bytes, compressed by every library.
JSON_MESSAGE = (
    '{"type":"chat.message","room":"general","user":"u1022",'
    '"text":"see you after lunch at the cafe :-)"}'
)
#: What each ``--messages`` choice is, for the output.
MESSAGES_DESCRIPTION = {
    "json": f"one {len(JSON_MESSAGE)}-byte JSON text message each way (compressed: above "
    "every threshold)",
    "hello": "'hello' as text and binary (under the thresholds: not compressed)",
    "sample": f"the first {SAMPLE_MESSAGES} messages of the bundled corpus, as text and binary",
}


class _Error(Exception):
    pass


# Helpers shared by the parent and the workers.


def raise_nofile_limit() -> int:
    """Raise the soft limit of open files to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # Peak, not current: good enough for a delta that only grows.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _snapshot(tracing: bool) -> dict[str, int]:
    gc.collect()
    if tracing:
        return {"traced": tracemalloc.get_traced_memory()[0]}
    return {"rss": _rss()}


def _load_messages(spec: str) -> list[str]:
    """``json``, ``hello``, ``sample`` (the first messages of the bundled corpus) or a
    corpus path."""
    if spec == "json":
        return [JSON_MESSAGE]
    if spec == "hello":
        return ["hello"]
    from .corpus import CorpusError, load_corpus, sample_corpus

    try:
        corpus = sample_corpus() if spec == "sample" else load_corpus(spec)
    except CorpusError as exc:
        raise _Error(str(exc)) from None
    try:
        return [message.decode() for message in corpus[:SAMPLE_MESSAGES]]
    except UnicodeDecodeError:
        raise _Error(f"{spec}: messages must be UTF-8 text") from None


def _parse_setting(setting: str) -> tuple[int, int]:
    bits, _, level = setting.partition("/")
    return int(bits), int(level)


def zlib_memory(window_bits: int, memory_level: int, messages: Sequence[str]) -> int:
    """Bytes zlib holds for one connection's compressor and decompressor.

    Measured with tracemalloc after ``messages`` went through a
    ``compressobj(6, DEFLATED, -window_bits, memory_level)`` and a
    ``decompressobj(-window_bits)`` with sync flushes, as permessage-deflate does.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        encoder = zlib.compressobj(6, zlib.DEFLATED, -window_bits, memory_level)
        decoder = zlib.decompressobj(-window_bits)
        for message in messages:
            data = message.encode()
            for _ in range(2):  # as text, then as binary
                decoder.decompress(encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH))
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        del encoder, decoder
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if started:
            tracemalloc.stop()
    return before - after


# Workers: one process per side.


def _wsharbor_compression(setting: str, side: str) -> Any:
    from ..protocol.deflate import SERVER_CONTEXT_TAKEOVER, SERVER_DEFAULTS, DeflateSettings

    if setting == "disabled":
        return None
    if setting in ("default", "nct") or (side == "client" and setting == "nct-server"):
        return "deflate"
    if setting == "takeover":
        return SERVER_CONTEXT_TAKEOVER if side == "server" else "deflate"
    if setting == "nct-server":
        return dataclasses.replace(SERVER_DEFAULTS, peer_context_takeover=True)
    bits, level = _parse_setting(setting)
    return DeflateSettings(window_bits=bits, memory_level=level, peer_window_bits=bits)


def _websockets_compression(setting: str, side: str) -> dict[str, Any]:
    if setting == "disabled":
        return {"compression": None}
    if setting in ("default", "takeover") or (side == "client" and setting.startswith("nct")):
        return {"compression": "deflate"}
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        ServerPerMessageDeflateFactory,
    )

    if setting.startswith("nct"):
        # websockets' server defaults, without context takeover on its side
        # (nct-server) or on both (nct).
        server = ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=setting == "nct",
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5},
        )
        return {"compression": None, "extensions": [server]}

    bits, level = _parse_setting(setting)
    factory: Any = (
        ServerPerMessageDeflateFactory if side == "server" else ClientPerMessageDeflateFactory
    )
    extension = factory(
        server_max_window_bits=bits,
        client_max_window_bits=bits,
        compress_settings={"memLevel": level},
    )
    return {"compression": None, "extensions": [extension]}


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def _command(loop: asyncio.AbstractEventLoop) -> str:
    line: str = await loop.run_in_executor(None, sys.stdin.readline)
    if not line:
        os._exit(0)  # the parent went away
    return line.strip()


async def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise _Error(f"timeout waiting for {what}")
        await asyncio.sleep(0.01)


async def _server(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    library, setting = config["library"], config["setting"]
    active = 0

    async def handler(websocket: Any) -> None:
        nonlocal active
        active += 1
        try:
            async for message in websocket:
                await websocket.send(message)
        except Exception:
            pass
        finally:
            active -= 1

    if library == "wsharbor":
        from ..asyncio.server import serve

        server: Any = await serve(
            handler, "127.0.0.1", 0, compression=_wsharbor_compression(setting, "server")
        )
    else:
        from websockets.asyncio.server import serve as ws_serve

        server = await ws_serve(
            handler, "127.0.0.1", 0, **_websockets_compression(setting, "server")
        )
    port = server.sockets[0].getsockname()[1]
    _emit({"port": port})
    tracing: bool = config["tracing"]
    baseline: dict[str, int] = {}
    while True:
        command = await _command(loop)
        if command == "baseline":
            await _wait_for(lambda: active == 0, "the warm-up connection to close")
            baseline = _snapshot(tracing)
            _emit({"ok": True})
        elif command.startswith("measure "):
            count = int(command.split()[1])
            await _wait_for(lambda n=count: active >= n, f"{count} connections")
            after = _snapshot(tracing)
            _emit({key: after[key] - baseline[key] for key in after})
        else:
            os._exit(0)


async def _client(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    library, setting = config["library"], config["setting"]
    uri = f"ws://127.0.0.1:{config['port']}/"
    messages: list[str] = config["messages"]
    if library == "wsharbor":
        from ..asyncio.client import connect

        compression = _wsharbor_compression(setting, "client")

        async def open_connection() -> Any:
            return await connect(uri, compression=compression)
    else:
        from websockets.asyncio.client import connect as ws_connect

        options = _websockets_compression(setting, "client")

        async def open_connection() -> Any:
            return await ws_connect(uri, **options)

    async def exchange(websocket: Any) -> None:
        for message in messages:
            await websocket.send(message)
            if await websocket.recv() != message:
                raise _Error("the server didn't echo the text message")
            if config["text_only"]:
                continue
            data = message.encode()
            await websocket.send(data)
            if await websocket.recv() != data:
                raise _Error("the server didn't echo the binary message")

    # Warm-up: one full connection, so that first-use allocations don't count.
    warm = await open_connection()
    await exchange(warm)
    await warm.close()
    del warm
    tracing: bool = config["tracing"]
    baseline = _snapshot(tracing)
    _emit({"ok": True})
    await _command(loop)  # "run"

    connections: list[Any] = []
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with limit:
            websocket = await open_connection()
            connections.append(websocket)
            await exchange(websocket)

    async with asyncio.timeout(STEP_TIMEOUT):
        await asyncio.gather(*(one() for _ in range(config["connections"])))
    after = _snapshot(tracing)
    _emit({key: after[key] - baseline[key] for key in after})
    await _command(loop)  # "exit"
    for websocket in connections:
        transport = getattr(websocket, "transport", None)
        if transport is not None:
            transport.abort()
    os._exit(0)


def _worker_main(argv: Sequence[str]) -> NoReturn:
    config = json.loads(argv[0])
    raise_nofile_limit()
    if config["tracing"]:
        tracemalloc.start()
    coroutine = _server(config) if config["role"] == "server" else _client(config)
    try:
        asyncio.run(coroutine)
    except BaseException as exc:  # report anything on one line, then exit
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        os._exit(1)
    os._exit(0)


# The parent: runs the workers, collects the figures.


@dataclass
class Measurement:
    """Memory per connection of one library with one setting (bytes)."""

    library: str
    setting: str
    connections: int
    server_traced: float = 0.0
    server_rss: float = 0.0
    client_traced: float = 0.0
    client_rss: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name

    @classmethod
    async def start(cls, config: dict[str, Any]) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsharbor.bench.memory",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, f"{config['library']} {config['role']}")

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), STEP_TIMEOUT)
        except TimeoutError:
            raise _Error(f"{self.name}: no answer in {STEP_TIMEOUT:.0f} s") from None
        if not line:
            raise _Error(f"{self.name}: exited unexpectedly")
        data: dict[str, Any] = json.loads(line)
        if "error" in data:
            raise _Error(f"{self.name}: {data['error']}")
        return data

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.send("exit")
                await asyncio.wait_for(self.process.wait(), 10)
            except (TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()


async def _measure_pair(
    library: str, setting: str, connections: int, messages: list[str], tracing: bool
) -> tuple[dict[str, int], dict[str, int]]:
    base = {"library": library, "setting": setting, "tracing": tracing}
    server = await _Worker.start({**base, "role": "server"})
    client: _Worker | None = None
    try:
        port = (await server.read())["port"]
        client = await _Worker.start(
            {
                **base,
                "role": "client",
                "port": port,
                "connections": connections,
                "messages": messages,
                "text_only": messages == [JSON_MESSAGE],
            }
        )
        await client.read()  # warm-up done, client baseline taken
        await server.send("baseline")
        await server.read()
        await client.send("run")
        client_delta = await client.read()
        await server.send(f"measure {connections}")
        server_delta = await server.read()
        return server_delta, client_delta
    finally:
        if client is not None:
            await client.stop()
        await server.stop()


def _websockets_available() -> bool:
    try:
        import websockets.asyncio.server  # noqa: F401
    except ImportError:
        return False
    return True


async def run(
    connections: int = 1000,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    messages: Sequence[str] = (JSON_MESSAGE,),
    libraries: Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Measurement]:
    """Measure memory per connection; one :class:`Measurement` per library and setting."""
    if libraries is None:
        libraries = [lib for lib in LIBRARIES if lib == "wsharbor" or _websockets_available()]
    results = []
    total = len(libraries) * len(settings) * 2
    done = 0
    for setting in settings:
        for library in libraries:
            measurement = Measurement(library, setting, connections)
            for tracing in (True, False):
                if progress is not None:
                    progress(done, total, f"{library} {setting}")
                done += 1
                try:
                    server, client = await _measure_pair(
                        library, setting, connections, list(messages), tracing
                    )
                except _Error as exc:
                    measurement.errors.append(str(exc))
                    continue
                key = "traced" if tracing else "rss"
                setattr(measurement, f"server_{key}", server[key] / connections)
                setattr(measurement, f"client_{key}", client[key] / connections)
            results.append(measurement)
    if progress is not None:
        progress(total, total, "done")
    return results


def _kib(value: float) -> str:
    return f"{value / 1024:.1f}"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "N/A"


def format_table(results: Sequence[Measurement], zlib_reference: dict[str, int]) -> str:
    """Per-connection memory (KiB, traced / RSS) by setting and library, with ratios."""
    by_key = {(m.library, m.setting): m for m in results}
    settings = list(dict.fromkeys(m.setting for m in results))
    libraries = list(dict.fromkeys(m.library for m in results))
    compare = "wsharbor" in libraries and "websockets" in libraries
    header = ["Compression"]
    for side in ("server", "client"):
        for library in libraries:
            header.append(f"{library} {side}")
        if compare:
            header.append(f"ratio {side}")
    rows = []
    for setting in settings:
        row = [setting]
        for side in ("server", "client"):
            for library in libraries:
                m = by_key.get((library, setting))
                if m is None or m.errors:
                    row.append("error")
                    continue
                traced = getattr(m, f"{side}_traced")
                rss = getattr(m, f"{side}_rss")
                row.append(f"{_kib(traced)} / {_kib(rss)}")
            if compare:
                ours, theirs = (
                    by_key.get(("wsharbor", setting)),
                    by_key.get(("websockets", setting)),
                )
                if ours is None or theirs is None or ours.errors or theirs.errors:
                    row.append("N/A")
                else:
                    traced_ratio = _ratio(
                        getattr(ours, f"{side}_traced"), getattr(theirs, f"{side}_traced")
                    )
                    rss_ratio = _ratio(getattr(ours, f"{side}_rss"), getattr(theirs, f"{side}_rss"))
                    row.append(f"{traced_ratio} / {rss_ratio}")
        rows.append(row)
    out = grid_table(header, rows)
    out.append("KiB per connection: tracemalloc delta / RSS delta; ratio: wsharbor / websockets.")

    baseline = by_key.get(("wsharbor", "disabled"))
    if zlib_reference and baseline is not None and not baseline.errors:
        out.append("")
        out.append(
            "wsharbor server (traced) vs. zlib's own allocations for the setting + "
            "wsharbor's uncompressed baseline:"
        )
        for setting, zlib_bytes in zlib_reference.items():
            m = by_key.get(("wsharbor", setting))
            if m is None or m.errors:
                continue
            reference = zlib_bytes + baseline.server_traced
            out.append(
                f"  {setting:>5}: {_kib(m.server_traced)} KiB vs. {_kib(zlib_bytes)} + "
                f"{_kib(baseline.server_traced)} = {_kib(reference)} KiB "
                f"({m.server_traced / reference - 1:+.1%})"
            )
    errors = [f"{m.library} {m.setting}: {e}" for m in results for e in m.errors]
    if errors:
        out.append("")
        out += [f"error: {e}" for e in errors]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str]) -> int:
    """``wsharbor bench memory``; returns the exit status (errors: UsageError)."""
    parser = ArgumentParser(
        prog="wsharbor bench memory",
        description="Memory per connection on real connections on 127.0.0.1 (server and "
        "client in separate processes), for wsharbor and, when installed, websockets.",
    )
    parser.add_argument("--connections", type=int, default=1000, help="connections per run (1000)")
    parser.add_argument(
        "--settings",
        default=",".join(DEFAULT_SETTINGS),
        help="comma-separated: disabled, default, takeover, nct, nct-server, W/M "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--messages",
        default="json",
        help=f"what each connection exchanges: json (default: {MESSAGES_DESCRIPTION['json']}), "
        f"hello ({MESSAGES_DESCRIPTION['hello']}), sample (the first {SAMPLE_MESSAGES} "
        f"messages of the bundled corpus) or a corpus path (its first {SAMPLE_MESSAGES}); "
        "but for json, each as text, then as binary",
    )
    parser.add_argument(
        "--libraries", help="comma-separated: wsharbor, websockets (default: both if installed)"
    )
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="JSON results (stdout if no FILE)"
    )
    args = parser.parse_args(argv)

    limit = raise_nofile_limit()
    maximum = min(MAX_CONNECTIONS, limit - 100)
    if not 1 <= args.connections <= maximum:
        raise UsageError(f"--connections must be between 1 and {maximum}")
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for setting in settings:
        if setting in ("disabled", "default", "takeover", "nct", "nct-server"):
            continue
        bits, sep, level = setting.partition("/")
        if not (sep and bits.isdigit() and level.isdigit()):
            raise UsageError(
                f"invalid setting {setting!r}: expected disabled, default, takeover, nct, "
                "nct-server or W/M"
            )
        if not (9 <= int(bits) <= 15 and 1 <= int(level) <= 9):
            raise UsageError(f"invalid setting {setting!r}: W is 9-15, M is 1-9")
    if not settings:
        raise UsageError("no setting given")
    libraries = None
    if args.libraries:
        libraries = [lib.strip() for lib in args.libraries.split(",") if lib.strip()]
        for library in libraries:
            if library not in LIBRARIES:
                raise UsageError(f"unknown library {library!r} (expected wsharbor, websockets)")
        if "websockets" in libraries and not _websockets_available():
            raise UsageError("websockets isn't installed: pip install websockets")
    try:
        messages = _load_messages(args.messages)
    except _Error as exc:
        raise UsageError(str(exc)) from None

    progress = ProgressBar(sys.stderr)
    started = time.perf_counter()
    results = asyncio.run(run(args.connections, settings, messages, libraries, progress))
    elapsed = time.perf_counter() - started
    zlib_reference = {
        setting: zlib_memory(*_parse_setting(setting), messages)
        for setting in settings
        if "/" in setting
    }
    if args.json is not None:
        data = {
            "connections": args.connections,
            "messages": args.messages,
            "python": sys.version.split()[0],
            "elapsed": round(elapsed, 1),
            "results": [m.as_dict() for m in results],
            "zlib": zlib_reference,
        }
        write_output(args.json, json.dumps(data, indent=2) + "\n")
    if args.json != "-":
        what = MESSAGES_DESCRIPTION.get(
            args.messages, f"the first {SAMPLE_MESSAGES} messages of {args.messages}"
        )
        sys.stdout.write(
            f"Memory per connection, {args.connections} connections, each exchanged {what} "
            f"(Python {sys.version.split()[0]}, asyncio):\n"
        )
        sys.stdout.write(format_table(results, zlib_reference))
        sys.stdout.write(f"measured in {elapsed:.0f} s\n")
    return 1 if any(m.errors for m in results) else 0


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
