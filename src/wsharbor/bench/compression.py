"""Compression trade-offs for your messages: the deployment guide's table, measured.

:func:`benchmark` sends a corpus through the permessage-deflate codec of a real
connection (:class:`~wsharbor.protocol.deflate.PerMessageDeflate`, one for the
sending side, one for the receiving side, with or without context takeover
(``Setting.context_takeover``) as a connection negotiated it) for each
:class:`Setting` and reports, per setting:

- ``memory``: what the compressor and the decompressor of one connection hold
  once the whole corpus went through them, measured with :mod:`tracemalloc`
  (zlib allocates through Python's raw allocator, which tracemalloc traces): the
  traced memory freed when each codec object is deleted. Not a formula. Without
  context takeover it is the codec objects alone (about 0.2 KiB): the
  decompressor is freed after each message and the compressor is one shared
  by all connections (one per process and setting, not counted);
- ``size``: the compressed payload bytes of the corpus (messages under the
  threshold count at their uncompressed size), and ``size_vs_default``: the
  relative difference from zlib's defaults (window bits 15, memory level 8);
- ``compress_time`` / ``decompress_time``: seconds for the whole corpus (best of
  ``repeat`` runs, measured with tracemalloc off), and ``time_vs_default``.

Example, with your own messages::

    from wsharbor.bench.compression import benchmark, format_table
    results = benchmark([b'{"type": "hello"}', ...])
    print(format_table(results))
"""

from __future__ import annotations

import csv
import gc
import io
import json
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..protocol.deflate import PerMessageDeflate
from ..protocol.frames import Frame, Opcode
from .console import grid_table

__all__ = [
    "ALL_SETTINGS",
    "DEFAULT",
    "DISABLED",
    "GUIDE_SETTINGS",
    "Result",
    "Setting",
    "benchmark",
    "format_csv",
    "format_json",
    "format_table",
    "parse_settings",
    "plot",
]


@dataclass(frozen=True, slots=True)
class Setting:
    """One compression setting; ``window_bits=None`` means compression disabled."""

    window_bits: int | None
    memory_level: int | None
    threshold: int = 0
    #: Both sides keep their context between messages (RFC 7692 section 7.1.1);
    #: ``False``: ``server_no_context_takeover`` and ``client_no_context_takeover``.
    context_takeover: bool = True

    def __post_init__(self) -> None:
        if (self.window_bits is None) != (self.memory_level is None):
            raise ValueError("window_bits and memory_level are both set or both None")
        if self.window_bits is not None and not 9 <= self.window_bits <= 15:
            raise ValueError(f"window bits must be between 9 and 15, got {self.window_bits}")
        if self.memory_level is not None and not 1 <= self.memory_level <= 9:
            raise ValueError(f"memory level must be between 1 and 9, got {self.memory_level}")
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")

    @property
    def disabled(self) -> bool:
        return self.window_bits is None

    @property
    def label(self) -> str:
        """``15/8``, ``12/5@128`` (with a threshold), ``15/8 nct`` (no context
        takeover) or ``disabled``."""
        if self.window_bits is None:
            return "disabled"
        label = f"{self.window_bits}/{self.memory_level}"
        if self.threshold:
            label = f"{label}@{self.threshold}"
        return label if self.context_takeover else f"{label} nct"


#: zlib's defaults, the reference of every "vs. default" column.
DEFAULT = Setting(15, 8)
DISABLED = Setting(None, None)
#: The rows of the deployment guide's table (and three more small ones).
GUIDE_SETTINGS: tuple[Setting, ...] = (
    *(Setting(bits, bits - 7) for bits in range(15, 8, -1)),
    DISABLED,
)
#: Every window bits (9-15) x memory level (1-9), then disabled.
ALL_SETTINGS: tuple[Setting, ...] = (
    *(Setting(bits, level) for bits in range(15, 8, -1) for level in range(9, 0, -1)),
    DISABLED,
)


def parse_settings(text: str) -> list[Setting]:
    """Parse ``"15/8,12/5,disabled"`` (``W/M`` or ``disabled``, comma-separated)."""
    settings = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item in ("disabled", "none", "off"):
            settings.append(DISABLED)
            continue
        bits, sep, level = item.partition("/")
        if not sep or not bits.isdigit() or not level.isdigit():
            raise ValueError(f"invalid setting {item!r}: expected WINDOW_BITS/MEMORY_LEVEL")
        settings.append(Setting(int(bits), int(level)))
    if not settings:
        raise ValueError("no setting given")
    return settings


@dataclass(frozen=True, slots=True)
class Result:
    """Measurements for one setting (sizes in bytes, times in seconds)."""

    setting: Setting
    messages: int
    raw_size: int
    size: int
    #: Messages sent compressed (RSV1 set); the others were under the threshold.
    compressed_messages: int
    compressor_memory: int
    decompressor_memory: int
    compress_time: float
    decompress_time: float
    size_vs_default: float
    time_vs_default: float
    decompress_time_vs_default: float

    @property
    def memory(self) -> int:
        """Memory of one connection's codec: compressor + decompressor."""
        return self.compressor_memory + self.decompressor_memory

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        setting = data.pop("setting")
        return {
            "setting": self.setting.label,
            **setting,
            "memory": self.memory,
            **data,
        }


def _codecs(setting: Setting, level: int) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    assert setting.window_bits is not None and setting.memory_level is not None
    no_takeover = not setting.context_takeover
    sender = PerMessageDeflate(
        remote_no_context_takeover=no_takeover,
        local_no_context_takeover=no_takeover,
        remote_max_window_bits=setting.window_bits,
        local_max_window_bits=setting.window_bits,
        memory_level=setting.memory_level,
        level=level,
        threshold=setting.threshold,
    )
    receiver = PerMessageDeflate(
        remote_no_context_takeover=no_takeover,
        local_no_context_takeover=no_takeover,
        remote_max_window_bits=setting.window_bits,
        local_max_window_bits=setting.window_bits,
        memory_level=setting.memory_level,
        level=level,
        threshold=setting.threshold,
    )
    return sender, receiver


def _encode_all(sender: PerMessageDeflate, messages: Sequence[bytes]) -> list[Frame]:
    encode = sender.encode
    binary = Opcode.BINARY
    return [encode(Frame(binary, message)) for message in messages]


def _decode_all(receiver: PerMessageDeflate, frames: Sequence[Frame]) -> None:
    decode = receiver.decode
    for frame in frames:
        decode(frame)


def _measure_times(
    messages: Sequence[bytes], setting: Setting, level: int, repeat: int
) -> tuple[float, float, list[Frame]]:
    best_encode = best_decode = float("inf")
    frames: list[Frame] = []
    # One untimed run first: it warms up caches and the allocator.
    for run in range(repeat + 1):
        sender, receiver = _codecs(setting, level)
        start = time.perf_counter()
        frames = _encode_all(sender, messages)
        middle = time.perf_counter()
        _decode_all(receiver, frames)
        end = time.perf_counter()
        if run:
            best_encode = min(best_encode, middle - start)
            best_decode = min(best_decode, end - middle)
    return best_encode, best_decode, frames


def _measure_memory(messages: Sequence[bytes], setting: Setting, level: int) -> tuple[int, int]:
    """Traced bytes held by the compressor and by the decompressor after the corpus."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        sender, receiver = _codecs(setting, level)
        frames = _encode_all(sender, messages)
        _decode_all(receiver, frames)
        del frames
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        del sender
        after_sender = tracemalloc.get_traced_memory()[0]
        del receiver
        after_receiver = tracemalloc.get_traced_memory()[0]
    finally:
        if started:
            tracemalloc.stop()
    return before - after_sender, after_sender - after_receiver


def _relative(value: float, reference: float) -> float:
    return value / reference - 1.0 if reference else 0.0


def benchmark(
    messages: Iterable[bytes | str],
    settings: Sequence[Setting] = GUIDE_SETTINGS,
    *,
    level: int = 6,
    repeat: int = 3,
    progress: Callable[[int, int, Setting], None] | None = None,
) -> list[Result]:
    """Measure each setting on ``messages``; return one :class:`Result` per setting.

    ``messages`` are ``bytes`` or ``str`` (UTF-8 encoded). They go through one
    connection's codec in order, with context takeover or not as each setting
    says. The zlib implementation is the one new codecs use
    (:func:`wsharbor.protocol.deflate.set_backend`). ``level`` is the zlib
    compression level; ``repeat`` the number of timed runs (the best counts).
    ``progress(done, total, setting)`` is called before each setting and once
    at the end. Raises ValueError for an empty message list.
    """
    corpus = [m.encode() if isinstance(m, str) else bytes(m) for m in messages]
    if not corpus:
        raise ValueError("no messages to benchmark")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    raw_size = sum(map(len, corpus))
    todo = list(settings)
    # The reference row is always measured, shown or not.
    order = [DEFAULT, *(s for s in todo if s != DEFAULT)]
    total = len(order)
    measured: dict[Setting, tuple[int, int, int, int, float, float]] = {}
    for done, setting in enumerate(order):
        if progress is not None:
            progress(done, total, setting)
        if setting.disabled:
            measured[setting] = (raw_size, 0, 0, 0, 0.0, 0.0)
            continue
        encode_time, decode_time, frames = _measure_times(corpus, setting, level, repeat)
        size = sum(len(frame.data) for frame in frames)
        compressed = sum(frame.rsv1 for frame in frames)
        del frames
        compressor, decompressor = _measure_memory(corpus, setting, level)
        measured[setting] = (size, compressed, compressor, decompressor, encode_time, decode_time)
    if progress is not None:
        progress(total, total, order[-1])

    ref_size, _, _, _, ref_encode, ref_decode = measured[DEFAULT]
    results = []
    for setting in todo:
        size, compressed, compressor, decompressor, encode_time, decode_time = measured[setting]
        results.append(
            Result(
                setting=setting,
                messages=len(corpus),
                raw_size=raw_size,
                size=size,
                compressed_messages=compressed,
                compressor_memory=compressor,
                decompressor_memory=decompressor,
                compress_time=encode_time,
                decompress_time=decode_time,
                size_vs_default=_relative(size, ref_size),
                time_vs_default=_relative(encode_time, ref_encode),
                decompress_time_vs_default=_relative(decode_time, ref_decode),
            )
        )
    return results


# Output.


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size >= 10240 else f"{size / 1024:.1f} KiB"


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}%"


def format_table(results: Sequence[Result]) -> str:
    """The deployment guide's table (a reStructuredText grid table)."""
    thresholds = len({r.setting.threshold for r in results}) > 1
    takeover = any(not r.setting.context_takeover for r in results)
    header = ["Compression", "Window Bits", "Memory Level"]
    if takeover:
        header.append("Context takeover")
    if thresholds:
        header.append("Threshold")
    header += [
        "Memory usage",
        "Size vs. default",
        "Time vs. default",
        "Decompression",
    ]
    rows = []
    for r in results:
        s = r.setting
        if s.disabled:
            row = ["*disabled*", "N/A", "N/A"]
            if takeover:
                row.append("N/A")
            if thresholds:
                row.append("N/A")
            row += [_kib(0), _percent(r.size_vs_default), "N/A", "N/A"]
        else:
            name = "*default*" if s == DEFAULT else ""
            row = [name, str(s.window_bits), str(s.memory_level)]
            if takeover:
                row.append("yes" if s.context_takeover else "no")
            if thresholds:
                row.append(str(s.threshold))
            per_message = r.decompress_time / r.messages * 1e6
            row += [
                _kib(r.memory),
                _percent(r.size_vs_default),
                _percent(r.time_vs_default),
                f"{per_message:.1f} µs/msg",
            ]
        rows.append(row)
    out = grid_table(header, rows)
    if results:
        r = results[0]
        out.append(
            f"{r.messages} messages, {r.raw_size} bytes; memory usage: compressor + "
            "decompressor of one connection after the corpus (add the connection's "
            "baseline from `wsharbor bench memory`; without context takeover a "
            "connection keeps none between messages); sizes and times relative to 15/8 "
            "with context takeover."
        )
    return "\n".join(out) + "\n"


def format_json(results: Sequence[Result], **info: Any) -> str:
    return json.dumps({**info, "results": [r.as_dict() for r in results]}, indent=2) + "\n"


def format_csv(results: Sequence[Result]) -> str:
    buffer = io.StringIO()
    rows = [r.as_dict() for r in results]
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["setting"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot(results: Sequence[Result], path: str, title: str = "") -> None:
    """Chart compressed size vs memory per connection into a PNG file.

    Needs matplotlib (``pip install 'wsharbor[plot]'``); raises ImportError
    without it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    shown = [r for r in results if not r.setting.disabled]
    axes.scatter(
        [r.memory / 1024 for r in shown],
        [r.size_vs_default * 100 for r in shown],
        c=[r.time_vs_default * 100 for r in shown],
        cmap="viridis",
    )
    for r in shown:
        axes.annotate(
            r.setting.label,
            (r.memory / 1024, r.size_vs_default * 100),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=7,
        )
    axes.set_xlabel("memory per connection, compressor + decompressor (KiB)")
    axes.set_ylabel("compressed size vs. 15/8 (%)")
    axes.set_title(title or "permessage-deflate: size vs. memory (color: time vs. 15/8)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
