"""Routing connections to handlers by URL path: :func:`route`, :func:`unix_route`, :class:`Router`.

The API of ``websockets.asyncio.router``, on werkzeug's URL routing, which is
an optional dependency (``pip install 'wsharbor[router]'``)::

    from werkzeug.routing import Map, Rule
    from wsharbor.asyncio.router import route

    async def channel(websocket, channel_id):
        ...

    url_map = Map([
        Rule("/channel/<uuid:channel_id>", endpoint=channel),
        Rule("/", redirect_to="/channel/00000000-0000-0000-0000-000000000000"),
    ])

    async with route(url_map, "127.0.0.1", 8765) as server:
        await server.serve_forever()

Each rule's endpoint is a connection handler; it gets the connection and the
parameters converted from the URL as keyword arguments. The request is routed
in ``process_request``, before the opening handshake, so that:

- a path that matches no rule gets an HTTP 404;
- a rule with ``redirect_to``, or a path that differs from its rule by a
  trailing slash (werkzeug's ``strict_slashes``), gets an HTTP 302 whose
  ``Location`` is the ``ws://`` (or ``wss://``) URI to use;
- any other error werkzeug raises while matching (405 for a rule restricted to
  other methods) gets its HTTP status. websockets answers those with a 500 and
  logs a traceback; that is the one difference.

The matched handler and its arguments are kept on the connection, as
``connection.handler`` and ``connection.handler_kwargs`` (websockets' names),
until :meth:`Router.handler` calls it. :func:`route` makes connections of
:class:`RouterConnection`, which keeps them in slots; any other connection
class (``create_connection=``) keeps them in its ``__dict__``, as websockets
does.

Importing this module without werkzeug raises :exc:`ImportError` naming the
extra to install.
"""

from __future__ import annotations

import http
import inspect
import ssl as ssl_module
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Literal

try:
    from werkzeug.exceptions import HTTPException, NotFound
    from werkzeug.routing import Map, RequestRedirect
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        "wsharbor.asyncio.router needs werkzeug: pip install 'wsharbor[router]'"
    ) from exc

from ..protocol.http11 import Request, Response
from .server import Server, ServerConnection, process_request_callable, serve

__all__ = ["Router", "RouterConnection", "route", "unix_route"]


class RouterConnection(ServerConnection):
    """A server connection with room for the handler the router matched.

    ``handler`` and ``handler_kwargs`` are set by :meth:`Router.route_request`
    and read by :meth:`Router.handler`.
    """

    __slots__ = ("handler", "handler_kwargs")

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.handler: Callable[..., Awaitable[Any]] | None = None
        self.handler_kwargs: dict[str, Any] = {}


class Router:
    """Dispatches the connections of a server built by :func:`route` to handlers.

    ``url_map`` maps URL patterns to handlers (each rule is marked
    ``websocket=True``); ``server_name`` is the host name that redirects use
    (None: the request's ``Host`` header); ``url_scheme`` is ``"ws"`` or
    ``"wss"``, the scheme of the redirects' URIs.

    Subclass it, and pass the subclass as ``route(create_router=...)``, to
    customize routing: :meth:`get_server_name`, :meth:`redirect`,
    :meth:`not_found`, :meth:`route_request`, :meth:`handler`.
    """

    def __init__(
        self,
        url_map: Map,
        server_name: str | None = None,
        url_scheme: str = "ws",
    ) -> None:
        self.url_map = url_map
        self.server_name = server_name
        self.url_scheme = url_scheme
        for rule in url_map.iter_rules():
            rule.websocket = True

    def get_server_name(self, connection: ServerConnection, request: Request) -> str:
        """The host name for redirects: ``server_name``, else the ``Host`` header."""
        if self.server_name is None:
            return request.headers.get("Host") or ""
        return self.server_name

    def redirect(self, connection: ServerConnection, url: str) -> Response:
        """The 302 response for a redirect to ``url``."""
        response = connection.respond(http.HTTPStatus.FOUND, f"Found at {url}")
        response.headers["Location"] = url
        return response

    def not_found(self, connection: ServerConnection) -> Response:
        """The 404 response for a path that matches no rule."""
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found")

    def route_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Match the request's path: keep the handler on the connection and
        return None (the handshake goes on), or return the HTTP response
        (404, 302, ...) that ends the connection."""
        adapter = self.url_map.bind(
            server_name=self.get_server_name(connection, request),
            url_scheme=self.url_scheme,
        )
        parsed = urllib.parse.urlparse(request.path)
        try:
            handler, kwargs = adapter.match(path_info=parsed.path, query_args=parsed.query)
        except RequestRedirect as redirect:
            return self.redirect(connection, redirect.new_url)
        except NotFound:
            return self.not_found(connection)
        except HTTPException as exc:
            code = exc.code if exc.code is not None else http.HTTPStatus.BAD_REQUEST
            return connection.respond(code, exc.name)
        connection.handler = handler  # type: ignore[attr-defined]
        connection.handler_kwargs = kwargs  # type: ignore[attr-defined]
        return None

    async def handler(self, connection: ServerConnection) -> None:
        """Call the handler :meth:`route_request` matched, with the URL's parameters."""
        handler: Callable[..., Awaitable[Any]] = connection.handler  # type: ignore[attr-defined]
        kwargs: dict[str, Any] = connection.handler_kwargs  # type: ignore[attr-defined]
        await handler(connection, **kwargs)


def route(
    url_map: Map,
    *args: Any,
    server_name: str | None = None,
    ssl: ssl_module.SSLContext | Literal[True] | None = None,
    create_router: type[Router] | None = None,
    **kwargs: Any,
) -> serve:
    """Create a WebSocket server that dispatches connections to handlers by URL path.

    It takes the arguments of :func:`~wsharbor.asyncio.server.serve`, except that
    the first one is a :class:`werkzeug.routing.Map` whose rules' endpoints are
    connection handlers (see the module docstring), and:

    - ``server_name``: the server's host name as clients see it, for redirects
      (None: the request's ``Host`` header); set it behind a proxy that
      rewrites ``Host``;
    - ``ssl``: an :class:`ssl.SSLContext` enables TLS, as in ``serve()``;
      ``True`` only makes redirects ``wss://`` (TLS terminated by a proxy);
    - ``create_router``: the :class:`Router` class (a subclass, say).

    A ``process_request`` hook runs before routing: a response it returns is
    sent and routing is skipped. Like ``serve()``, the result is awaited
    (``server = await route(...)``) or used as ``async with route(...) as server``.
    """
    url_scheme = "ws" if ssl is None else "wss"
    if ssl is not None and ssl is not True:
        kwargs["ssl"] = ssl
    router = (Router if create_router is None else create_router)(url_map, server_name, url_scheme)
    user_hook = kwargs.pop("process_request", None)
    if user_hook is None:
        process_request: Callable[[ServerConnection, Request], Any] = router.route_request
    else:
        first = process_request_callable(user_hook)

        async def route_after(
            pending: Awaitable[Any], connection: ServerConnection, request: Request
        ) -> Any:
            response = await pending
            if response is not None:
                return response
            return router.route_request(connection, request)

        def process_request(connection: ServerConnection, request: Request) -> Any:
            # Synchronous when the hook is: no task for the handshake.
            response = first(connection, request)
            if inspect.isawaitable(response):
                return route_after(response, connection, request)
            if response is not None:
                return response
            return router.route_request(connection, request)

    kwargs.setdefault("create_connection", RouterConnection)
    return serve(router.handler, *args, process_request=process_request, **kwargs)


def unix_route(url_map: Map, path: str | None = None, **kwargs: Any) -> serve:
    """Like :func:`route`, on a Unix socket at ``path``, as
    :func:`~wsharbor.asyncio.server.unix_serve`."""
    return route(url_map, unix=True, path=path, **kwargs)
