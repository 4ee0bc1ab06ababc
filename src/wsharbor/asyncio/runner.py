"""Running a server from synchronous code: :func:`run` and :class:`ServerThread`.

:func:`run` is the deployment guide's shutdown example in one call: it serves
until SIGTERM or SIGINT, shuts down gracefully (1001 to every connection, then
waits for the handlers), forces the shutdown on a second SIGINT, restores the
signal handlers it replaced, and returns an exit status.

:class:`ServerThread` runs a server in a background thread, for programs whose
main thread is not an event loop; it is the ``call_soon_threadsafe()`` advice of
the guide, done once and tested.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ..typing import Data, DataLike
from .connection import Connection, fanout
from .server import Handler, Server, serve

__all__ = ["ServerThread", "run", "serve_in_thread"]

T = TypeVar("T")

_SignalHandler = signal.Handlers | int | None | Any

logger = logging.getLogger("wsharbor.server")


def run(
    handler: Handler,
    host: str | None = None,
    port: int | None = None,
    **options: Any,
) -> int:
    """Serve ``handler`` until SIGTERM or SIGINT; return 0 after a graceful shutdown.

    The first SIGTERM or SIGINT closes the server gracefully: it stops
    accepting, sends 1001 to every connection and waits up to
    ``close_timeout`` for handlers to finish. A second SIGINT forces the
    shutdown (connections are aborted, handlers cancelled) and ``run`` returns 1.
    Must be called from the main thread (signals are delivered there).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run() installs signal handlers: call it from the main thread")
    return asyncio.run(_run(handler, host, port, options))


async def _run(handler: Handler, host: str | None, port: int | None, options: Any) -> int:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()
    force = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, _SignalHandler] = {sig: signal.getsignal(sig) for sig in signals}

    def on_signal(sig: int) -> None:
        if not stop.done():
            logger.info("received %s: shutting down gracefully", signal.Signals(sig).name)
            stop.set_result(sig)
        elif sig == signal.SIGINT:
            logger.warning("received SIGINT again: forcing shutdown")
            force.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        server = await serve(handler, host, port, **options)
        for sock in server.sockets:
            logger.info("listening on %s", sock.getsockname())
        await stop
        server.close()
        closed = asyncio.ensure_future(server.wait_closed())
        forced = asyncio.ensure_future(force.wait())
        await asyncio.wait({closed, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not closed.done():
            server.abort()
            await closed
            return 1
        forced.cancel()
        return 0
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous[sig])


class ServerThread:
    """A WebSocket server running in a background thread with its own event loop.

    Start and stop it from synchronous code with one call each::

        thread = wsharbor.serve_in_thread(echo, "127.0.0.1", 0)
        print(thread.port)
        ...
        thread.stop()  # graceful: 1001 to every connection, handlers finish

    Connections belong to the server's thread: never call their methods from
    another thread. Use :meth:`send`, :meth:`broadcast` or :meth:`run_coroutine`,
    which hand the work to the server's loop (``call_soon_threadsafe``) and
    return or wait for the result.
    """

    def __init__(
        self, handler: Handler, host: str | None = "127.0.0.1", port: int | None = 0, **options: Any
    ) -> None:
        self._args = (handler, host, port, options)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float | None = 10.0) -> ServerThread:
        """Start the thread and return once the server listens."""
        if self._thread is not None:
            raise RuntimeError("server thread already started")
        self._thread = threading.Thread(target=self._main, name="wsharbor-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the server thread did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        handler, host, port, options = self._args
        self.loop = asyncio.get_running_loop()
        try:
            self.server = await serve(handler, host, port, **options)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self.server.serve_forever()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the server's loop from any thread; return its future."""
        if self.loop is None:
            raise RuntimeError("server thread not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def send(self, connection: Connection, message: Data, timeout: float | None = None) -> None:
        """Send ``message`` on ``connection`` from another thread and wait until it is written."""
        self.run_coroutine(connection.send(message)).result(timeout)

    def broadcast(
        self,
        message: DataLike,
        connections: Iterable[Connection] | None = None,
        timeout: float | None = None,
        *,
        text: bool | None = None,
    ) -> int:
        """Broadcast from another thread (to every open connection by default).

        Returns how many connections didn't get the message: not open, in the
        middle of a fragmented message, or over ``write_limit`` (see
        :func:`wsharbor.fanout`, which it calls). ``text`` is as in
        :func:`wsharbor.broadcast`.
        """

        async def do() -> int:
            assert self.server is not None
            targets = self.server.connections if connections is None else connections
            return len(fanout(targets, message, text=text))

        return self.run_coroutine(do()).result(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Close the server gracefully and wait for the thread to end.

        Calling it again, or after the thread ended, does nothing.
        """
        if self.loop is None or self._thread is None or self.server is None:
            return
        if self._thread.is_alive():
            # RuntimeError: the loop closed meanwhile; the thread is ending anyway.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.server.close)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the server thread did not stop in time")

    def __enter__(self) -> ServerThread:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_thread(
    handler: Handler, host: str | None = "127.0.0.1", port: int | None = 0, **options: Any
) -> ServerThread:
    """Start a server in a background thread; see :class:`ServerThread`."""
    return ServerThread(handler, host, port, **options).start()
