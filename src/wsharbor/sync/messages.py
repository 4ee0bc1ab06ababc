"""The queue between the thread reading a connection and the threads receiving messages.

Theory of operation
-------------------

The connection's reader thread puts each data frame it receives here, as a
fragment: ``str`` for a text message (the sans-I/O protocol already checked and
decoded the UTF-8, RFC 6455 section 8.1), ``bytes`` for a binary message, with a
flag on the last fragment of a message. :meth:`Assembler.get` waits for a whole
message and joins its fragments; :meth:`Assembler.get_iter` yields them as they
come (``recv_streaming()``).

Flow control counts fragments, that is frames, as websockets does, and their
bytes, as wsharbor's asyncio layer does: above ``high`` queued fragments or
``max_bytes`` queued bytes the reader thread stops reading from the socket
(:meth:`Assembler.wait_for_room` blocks it), so TCP flow control pushes back on
the peer; at or below ``low`` fragments and a quarter of ``max_bytes`` it reads
again. Once the connection is closing, reading
must go on so that the peer's close frame arrives: then the assembler never
pauses, and drops whole messages that arrive while it is full (the application
asked to close, as in the asyncio layer).

Only one thread may receive at a time: a second one gets
:exc:`~wsharbor.exceptions.ConcurrencyError`.
"""

from __future__ import annotations

import codecs
import collections
import threading
from collections.abc import Iterator

from ..exceptions import ConcurrencyError
from ..typing import Data
from .utils import Deadline

__all__ = ["Assembler"]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class Assembler:
    """Fragments in, messages out, with flow control; thread-safe.

    :param high: pause reading above this many queued fragments; ``None``
        disables flow control.
    :param low: resume reading at or below this many; ``high // 4`` by default.
    :param max_bytes: pause reading above this many queued bytes too (characters
        for text: the UTF-8 was decoded already); resume at a quarter of it.
        ``None``: no byte limit.

    :meth:`get` and :meth:`get_iter` raise :exc:`EOFError` once :meth:`close`
    was called and every complete message before was returned.
    """

    def __init__(
        self, high: int | None = None, low: int | None = None, max_bytes: int | None = None
    ) -> None:
        if high is not None and low is None:
            low = high // 4
        if high is None and low is not None:
            high = low * 4
        if high is not None and low is not None:
            if low < 0:
                raise ValueError(f"max_queue low-water mark must be >= 0, got {low}")
            if high < low:
                raise ValueError(
                    f"max_queue high-water mark ({high}) must be >= the low-water mark ({low})"
                )
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"read_limit must be positive, got {max_bytes}")
        self.high = high
        self.low = low
        self.max_bytes = max_bytes
        #: Bytes (characters for text) of the fragments queued.
        self.size = 0
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._resumed = threading.Condition(self._lock)
        self._fragments: collections.deque[tuple[Data, bool]] = collections.deque()
        #: True while the reader thread must not read.
        self.paused = False
        #: True once the stream of fragments ended.
        self.closed = False
        self._closing = False  # no pausing; drop messages while full
        self._in_message = False  # the last fragment put was not final
        self._dropping = False  # drop fragments until the end of this message
        self._get_in_progress = False

    # Reader thread.

    def put(self, data: Data, final: bool) -> None:
        """Queue a fragment; the last one of a message has ``final`` set."""
        with self._lock:
            if self.closed:
                return
            starts = not self._in_message
            self._in_message = not final
            if self._closing and starts:
                self._dropping = self.high is not None and len(self._fragments) >= self.high
            if self._dropping:
                if final:
                    self._dropping = False
                return
            self._fragments.append((data, final))
            self.size += len(data)
            self._not_empty.notify()
            self._maybe_pause()

    def wait_for_room(self) -> None:
        """Block while the queue is above the high-water mark (reader thread)."""
        with self._lock:
            while self.paused and not self.closed:
                self._resumed.wait()

    def stop_flow_control(self) -> None:
        """The connection is closing: never pause reading again."""
        with self._lock:
            self._closing = True
            self.paused = False
            self._resumed.notify_all()

    def close(self) -> None:
        """End the stream: wake every waiting thread; safe to call twice."""
        with self._lock:
            self.closed = True
            self.paused = False
            self._not_empty.notify_all()
            self._resumed.notify_all()

    def _maybe_pause(self) -> None:
        # "> high" so that high = 0 pauses after every fragment.
        if self._closing or self.paused:
            return
        if (self.high is not None and len(self._fragments) > self.high) or (
            self.max_bytes is not None and self.size > self.max_bytes
        ):
            self.paused = True

    def _maybe_resume(self) -> None:
        if (
            self.paused
            and (self.low is None or len(self._fragments) <= self.low)
            and (self.max_bytes is None or self.size <= self.max_bytes // 4)
        ):
            self.paused = False
            self._resumed.notify()

    # Receiving threads.

    def _start_get(self) -> None:
        with self._lock:
            if self._get_in_progress:
                raise ConcurrencyError("get() or get_iter() is already running")
            self._get_in_progress = True

    def _next(self, deadline: Deadline) -> tuple[Data, bool]:
        """The next fragment; the lock is held. Raises EOFError or TimeoutError."""
        while not self._fragments:
            if self.closed:
                raise EOFError("stream of fragments ended")
            left = deadline.timeout(raise_if_elapsed=False)
            if left is not None and left <= 0:
                raise TimeoutError
            self._not_empty.wait(left)
        fragment = self._fragments.popleft()
        self.size -= len(fragment[0])
        self._maybe_resume()
        return fragment

    def get(self, timeout: float | None = None, decode: bool | None = None) -> Data:
        """Return the next whole message.

        :param timeout: seconds to wait for the whole message (``None``: no limit;
            ``0`` or less: only a message already received); then
            :exc:`TimeoutError`, and the fragments already received stay queued.
        :param decode: ``None`` returns ``str`` for text and ``bytes`` for
            binary; ``False`` returns text as UTF-8 ``bytes``; ``True`` decodes
            binary as UTF-8 (:exc:`UnicodeDecodeError` if it isn't).
        """
        self._start_get()
        try:
            deadline = Deadline(timeout)
            parts: list[Data] = []
            with self._lock:
                try:
                    while True:
                        data, final = self._next(deadline)
                        parts.append(data)
                        if final:
                            break
                except TimeoutError:
                    # Put back what was taken: the next call gets the whole message.
                    self._fragments.extendleft(reversed([(part, False) for part in parts]))
                    self.size += sum(map(len, parts))
                    self._maybe_pause()
                    raise TimeoutError(f"timed out in {timeout or 0:.1f}s") from None
        finally:
            self._get_in_progress = False
        return _join(parts, decode)

    def get_iter(self, decode: bool | None = None) -> Iterator[Data]:
        """Yield the fragments of the next message as they arrive.

        ``decode`` is as in :meth:`get`. The iterator must be consumed to the
        end; until then, :meth:`get` and :meth:`get_iter` raise
        :exc:`~wsharbor.exceptions.ConcurrencyError`.
        """
        self._start_get()
        deadline = Deadline(None)
        decoder: codecs.IncrementalDecoder | None = None
        first = True
        while True:
            with self._lock:
                data, final = self._next(deadline)
            if first:
                first = False
                if decode is True and isinstance(data, bytes):
                    decoder = _utf8_decoder()
            if decoder is not None:
                assert isinstance(data, bytes)
                yield decoder.decode(data, final)
            elif decode is False and isinstance(data, str):
                yield data.encode()
            else:
                yield data
            if final:
                break
        self._get_in_progress = False


def _join(parts: list[Data], decode: bool | None) -> Data:
    if isinstance(parts[0], str):
        text = parts[0] if len(parts) == 1 else "".join(parts)  # type: ignore[arg-type]
        assert isinstance(text, str)
        return text.encode() if decode is False else text
    data = parts[0] if len(parts) == 1 else b"".join(parts)  # type: ignore[arg-type]
    assert isinstance(data, bytes)
    return data.decode() if decode is True else data
