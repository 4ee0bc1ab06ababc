"""The permessage-deflate extension of RFC 7692: negotiation and codec.

Theory of operation
-------------------

Negotiation (RFC 7692 section 5 and 7.1) is done by two factories.
:class:`ClientPerMessageDeflateFactory` builds the offer sent in
``Sec-WebSocket-Extensions`` and checks the server's answer;
:class:`ServerPerMessageDeflateFactory` answers one offer or declines it with
:class:`~wsharbor.exceptions.NegotiationError` (the handshake module then tries
the client's next offer). Both are configured with a :class:`DeflateSettings`
written from *our* side's point of view (our compressor, our decompressor); the
factories map it to the ``server_*`` / ``client_*`` parameters of the RFC.

Both factories return a :class:`PerMessageDeflate`: the codec bound to one
connection. It transforms frames one at a time, so a fragmented message is
compressed or decompressed as it streams:

- ``encode()``: a TEXT or BINARY frame starts a message; the decision to
  compress it (RSV1 set) or not is taken there and applies to its CONT frames.
  Each frame is compressed and flushed with ``Z_SYNC_FLUSH``; the final frame
  loses the trailing ``00 00 ff ff`` (RFC 7692 section 7.2.1).
- ``decode()``: a TEXT or BINARY frame with RSV1 starts a compressed message;
  its frames are decompressed and ``00 00 ff ff`` is appended to the final one
  (section 7.2.2). Output is bounded by ``max_size`` before it is allocated, so
  a small compressed payload can't expand into a large one (a "zip bomb").

Memory
------

The compressor and decompressor are the main cost of a connection (see the
"Memory usage" section of the deployment guide). zlib allocates about
``2 ** (window_bits + 2) + 2 ** (memory_level + 9)`` bytes for a compressor
and ``2 ** window_bits`` plus about 7 KiB for a decompressor. So:

- no compressor exists until the first message that is actually compressed,
  and no decompressor until the first compressed frame arrives;
- without context takeover on our side (the server's default), a message is
  compressed by a compressor shared by every connection of the process and
  reset after each message (see ``_SHARED``), so the connection holds none;
  without context takeover on the peer's side, the decompressor is freed after
  each message. broadcast() then compresses a message once for all such
  connections (:attr:`PerMessageDeflate.shared_encoding`).

Window bits = 8
---------------

RFC 7692 allows window bits of 8 in negotiation, but zlib's deflate silently
uses 9 when asked for 8, so it may emit back-references up to 512 bytes away
that a peer with a 256-byte window can't resolve. Hence:

- we never *compress* with a window of 8: a server declines an offer with
  ``server_max_window_bits=8`` and a client fails on an answer with
  ``client_max_window_bits=8`` (both raise NegotiationError);
- we accept that the *peer* compresses with 8 and decompress with a window of
  9, which is safe: decompressing with a larger window than the compressor's
  always works.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from ..exceptions import (
    DuplicateParameter,
    InvalidParameterName,
    InvalidParameterValue,
    InvalidState,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from ..typing import ExtensionName, ExtensionParameter
from .extensions import ClientExtensionFactory, Extension, ServerExtensionFactory
from .frames import Frame, Opcode

__all__ = [
    "BACKENDS",
    "CLIENT_DEFAULTS",
    "SERVER_CONTEXT_TAKEOVER",
    "SERVER_DEFAULTS",
    "ClientPerMessageDeflateFactory",
    "DeflateSettings",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
    "backend",
    "enable_client_deflate",
    "enable_server_deflate",
    "server_extension_factories",
    "set_backend",
    "shared_backend",
]

_NAME: ExtensionName = "permessage-deflate"

# Compared with on every message sent: a global, not Opcode.CONT (on Python 3.11
# reading an enum member from its class is a descriptor call of about 90 ns).
_CONT = Opcode.CONT

# RFC 7692 section 7.2.1: the four octets a sync flush ends with, removed from
# the end of a compressed message; section 7.2.2: appended back before
# decompressing it.
_EMPTY_UNCOMPRESSED_BLOCK = b"\x00\x00\xff\xff"

# RFC 7692 section 7.1.2.1 / 7.1.2.2: "a decimal integer value without leading
# zeroes between 8 to 15, inclusive".
_WINDOW_BITS_RE = re.compile(r"(?:[89]|1[0-5])\Z")

_PARAM_NAMES = frozenset(
    {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
)


# The zlib implementation.


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int, /) -> bytes: ...


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


def _load_backends() -> dict[str, ModuleType]:
    backends: dict[str, ModuleType] = {}
    # pip install 'wsharbor[fast]': isal and zlib-ng, the zlib module's API.
    try:
        from isal import isal_zlib
    except ImportError:
        pass
    else:
        backends["isal"] = isal_zlib
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        backends["zlib-ng"] = zlib_ng
    backends["zlib"] = zlib
    return backends


#: The zlib implementations available, fastest first: ``"isal"`` and
#: ``"zlib-ng"`` (the ``isal`` and ``zlib-ng`` packages, installed by ``pip
#: install 'wsharbor[fast]'``) when they are installed, and ``"zlib"`` (the
#: standard library) always.
#:
#: isal (Intel's ISA-L) only compresses, and only the shared compressors of
#: levels 1 and 2 (the default's): its own levels 1 and 2 compress 16 KiB JSON
#: documents to 27.3% and 27.1% of their size in about 45 and 57 µs, where
#: zlib-ng's level 2 takes about 104 µs for 27.1% (and its level 1, 34.3%); the
#: corpus's small messages come out about 2% larger. It has nothing like
#: levels 3 to 9 (its best, 3, is 26.4%, where zlib-ng's 4 is 24.9%), so those
#: stay on the next implementation, as do all decompressors: isal's keeps the
#: input that ``max_length`` left unread internally instead of in
#: ``unconsumed_tail``, and the decompression limits rely on zlib's behaviour.
#:
#: Measured with our settings (docs/memory.md, "isal and zlib-ng"): on 16 KiB JSON
#: documents zlib-ng compresses and decompresses about 1.4-1.5 times as fast
#: as zlib at the same level, for output within about 1% of zlib's; on
#: 200-byte messages they are within noise. Both produce raw DEFLATE that the other (and every peer)
#: decompresses, and both support everything the codec needs (window bits
#: 9-15, sync and full flushes, ``max_length``, ``unused_data``, ``zdict``).
#: But zlib-ng allocates much more per object whatever the settings (a
#: compressor 137-342 KiB against 9-262 KiB, a decompressor 41 KiB against
#: 8-39 KiB), so it is only used where nothing is kept per connection: the
#: shared compressors of connections without context takeover, and the
#: decompressor of a compressed message of 1 KiB or more that arrives in one
#: frame without context takeover (created and freed in one call). A context kept between
#: messages, or across the frames of a fragmented message, uses the standard
#: library's zlib.
_MODULES = _load_backends()
BACKENDS: tuple[str, ...] = tuple(_MODULES)
#: The zlib levels isal compresses at (its levels of the same numbers).
_ISAL_LEVELS = frozenset({1, 2})


#: For each implementation chosen, the one of everything it doesn't do: isal's
#: is the next one (the shared compressors of other levels, the decompressors);
#: the others do everything themselves.
_REST: dict[ModuleType, ModuleType] = {
    module: _MODULES[next(other for other in BACKENDS if other != "isal")]
    if name == "isal"
    else module
    for name, module in _MODULES.items()
}


# The implementation new codecs use: WSHARBOR_DEFLATE_BACKEND if it names an
# installed one, else the fastest.
_zlib: ModuleType = _MODULES.get(
    os.environ.get("WSHARBOR_DEFLATE_BACKEND", ""), _MODULES[BACKENDS[0]]
)


def backend() -> str:
    """The name of the zlib implementation that new codecs use (see :data:`BACKENDS`)."""
    return next(name for name, module in _MODULES.items() if module is _zlib)


def _shared_module(level: int) -> ModuleType:
    """The implementation of new codecs' shared compressors at ``level``: the
    chosen one, but isal only at its levels (see :data:`BACKENDS`)."""
    return _zlib if level in _ISAL_LEVELS else _REST[_zlib]


def shared_backend(level: int) -> str:
    """The name of the implementation that new codecs' shared compressors use at
    ``level`` (isal only compresses at levels 1 and 2, see :data:`BACKENDS`)."""
    module = _shared_module(level)
    return next(name for name, candidate in _MODULES.items() if candidate is module)


def set_backend(name: str | None = None) -> str:
    """Choose the zlib implementation of codecs created from now on; return the previous one.

    ``name`` is one of :data:`BACKENDS`, or ``None`` for the default: the
    environment variable ``WSHARBOR_DEFLATE_BACKEND`` if set, else the fastest
    installed. Raises ValueError for an implementation that isn't installed.
    Codecs already created keep theirs (a context taken over must not change
    implementation in the middle of a connection).
    """
    global _zlib
    previous = backend()
    if name is None:
        name = os.environ.get("WSHARBOR_DEFLATE_BACKEND") or BACKENDS[0]
    if name not in _MODULES:
        raise ValueError(
            f"unknown or missing deflate backend: {name!r} (installed: {', '.join(BACKENDS)})"
        )
    _zlib = _MODULES[name]
    return previous


# Compressors shared by the connections that don't keep a context between
# messages (RFC 7692 section 7.1.1: "server_no_context_takeover" on a server,
# "client_no_context_takeover" on a client): uWebSockets' "shared compressor".
# Such a message may refer to nothing sent before it, so any compressor that
# has just been reset compresses it exactly as a new one would, and the
# connection holds no zlib state between messages. A message is compressed
# with a compressor taken from the pool for its settings and ended with
# Z_FULL_FLUSH, which writes the same bytes as Z_SYNC_FLUSH (isal: other
# valid bytes, also ending with 00 00 ff ff) and then resets the compressor
# (zlib empties its hash table and restarts at the beginning of its window:
# what follows can't refer to what came before); the compressor goes back to
# the pool. Taking and giving back are single list
# operations, so a pool is safe to share between threads (the sync API's).
# A fragmented message keeps its compressor until its last frame.
_SHARED: dict[tuple[ModuleType, int, int, int, int], list[_Compressor]] = {}
# The keys of _SHARED, one tuple per setting, shared by all the codecs that
# have it (a codec keeps a reference, not a tuple of its own).
_KEYS: dict[tuple[ModuleType, int, int, int, int], tuple[ModuleType, int, int, int, int]] = {}
#: Compressors kept per setting; more only exist while that many fragmented
#: messages are being sent at once.
_SHARED_KEPT = 4
#: Compressed size from which a one-frame message without context takeover is
#: decompressed by the fast implementation: creating zlib-ng's decompressor
#: costs 8 µs against zlib's 4, which its faster inflating repays from about
#: 1 KiB of compressed JSON (4-5 KiB decompressed).
_FAST_DECODE = 1024


def _take_compressor(key: tuple[ModuleType, int, int, int, int]) -> _Compressor:
    try:
        return _SHARED[key].pop()
    except (KeyError, IndexError):
        module, level, window_bits, memory_level, _ = key
        compressor: _Compressor = module.compressobj(
            level, module.DEFLATED, -window_bits, memory_level
        )
        return compressor


def _give_back(key: tuple[ModuleType, int, int, int, int], compressor: _Compressor) -> None:
    pool = _SHARED.setdefault(key, [])
    if len(pool) < _SHARED_KEPT:
        pool.append(compressor)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if high is None:
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    elif not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


# Settings.


@dataclass(frozen=True, slots=True)
class DeflateSettings:
    """Compression settings, from our side's point of view.

    Pass one as ``compression=`` to ``serve()`` or ``connect()``; start from
    :data:`SERVER_DEFAULTS` or :data:`CLIENT_DEFAULTS` with
    :func:`dataclasses.replace` to change one setting.

    :param window_bits: base-2 logarithm of our compressor's LZ77 window, 9-15.
        A server announces it as ``server_max_window_bits``, a client as
        ``client_max_window_bits`` (RFC 7692 section 7.1.2). The peer may ask
        for less, which we accept (except 8, see the module docstring).
    :param memory_level: our compressor's zlib ``memLevel``, 1-9.
    :param context_takeover: our compressor keeps its LZ77 window between
        messages. ``False`` announces ``server_no_context_takeover`` (server) or
        ``client_no_context_takeover`` (client) for our side (RFC 7692 section
        7.1.1) and frees the compressor after each message.
    :param peer_window_bits: the largest window we ask the peer to compress
        with, 9-15, or ``None`` not to restrict it. It bounds the memory of our
        decompressor (``2 ** peer_window_bits`` bytes). A client that doesn't
        offer ``client_max_window_bits`` can't be restricted: a server accepts
        its offer anyway and decompresses with a 32 KiB window.
    :param peer_context_takeover: ``False`` asks the peer not to keep its
        context between messages, so that our decompressor is freed after each
        message.
    :param threshold: messages shorter than this many bytes, sent in a single
        frame, are sent uncompressed (RSV1 clear): RFC 7692 section 6 lets an
        endpoint send any message uncompressed. Deflating a few bytes saves
        none, and a connection that only exchanges such messages (``"ping"``,
        ``"ok"``) never allocates a compressor, nor its peer a decompressor.
        With context takeover, messages from about 16 bytes on already shrink,
        so keep it low; without context takeover, raise it (64-128).
    :param level: zlib compression level, -1 (``Z_DEFAULT_COMPRESSION``) or 0-9.
    """

    window_bits: int
    memory_level: int
    context_takeover: bool = True
    peer_window_bits: int | None = None
    peer_context_takeover: bool = True
    threshold: int = 16
    level: int = 6

    def __post_init__(self) -> None:
        _check_int("window_bits", self.window_bits, 9, 15)
        _check_int("memory_level", self.memory_level, 1, 9)
        _check_bool("context_takeover", self.context_takeover)
        if self.peer_window_bits is not None:
            _check_int("peer_window_bits", self.peer_window_bits, 9, 15)
        _check_bool("peer_context_takeover", self.peer_context_takeover)
        _check_int("threshold", self.threshold, 0, None)
        _check_int("level", self.level, -1, 9)


#: Server defaults: no zlib state kept per connection between messages.
#:
#: The server answers ``server_no_context_takeover`` and
#: ``client_no_context_takeover`` (RFC 7692 section 7.1.1: a server may
#: include both even when the client didn't ask), so neither side refers to an
#: earlier message: our messages are compressed by a compressor shared by all
#: the connections of the process (reset after each message, see _SHARED) and
#: a received message is decompressed by a decompressor freed right after it.
#: An idle connection that has exchanged compressed messages costs what an
#: uncompressed one does, and broadcast() compresses a message once for all of
#: them. Measured (docs/memory.md, "Choosing the defaults"): an idle connection
#: after one compressed message each way holds 0.6 KiB more than without
#: compression (6.9 KiB traced: 0.11x websockets' 64.4 KiB), against 42 KiB
#: more with context takeover at window bits 12; the price is the ratio on
#: small messages, which can't refer to earlier ones: the sample corpus (JSON
#: messages of 75-366 bytes) compresses to 81% of its size instead of 30%
#: (window bits 12 with context takeover) or 24% (15); 16 KiB JSON documents
#: to 27% (24% at level 6) instead of 21% (or 17%).
#: To keep the context (smaller messages, 40 KiB per connection), use
#: :data:`SERVER_CONTEXT_TAKEOVER`.
#:
#: Window bits 15 and memory level 8 (zlib's defaults) for our compressor:
#: being shared, its 268 KiB exist once per process, and the larger window
#: compresses large messages better (16 KiB documents: -6% against 12).
#: ``peer_window_bits=12`` still bounds what a client's compressed fragmented
#: message can make us hold while it arrives (a 12 KiB decompressor).
#: Threshold 64: compressed on its own, a JSON message shrinks only from about
#: 64 bytes (48 bytes: +0.4%, 32: +4%, 16: +12%; 64: -4%, 128: -16%), so
#: shorter ones are sent as they are. Level 2: compressed on their own, small
#: messages come out the same size at every level from 2 to 6 (the corpus:
#: 80.8% with zlib-ng), and 16 KiB documents 9% larger at level 2 than at 4
#: (27.1% against 24.9%; 23.8% at 6) for 30% less CPU (zlib-ng: 104 µs a
#: document against 148; 190 at 6), which is most of a server's CPU for a
#: large compressed message. aiohttp's default is level 1, websockets' 6.
#: Level 1 is zlib-ng's quick mode: 34% on documents, 92% on the corpus. With
#: isal installed (see BACKENDS), level 2 is isal's: documents 27.1% in about
#: 45 µs, the corpus 82.7%.
SERVER_DEFAULTS = DeflateSettings(
    window_bits=15,
    memory_level=8,
    context_takeover=False,
    peer_window_bits=12,
    peer_context_takeover=False,
    threshold=64,
    level=2,
)

#: Server settings that keep the context between messages (the defaults until
#: 0.1: the best ratio on small messages, 40 KiB per connection that has
#: compressed a message each way).
#:
#: Chosen with ``wsharbor bench compression --sample`` (docs/memory.md): on
#: small JSON messages, window bits decide the compressed size (15: +0%, 14:
#: +4.7%, 13: +12.5%, 12: +23.3%) and memory level barely changes size or
#: time from 8 down to 4, so window bits 12 and memory level 4: 41 KiB for a
#: connection's compressor and decompressor instead of 301 KiB with zlib's
#: defaults, and 49 KiB with websockets' 12/5. Clients are asked to compress
#: with a 4 KiB window (``peer_window_bits=12``), which bounds our
#: decompressor's memory. Threshold 16: with context takeover a 100-byte JSON
#: message shrinks to ~25 bytes, and on a corpus of 4-40 byte messages 8-16
#: is smallest (below it deflate adds bytes).
SERVER_CONTEXT_TAKEOVER = DeflateSettings(
    window_bits=12,
    memory_level=4,
    peer_window_bits=12,
    threshold=16,
)

#: Client defaults: a client holds few connections, so it keeps zlib's full
#: 32 KiB window for the best compression ratio and offers
#: ``client_max_window_bits`` without a value, so that a server may lower it
#: (ours asks for 12 when it keeps the context, and by default tells the
#: client to keep none, see :data:`SERVER_DEFAULTS`). Memory level 5
#: compresses the sample corpus as well as 8 (+0.3%) and as fast, for 112 KiB
#: less; 4 would save 8 KiB more but is about 6% slower with a 32 KiB window.
#: It doesn't restrict the server's window: some servers decline offers with
#: ``server_max_window_bits``.
CLIENT_DEFAULTS = DeflateSettings(
    window_bits=15,
    memory_level=5,
    peer_window_bits=None,
    threshold=16,
)


# The codec.


class PerMessageDeflate:
    """The permessage-deflate codec of one connection (RFC 7692 section 6 and 7.2).

    "Local" is our side, "remote" the peer: on a server, ``local_*`` are the
    negotiated ``server_*`` parameters; on a client, the ``client_*`` ones.

    :param remote_no_context_takeover: the peer resets its context after each
        message, so our decompressor is freed after each message.
    :param local_no_context_takeover: we reset our context after each message;
        our compressor is freed after each message.
    :param remote_max_window_bits: the peer's window, 8-15 (we decompress with
        at least 9).
    :param local_max_window_bits: our compressor's window, 9-15.
    :param memory_level: our compressor's zlib ``memLevel``.
    :param level: our compressor's zlib level.
    :param threshold: messages shorter than this, sent in one frame, are sent
        uncompressed.
    """

    __slots__ = (
        "_decoder",
        "_decoding",
        "_encoder",
        "_encoding",
        "_holding",
        "_in_message",
        "_shared",
        "_zlib",
        "level",
        "local_max_window_bits",
        "local_no_context_takeover",
        "memory_level",
        "remote_max_window_bits",
        "remote_no_context_takeover",
        "threshold",
    )

    name: ExtensionName = _NAME

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        *,
        memory_level: int = 8,
        level: int = 6,
        threshold: int = 0,
    ) -> None:
        _check_bool("remote_no_context_takeover", remote_no_context_takeover)
        _check_bool("local_no_context_takeover", local_no_context_takeover)
        _check_int("remote_max_window_bits", remote_max_window_bits, 8, 15)
        # zlib's deflate can't compress with a window of 8 (module docstring).
        _check_int("local_max_window_bits", local_max_window_bits, 9, 15)
        _check_int("memory_level", memory_level, 1, 9)
        _check_int("level", level, -1, 9)
        _check_int("threshold", threshold, 0, None)
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_max_window_bits = remote_max_window_bits
        self.local_max_window_bits = local_max_window_bits
        self.memory_level = memory_level
        self.level = level
        self.threshold = threshold
        # Created on first use, freed after each message with no context
        # takeover: see "Memory" in the module docstring. Without context
        # takeover on our side, _encoder is a shared compressor, held only
        # while a fragmented message is being sent.
        self._encoder: _Compressor | None = None
        self._decoder: _Decompressor | None = None
        # Between hold() and release(): a decompressor is kept across messages
        # without context takeover.
        self._holding = False
        # The implementation of the decompressors of one-frame messages without
        # context takeover, and of the shared compressors but at isal's levels
        # (see BACKENDS).
        self._zlib = _REST[_zlib]
        # Without context takeover on our side: the key of the shared
        # compressors (and of shared_encoding), the same tuple for every codec.
        self._shared: tuple[ModuleType, int, int, int, int] | None = None
        if local_no_context_takeover:
            key = (_shared_module(level), level, local_max_window_bits, memory_level, threshold)
            self._shared = _KEYS.setdefault(key, key)
        # A compressed message is being received / sent.
        self._decoding = False
        self._encoding = False
        # A message (compressed or not) is being sent.
        self._in_message = False

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"memory_level={self.memory_level}, level={self.level}, "
            f"threshold={self.threshold})"
        )

    @property
    def shared_encoding(self) -> tuple[ModuleType, int, int, int, int] | None:
        """Equal for codecs that compress a whole message to the same bytes, or None.

        Without context takeover on our side a message refers to nothing sent
        before, so its compressed bytes depend only on these settings (and the
        threshold decides the same way): :func:`wsharbor.broadcast` compresses
        a message once for all the connections with the same key. None with
        context takeover, or in the middle of a fragmented message.
        """
        return None if self._in_message else self._shared

    # Receiving.

    def _new_decoder(self, zdict: bytes = b"", transient: bool = False) -> _Decompressor:
        # A window of 8 is decompressed with 9: a larger window is always safe.
        wbits = -max(9, self.remote_max_window_bits)
        decoder: _Decompressor
        if zdict:
            decoder = zlib.decompressobj(wbits, zdict=zdict)
        elif transient:
            # Freed before decode() returns: the fast implementation's larger
            # allocation is never held by an idle connection.
            decoder = self._zlib.decompressobj(wbits)
        else:
            decoder = zlib.decompressobj(wbits)
        return decoder

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Decompress a frame received (RFC 7692 section 6.2 and 7.2.2).

        ``max_size`` bounds the decompressed payload of this frame (``None``:
        no limit); more raises :class:`~wsharbor.exceptions.PayloadTooBig`
        without allocating it. RSV1 on a control or continuation frame, a
        corrupt DEFLATE stream or a TEXT/BINARY frame in the middle of a
        compressed message raise :class:`~wsharbor.exceptions.ProtocolError`.
        """
        opcode = frame.opcode
        if opcode is Opcode.CONT:
            # RFC 7692 section 6: "An endpoint MUST NOT set the 'Per-Message
            # Compressed' bit of control frames and non-first fragments of a
            # data message. An endpoint receiving such a frame MUST _Fail the
            # WebSocket Connection_."
            if frame.rsv1:
                raise ProtocolError("RSV1 set on continuation frame (RFC 7692 section 6)")
            if not self._decoding:
                return frame
        elif opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._decoding:
                raise ProtocolError(
                    "expected a continuation frame; a message is in progress (RFC 6455 section 5.4)"
                )
            # RFC 7692 section 6.2: a message whose first frame has RSV1 clear
            # is not compressed.
            if not frame.rsv1:
                return frame
            self._decoding = True
        else:
            if frame.rsv1:
                raise ProtocolError("RSV1 set on control frame (RFC 7692 section 6)")
            return frame

        data = frame.data
        if frame.fin:
            # RFC 7692 section 7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff
            # to the tail end of the payload of the message."
            data += _EMPTY_UNCOMPRESSED_BLOCK
        try:
            data = self._decompress(data, frame.fin, max_size)
        finally:
            if frame.fin:
                self._decoding = False
        if frame.fin and self.remote_no_context_takeover and not self._holding:
            # RFC 7692 section 7.2.2: with server_no_context_takeover (on a
            # client) the peer starts each message with an empty window; free
            # the decompressor rather than keep it between messages.
            self._decoder = None
        return Frame(opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    def decode_message(self, data: bytes, *, max_size: int | None = None) -> bytes:
        """Decompress the payload of a whole message received in one frame with
        RSV1 set: what :meth:`decode` does for such a frame, without building
        frames (the protocol's fast path). The caller checked that no message is
        in progress; ``max_size`` and the errors are :meth:`decode`'s.
        """
        data = self._decompress(data + _EMPTY_UNCOMPRESSED_BLOCK, True, max_size)
        if self.remote_no_context_takeover and not self._holding:
            self._decoder = None
        return data

    def hold(self) -> None:
        """Keep the decompressor across messages until :meth:`release`.

        The protocol holds it while it parses one read's worth of input: the
        messages of a burst are decompressed by one decompressor instead of a
        new one each (creating one is about 4 µs, a tenth of a small compressed
        message's cost). Without context takeover a message may refer to
        nothing before it, so a decompressor that has just finished a message
        decompresses the next exactly as a new one would; it is freed by
        :meth:`release`, so an idle connection still holds none. (A peer that
        breaks the negotiation and refers to an earlier message of the same
        read gets that decoded instead of refused: its own bytes, nothing of
        another connection's.)
        """
        self._holding = True

    def release(self) -> None:
        """End :meth:`hold`: free a decompressor kept only for it."""
        self._holding = False
        if self.remote_no_context_takeover and not self._decoding:
            self._decoder = None

    def _decompress(self, data: bytes, fin: bool, max_size: int | None) -> bytes:
        decoder = self._decoder
        if decoder is None:
            # A whole message in one frame, with no context to keep after it,
            # large enough for the fast implementation to pay (see BACKENDS).
            transient = fin and self.remote_no_context_takeover and len(data) >= _FAST_DECODE
            decoder = self._decoder = self._new_decoder(transient=transient)
        chunks: list[bytes] = []
        size = 0
        restarted = False
        while True:
            # Ask zlib for at most max_size + 1 bytes: a small compressed
            # payload can never make us allocate more than that.
            max_length = 0 if max_size is None else max_size + 1 - size
            try:
                chunk = decoder.decompress(data, max_length)
            except (zlib.error, self._zlib.error) as exc:
                raise ProtocolError(
                    f"invalid compressed data (RFC 7692 section 7.2.2): {exc}"
                ) from exc
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise PayloadTooBig(f"decompressed frame exceeds limit of {max_size} bytes")
            chunks.append(chunk)
            if not decoder.eof:
                break
            # RFC 7692 section 7.2.3.4: the peer ended a DEFLATE stream with a
            # block with BFINAL set, as a way to flush. zlib ignores what
            # follows the end of a stream, so start a new one, primed with the
            # last bytes of output: the LZ77 window that a context-taking-over
            # peer may refer to (a reference beyond them fails cleanly rather
            # than decoding wrong). Once per frame: a frame made of many tiny
            # final blocks would otherwise cost a new zlib object per block.
            if restarted:
                raise ProtocolError(
                    "several DEFLATE blocks with BFINAL set in one frame (RFC 7692 section 7.2.3.4)"
                )
            restarted = True
            data = decoder.unused_data
            window = 1 << max(9, self.remote_max_window_bits)
            history = b"".join(chunks)[-window:]
            decoder = self._decoder = self._new_decoder(history)
            if not data or (fin and data == _EMPTY_UNCOMPRESSED_BLOCK):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # Sending.

    def encode(self, frame: Frame) -> Frame:
        """Compress a frame to send (RFC 7692 section 6.1 and 7.2.1).

        Control frames are unchanged. A message sent in a single frame shorter
        than ``threshold`` is sent uncompressed; any other message is
        compressed, with RSV1 set on its first frame. Raises
        :class:`~wsharbor.exceptions.InvalidState` for a continuation frame
        without a message in progress or a new message before the previous one
        ended.
        """
        opcode = frame.opcode
        if opcode is not Opcode.CONT and opcode is not Opcode.TEXT and opcode is not Opcode.BINARY:
            return frame
        data, rsv1 = self.encode_data(opcode, frame.data, frame.fin)
        if data is frame.data:
            return frame  # not compressed
        return Frame(opcode, data, frame.fin, rsv1, frame.rsv2, frame.rsv3)

    def encode_data(self, opcode: Opcode, data: bytes, fin: bool) -> tuple[bytes, bool]:
        """The payload to send for a data frame, and its RSV1 bit: what
        :meth:`encode` does for TEXT, BINARY and CONT frames, without building
        frames (the protocol's send path). ``data`` itself when it isn't
        compressed; the errors are :meth:`encode`'s."""
        if opcode is _CONT:
            if not self._in_message:
                raise InvalidState("continuation frame sent without a message in progress")
            compress = self._encoding
        else:
            if self._in_message:
                raise InvalidState("new message sent before the previous one ended")
            # RFC 7692 section 6: an endpoint may send a message uncompressed.
            compress = not (fin and len(data) < self.threshold)
            self._encoding = compress
        self._in_message = not fin
        if not compress:
            return data, False
        # RFC 7692 section 6.1: RSV1 is set on the first frame only.
        return self._compress(data, fin), opcode is not _CONT

    def _compress(self, data: bytes, fin: bool) -> bytes:
        encoder = self._encoder
        key = self._shared
        if key is not None:
            # A compressor from the shared pool, reset by Z_FULL_FLUSH at the
            # end of the message (see _SHARED).
            fast = key[0]
            if encoder is None:
                encoder = _take_compressor(key)
            if fin:
                data = encoder.compress(data) + encoder.flush(fast.Z_FULL_FLUSH)
                self._encoder = None
                _give_back(key, encoder)
            else:
                data = encoder.compress(data) + encoder.flush(fast.Z_SYNC_FLUSH)
                self._encoder = encoder
        else:
            # A context kept between messages: the standard library's zlib,
            # which allocates far less per connection (see BACKENDS).
            if encoder is None:
                encoder = self._encoder = zlib.compressobj(
                    self.level,
                    zlib.DEFLATED,
                    -self.local_max_window_bits,
                    self.memory_level,
                )
            data = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            # RFC 7692 section 7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff
            # 0xff) from the tail end." A sync (or full) flush always ends with
            # them and always writes the 3-bit header of an empty stored block
            # before them, so at least one octet remains (section 7.2.3.6).
            data = data[:-4]
        return data


# Negotiation.


@dataclass(frozen=True, slots=True)
class _Params:
    """Parsed permessage-deflate parameters (RFC 7692 section 7.1)."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int | None
    #: ``client_max_window_bits`` is present (with or without a value).
    client_max_window_bits_present: bool
    client_max_window_bits: int | None


def _parse_params(params: Sequence[ExtensionParameter], *, offer: bool) -> _Params:
    """Parse the parameters of an offer or an answer (RFC 7692 section 7.1).

    Raises NegotiationError for an unknown parameter, a duplicate one or an
    invalid value. ``client_max_window_bits`` may come without a value in an
    offer only (section 7.1.2.2).
    """
    seen: set[str] = set()
    bits: dict[str, int] = {}
    for name, value in params:
        if name not in _PARAM_NAMES:
            raise InvalidParameterName(f"unknown {_NAME} parameter: {name}")
        if name in seen:
            raise DuplicateParameter(f"duplicate {_NAME} parameter: {name}")
        seen.add(name)
        if name.endswith("_no_context_takeover"):
            # RFC 7692 section 7.1.1: "This parameter has no value."
            if value is not None:
                raise InvalidParameterValue(
                    f"invalid {_NAME} parameter: {name}={value} (no value allowed)"
                )
        elif value is None:
            if not (offer and name == "client_max_window_bits"):
                raise InvalidParameterValue(f"invalid {_NAME} parameter: {name} requires a value")
        elif _WINDOW_BITS_RE.match(value):
            bits[name] = int(value)
        else:
            raise InvalidParameterValue(
                f"invalid {_NAME} parameter: {name}={value} (must be an integer from 8 to 15)"
            )
    return _Params(
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_no_context_takeover="client_no_context_takeover" in seen,
        server_max_window_bits=bits.get("server_max_window_bits"),
        client_max_window_bits_present="client_max_window_bits" in seen,
        client_max_window_bits=bits.get("client_max_window_bits"),
    )


def _check_not_accepted(accepted_extensions: Sequence[Extension]) -> None:
    if any(extension.name == _NAME for extension in accepted_extensions):
        raise NegotiationError(f"{_NAME} negotiated twice")


class ClientPerMessageDeflateFactory:
    """Client side of permessage-deflate negotiation (RFC 7692 section 5 and 7.1).

    The offer holds ``client_max_window_bits`` (with our ``window_bits`` as a
    hint when it's below 15, RFC 7692 section 7.1.2.2), ``server_max_window_bits``
    when ``peer_window_bits`` is set, and the ``*_no_context_takeover``
    parameters for the context takeover settings that are off.
    """

    __slots__ = ("settings",)

    name: ExtensionName = _NAME

    def __init__(self, settings: DeflateSettings = CLIENT_DEFAULTS) -> None:
        if not isinstance(settings, DeflateSettings):
            raise TypeError(f"settings must be a DeflateSettings, got {type(settings).__name__}")
        self.settings = settings

    def __repr__(self) -> str:
        return f"ClientPerMessageDeflateFactory({self.settings!r})"

    def get_request_params(self) -> list[ExtensionParameter]:
        """Parameters of the offer sent in the request."""
        settings = self.settings
        params: list[ExtensionParameter] = []
        if not settings.peer_context_takeover:
            params.append(("server_no_context_takeover", None))
        if not settings.context_takeover:
            params.append(("client_no_context_takeover", None))
        if settings.peer_window_bits is not None:
            params.append(("server_max_window_bits", str(settings.peer_window_bits)))
        # RFC 7692 section 7.1.2.2: we support any client_max_window_bits the
        # server answers (except 8); a value is a hint of the window we use.
        if settings.window_bits < 15:
            params.append(("client_max_window_bits", str(settings.window_bits)))
        else:
            params.append(("client_max_window_bits", None))
        return params

    def process_response_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> PerMessageDeflate:
        """Check the server's answer and build the codec.

        Raises NegotiationError for an answer this offer doesn't allow (RFC
        7692 section 5: the client must then fail the WebSocket connection).
        """
        _check_not_accepted(accepted_extensions)
        answer = _parse_params(params, offer=False)
        settings = self.settings

        # RFC 7692 section 7.1.1.1: the server accepts server_no_context_takeover
        # by including it; it may include it even if we didn't ask.
        if not settings.peer_context_takeover and not answer.server_no_context_takeover:
            raise NegotiationError(f"{_NAME}: server didn't accept server_no_context_takeover")

        # RFC 7692 section 7.1.2.1: the server accepts server_max_window_bits by
        # answering the same or a smaller value; it may include it unasked.
        remote_bits = answer.server_max_window_bits
        if settings.peer_window_bits is not None:
            if remote_bits is None:
                raise NegotiationError(f"{_NAME}: server didn't accept server_max_window_bits")
            if remote_bits > settings.peer_window_bits:
                raise NegotiationError(
                    f"{_NAME}: server_max_window_bits={remote_bits} is larger than "
                    f"the {settings.peer_window_bits} asked for"
                )

        # RFC 7692 section 7.1.2.2: our offer always has client_max_window_bits,
        # so the server may answer it, with a value no larger than our hint.
        local_bits = answer.client_max_window_bits
        if local_bits is None:
            local_bits = settings.window_bits
        elif local_bits > settings.window_bits:
            raise NegotiationError(
                f"{_NAME}: client_max_window_bits={local_bits} is larger than "
                f"the {settings.window_bits} offered"
            )
        elif local_bits == 8:
            raise NegotiationError(
                f"{_NAME}: client_max_window_bits=8 isn't supported (zlib compresses with 9)"
            )

        return PerMessageDeflate(
            remote_no_context_takeover=answer.server_no_context_takeover,
            # RFC 7692 section 7.1.1.2: the server may forbid our context
            # takeover; we may always give it up ourselves.
            local_no_context_takeover=(
                answer.client_no_context_takeover or not settings.context_takeover
            ),
            remote_max_window_bits=15 if remote_bits is None else remote_bits,
            local_max_window_bits=local_bits,
            memory_level=settings.memory_level,
            level=settings.level,
            threshold=settings.threshold,
        )


class ServerPerMessageDeflateFactory:
    """Server side of permessage-deflate negotiation (RFC 7692 section 5 and 7.1).

    Each call of :meth:`process_request_params` answers one offer or declines
    it with NegotiationError; the handshake module tries the offers in order.
    """

    __slots__ = ("settings",)

    name: ExtensionName = _NAME

    def __init__(self, settings: DeflateSettings = SERVER_DEFAULTS) -> None:
        if not isinstance(settings, DeflateSettings):
            raise TypeError(f"settings must be a DeflateSettings, got {type(settings).__name__}")
        self.settings = settings

    def __repr__(self) -> str:
        return f"ServerPerMessageDeflateFactory({self.settings!r})"

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        """Answer one offer, or decline it with NegotiationError.

        RFC 7692 section 5.1: a server declines an offer with an unknown
        parameter, an invalid value, a duplicate parameter, or a configuration
        it doesn't support (``server_max_window_bits=8``).
        """
        _check_not_accepted(accepted_extensions)
        offer = _parse_params(params, offer=True)
        settings = self.settings
        answer: list[ExtensionParameter] = []

        # RFC 7692 section 7.1.1.1: accept server_no_context_takeover by
        # including it; we may include it unasked.
        local_no_context_takeover = (
            offer.server_no_context_takeover or not settings.context_takeover
        )
        if local_no_context_takeover:
            answer.append(("server_no_context_takeover", None))

        # RFC 7692 section 7.1.1.2: we may include client_no_context_takeover;
        # echoing the client's hint lets us free our decompressor per message.
        remote_no_context_takeover = (
            offer.client_no_context_takeover or not settings.peer_context_takeover
        )
        if remote_no_context_takeover:
            answer.append(("client_no_context_takeover", None))

        # RFC 7692 section 7.1.2.1: answer the same or a smaller value than the
        # offer; we may include it unasked. zlib can't compress with 8.
        local_bits = settings.window_bits
        if offer.server_max_window_bits is not None:
            if offer.server_max_window_bits == 8:
                raise NegotiationError(
                    f"{_NAME}: server_max_window_bits=8 isn't supported (zlib compresses with 9)"
                )
            local_bits = min(local_bits, offer.server_max_window_bits)
        if offer.server_max_window_bits is not None or local_bits < 15:
            answer.append(("server_max_window_bits", str(local_bits)))

        # RFC 7692 section 7.1.2.2: without client_max_window_bits in the offer
        # the answer MUST NOT include it; with a value, the answer may include
        # one no larger.
        remote_bits = 15
        if offer.client_max_window_bits_present:
            wanted = settings.peer_window_bits
            hint = offer.client_max_window_bits
            if hint is not None:
                wanted = hint if wanted is None else min(wanted, hint)
            if wanted is not None:
                remote_bits = wanted
                answer.append(("client_max_window_bits", str(wanted)))

        extension = PerMessageDeflate(
            remote_no_context_takeover=remote_no_context_takeover,
            local_no_context_takeover=local_no_context_takeover,
            remote_max_window_bits=remote_bits,
            local_max_window_bits=local_bits,
            memory_level=settings.memory_level,
            level=settings.level,
            threshold=settings.threshold,
        )
        return answer, extension


def _settings_for(
    compression: DeflateSettings | str | None, defaults: DeflateSettings
) -> DeflateSettings | None:
    if compression is None:
        return None
    if isinstance(compression, DeflateSettings):
        return compression
    if isinstance(compression, str):
        if compression == "deflate":
            return defaults
        raise ValueError(
            f"unsupported compression: {compression!r} "
            "(expected 'deflate', None or a DeflateSettings)"
        )
    raise TypeError(
        "compression must be 'deflate', None or a DeflateSettings, "
        f"got {type(compression).__name__}"
    )


def enable_client_deflate(
    compression: DeflateSettings | str | None,
) -> list[ClientExtensionFactory]:
    """Map the ``compression`` argument of ``connect()`` to extension factories.

    ``"deflate"`` uses :data:`CLIENT_DEFAULTS`, a :class:`DeflateSettings` uses
    those settings, ``None`` disables compression.
    """
    settings = _settings_for(compression, CLIENT_DEFAULTS)
    return [] if settings is None else [ClientPerMessageDeflateFactory(settings)]


def enable_server_deflate(
    compression: DeflateSettings | str | None,
) -> list[ServerExtensionFactory]:
    """Map the ``compression`` argument of ``serve()`` to extension factories.

    ``"deflate"`` uses :data:`SERVER_DEFAULTS`, a :class:`DeflateSettings` uses
    those settings, ``None`` disables compression.
    """
    settings = _settings_for(compression, SERVER_DEFAULTS)
    return [] if settings is None else [ServerPerMessageDeflateFactory(settings)]


def server_extension_factories(
    extensions: Sequence[ServerExtensionFactory] | None,
    compression: DeflateSettings | str | None,
) -> list[ServerExtensionFactory]:
    """What a server negotiates: ``extensions`` (custom factories, in order), then
    permessage-deflate for ``compression`` unless ``extensions`` has a factory
    of that name already. ``compression`` is checked either way."""
    factories = list(extensions or ())
    deflate = enable_server_deflate(compression)
    if not any(factory.name == "permessage-deflate" for factory in factories):
        factories += deflate
    return factories
