"""The whole error tree of wsharbor.

.. code-block:: text

    WsharborError
    ├── ConnectionClosed            the connection is closed (codes received and sent)
    │   ├── ConnectionClosedOK      ... with 1000, 1001 or 1005 (no code) both ways
    │   └── ConnectionClosedError   ... any other way
    ├── InvalidHandshake            the opening handshake failed; ``status`` is the HTTP answer
    │   ├── InvalidMessage          malformed HTTP (400)
    │   ├── InvalidMethod           not GET (405)
    │   ├── InvalidHTTPVersion      not HTTP/1.1 (505); alias ``InvalidProtocol``
    │   ├── HeadersTooLarge         over a size limit of the HTTP head (431)
    │   │   ├── RequestLineTooLong  ... the request line (also a SecurityError)
    │   │   ├── StatusLineTooLong   ... the status line (also a SecurityError)
    │   │   ├── HeaderLineTooLong   ... a header line (also a SecurityError)
    │   │   └── TooManyHeaders      ... the number or total size of headers (also a SecurityError)
    │   ├── InvalidHeader           a header is missing or wrong (400)
    │   │   ├── InvalidHeaderFormat ... it doesn't follow its grammar
    │   │   ├── InvalidHeaderValue  ... its value isn't acceptable
    │   │   ├── InvalidUpgrade      Upgrade / Connection headers (426)
    │   │   ├── InvalidOrigin       Origin not in the allow-list (403)
    │   │   └── InvalidVersion      Sec-WebSocket-Version is not 13 (426)
    │   ├── NegotiationError        subprotocol or extension negotiation failed (400)
    │   │   ├── DuplicateParameter  ... an extension parameter given twice
    │   │   ├── InvalidParameterName  ... an unknown extension parameter
    │   │   └── InvalidParameterValue ... a bad extension parameter value
    │   ├── InvalidStatus           client side: the server did not answer 101
    │   ├── SecurityError           a security rule broken: a redirect, a size limit above
    │   └── ProxyError              client side: connecting through a proxy failed
    │       ├── InvalidProxyMessage ... the proxy's answer is malformed
    │       └── InvalidProxyStatus  ... the proxy refused the tunnel (not 2xx)
    ├── InvalidURI                  not a ws:// or wss:// URI
    ├── InvalidProxy                not a valid proxy URL
    ├── ProtocolError               the peer broke RFC 6455 / RFC 7692
    ├── PayloadTooBig               a message exceeded ``max_size``
    │   └── TooManyFragments        ... or ``max_fragments`` frames
    ├── InvalidState                local misuse: an operation not allowed in this state
    ├── ConcurrencyError            two coroutines or threads receive at once
    ├── WriteBufferFull             broadcast() skipped a connection over ``write_limit``
    ├── ConfigError                 application server: bad configuration
    ├── InvalidBrokerURL            pubsub: a broker URL that can't be used (also a ValueError)
    └── BrokerUnavailable           pubsub: the broker (Redis) can't be reached in time

Remote protocol errors (``ProtocolError``, ``PayloadTooBig``) and local misuse
(``InvalidState``) are different exceptions, as in wsproto.

Every class name of ``websockets.exceptions`` exists here, and ``except`` with
one of them catches what it catches in websockets: ``WebSocketException`` is
``WsharborError``, ``InvalidProtocol`` is ``InvalidHTTPVersion``, and the size
limits websockets files under ``SecurityError`` are both ``HeadersTooLarge``
(our 431) and ``SecurityError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol.frames import Close
    from .protocol.http11 import Response

__all__ = [
    "BrokerUnavailable",
    "ConcurrencyError",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DuplicateParameter",
    "HeaderLineTooLong",
    "HeadersTooLarge",
    "InvalidBrokerURL",
    "InvalidHTTPVersion",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidMessage",
    "InvalidMethod",
    "InvalidOrigin",
    "InvalidParameterName",
    "InvalidParameterValue",
    "InvalidProtocol",
    "InvalidProxy",
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "InvalidVersion",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "RequestLineTooLong",
    "SecurityError",
    "StatusLineTooLong",
    "TooManyFragments",
    "TooManyHeaders",
    "WebSocketException",
    "WriteBufferFull",
    "WsharborError",
]


class WsharborError(Exception):
    """Root of every exception raised by wsharbor."""


#: websockets' name for the root of its exceptions.
WebSocketException = WsharborError


class ConnectionClosed(WsharborError):
    """Raised when trying to use a connection that is closed.

    ``rcvd`` is the close frame received (``None`` if none was), ``sent`` the close
    frame sent (``None`` if none was); ``rcvd_then_sent`` tells their order when
    both exist.
    """

    def __init__(
        self,
        rcvd: Close | None,
        sent: Close | None,
        rcvd_then_sent: bool | None = None,
    ) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        # The message is built by __str__ when asked for, not for every closed
        # connection; the arguments keep the exception picklable.
        super().__init__(rcvd, sent, rcvd_then_sent)

    def __str__(self) -> str:
        if self.rcvd is None:
            if self.sent is None:
                return "no close frame received or sent"
            return f"sent {self.sent}; no close frame received"
        if self.sent is None:
            return f"received {self.rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received {self.rcvd}; then sent {self.sent}"
        return f"sent {self.sent}; then received {self.rcvd}"

    @property
    def code(self) -> int:
        """The close code received, or 1006 (abnormal closure) if none was."""
        return 1006 if self.rcvd is None else self.rcvd.code

    @property
    def reason(self) -> str:
        """The close reason received, or ``""``."""
        return "" if self.rcvd is None else self.rcvd.reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed normally: 1000, 1001 or 1005 (no code) received and sent."""


class ConnectionClosedError(ConnectionClosed):
    """The connection was closed with an error, or without a close handshake."""


class InvalidHandshake(WsharborError):
    """The opening handshake failed.

    ``status`` is the HTTP status a server answers with; ``str(exc)`` is the
    one-line reason sent as a plain-text body.
    """

    status: int = 400


class InvalidMessage(InvalidHandshake):
    """The HTTP request or response is malformed."""

    status = 400


class InvalidMethod(InvalidHandshake):
    """The request method is not GET."""

    status = 405


class InvalidHTTPVersion(InvalidHandshake):
    """The request is not HTTP/1.1."""

    status = 505


#: websockets' name for :class:`InvalidHTTPVersion`.
InvalidProtocol = InvalidHTTPVersion


class HeadersTooLarge(InvalidHandshake):
    """The request line, a header line or the number of headers is over the limit."""

    status = 431


class SecurityError(InvalidHandshake):
    """A security rule is broken: following a redirect would downgrade TLS or go
    past ``MAX_REDIRECTS`` (client side), or the HTTP head is over a size limit
    (the subclasses of :class:`HeadersTooLarge` are ``SecurityError`` too, as in
    websockets)."""


class RequestLineTooLong(HeadersTooLarge, SecurityError):
    """The request line is over the limit (431)."""

    status = 431


class StatusLineTooLong(HeadersTooLarge, SecurityError):
    """The status line of a response is over the limit (client side)."""

    status = 431


class HeaderLineTooLong(HeadersTooLarge, SecurityError):
    """A header line is over the limit (431)."""

    status = 431


class TooManyHeaders(HeadersTooLarge, SecurityError):
    """Too many header lines, or too many bytes of them (431)."""

    status = 431


class InvalidHeader(InvalidHandshake):
    """A required header is missing or has an invalid value."""

    status = 400

    def __init__(self, name: str, value: str | None = None, detail: str = "") -> None:
        self.name = name
        self.value = value
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        if self.value is None:
            msg = f"missing {self.name} header"
        elif self.value == "":
            msg = f"empty {self.name} header"
        else:
            msg = f"invalid {self.name} header: {self.value}"
        return f"{msg} ({self.detail})" if self.detail else msg


class InvalidHeaderFormat(InvalidHeader):
    """A header doesn't follow its grammar."""


class InvalidHeaderValue(InvalidHeader):
    """A header follows its grammar but its value isn't acceptable."""


class InvalidUpgrade(InvalidHeader):
    """The Upgrade or Connection header does not ask for a WebSocket upgrade.

    Answered with 426 Upgrade Required and ``Upgrade: websocket`` (RFC 9110
    section 15.5.22), as websockets does: a browser or an HTTP client that
    reached a WebSocket endpoint learns what it takes.
    """

    status = 426


class InvalidOrigin(InvalidHeader):
    """The Origin header is not in the allow-list."""

    status = 403

    def __init__(self, value: str | None) -> None:
        super().__init__("Origin", value, "not allowed")


class InvalidVersion(InvalidHeader):
    """The Sec-WebSocket-Version header is not 13."""

    status = 426


class NegotiationError(InvalidHandshake):
    """Subprotocol or extension negotiation failed."""

    status = 400


class DuplicateParameter(NegotiationError):
    """An extension parameter is given twice."""


class InvalidParameterName(NegotiationError):
    """An extension parameter is unknown."""


class InvalidParameterValue(NegotiationError):
    """An extension parameter has a bad value (or lacks one)."""


class InvalidStatus(InvalidHandshake):
    """Client side: the server rejected the handshake (it did not answer 101)."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.status = response.status
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status}")


class ProxyError(InvalidHandshake):
    """Client side: connecting through a proxy failed."""


class InvalidProxyMessage(ProxyError):
    """Client side: the proxy's answer to CONNECT is malformed HTTP."""


class InvalidProxyStatus(ProxyError):
    """Client side: the proxy refused the tunnel (it did not answer 2xx)."""

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(f"proxy rejected connection: HTTP {response.status}")


class InvalidProxy(WsharborError):
    """The proxy URL is not valid."""

    def __init__(self, proxy: str, msg: str) -> None:
        self.proxy = proxy
        self.msg = msg
        super().__init__(f"{proxy} isn't a valid proxy: {msg}")


class InvalidURI(WsharborError):
    """The URI is not a valid ws:// or wss:// URI."""

    def __init__(self, uri: str, msg: str) -> None:
        self.uri = uri
        self.msg = msg
        super().__init__(f"{uri} isn't a valid URI: {msg}")


class ProtocolError(WsharborError):
    """The peer broke the WebSocket protocol (RFC 6455 or RFC 7692)."""


class PayloadTooBig(WsharborError):
    """A message (or a frame) exceeded ``max_size``."""


class TooManyFragments(PayloadTooBig):
    """A message came in more than ``max_fragments`` frames (1009, as a message too big)."""


class InvalidState(WsharborError, AssertionError):
    """An operation is not allowed in the connection's current state (local misuse).

    An ``AssertionError`` too, as in websockets."""


class ConcurrencyError(WsharborError, RuntimeError):
    """Two coroutines (or threads) called ``recv()``/``recv_streaming()`` at once,
    or one sends while another is sending a fragmented message (:mod:`wsharbor.sync`),
    or a ping with the same data is already waiting for its pong.

    Reads on a connection must be serialized, and so must writes; reading and
    writing from different threads at the same time is fine. A ``RuntimeError``
    too, as in websockets.
    """


class WriteBufferFull(WsharborError, RuntimeError):
    """:func:`~wsharbor.broadcast` skipped a connection: its write buffer was over
    ``write_limit`` (a peer that reads slower than the server sends).

    Raised only inside the :exc:`ExceptionGroup` of
    ``broadcast(..., raise_exceptions=True)``, beside websockets' errors of a
    broadcast (:exc:`ConcurrencyError` for a fragmented message in progress,
    :exc:`RuntimeError` for a failed write): a ``RuntimeError`` too, like them,
    so that ``except* RuntimeError`` sees every connection that didn't get the
    message. :attr:`connection` is the connection skipped.
    """

    def __init__(self, connection: Any, write_limit: int) -> None:
        self.connection: Any = connection
        self.write_limit = write_limit
        super().__init__(f"write buffer over write_limit ({write_limit} bytes): message skipped")


class ConfigError(WsharborError):
    """The application server's configuration is invalid."""


class InvalidBrokerURL(WsharborError, ValueError):
    """A broker URL (``wsharbor.pubsub.Hub(url)``) is malformed or names no known broker.

    The message names the URL without its password and says what is wrong.
    """

    def __init__(self, url: str, msg: str) -> None:
        self.url = url
        self.msg = msg
        super().__init__(f"{url} isn't a valid broker URL: {msg}")


class BrokerUnavailable(WsharborError):
    """The pub/sub broker can't be reached, or didn't answer in time.

    Raised by ``Hub.start()`` (the message names the broker's address), and by
    ``Hub.publish()``, ``Hub.join()`` and the other calls that need the broker
    while it is unreachable, after a bounded wait. A ``publish()`` that raises
    it may or may not have been published.
    """
