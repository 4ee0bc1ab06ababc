"""Tests of the opening handshake (RFC 6455 section 4): real bytes, no mocks.

- :meth:`ServerHandshake.accept` and :meth:`ClientHandshake.process_response` apply
  the rules of each side, through bytes parsed by the real parsers.
- The server's fast paths answer as the general paths do: the usual Upgrade,
  Connection and Sec-WebSocket-Key values are recognized without the general
  tokenizer, and the 101 response is built without checking fields it made itself;
  the usual request is checked in C (``_speedups.accept_upgrade``), which must give
  the same 101 and leave everything else to the Python checks.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsharbor.exceptions import (
    HeadersTooLarge,
    InvalidHandshake,
    InvalidHeader,
    InvalidHTTPVersion,
    InvalidMessage,
    InvalidMethod,
    InvalidOrigin,
    InvalidStatus,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
)
from wsharbor.protocol import handshake
from wsharbor.protocol.datastructures import Headers
from wsharbor.protocol.deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from wsharbor.protocol.frames import Frame
from wsharbor.protocol.handshake import (
    DEFAULT,
    Accepted,
    ClientHandshake,
    ServerHandshake,
    accept_key,
    error_response,
)
from wsharbor.protocol.http11 import Request, RequestParser, Response, ResponseParser
from wsharbor.protocol.uri import WebSocketURI
from wsharbor.typing import ExtensionParameter

from .samples import (
    FRAME,
    RFC_ACCEPT,
    RFC_KEY,
    RFC_REQUEST,
    RFC_RESPONSE,
    both_ways,
    parse_bytewise,
    upgrade,
)

# ---------------------------------------------------------------------------
# Fake extension factories implementing the Protocols of extensions.py.
# ---------------------------------------------------------------------------


@dataclass
class FakeExtension:
    name: str
    params: list[ExtensionParameter] = field(default_factory=list)

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


class FakeServerFactory:
    """Accepts offers unless a parameter is named ``reject``; echoes the params."""

    def __init__(self, name: str = "x-fake", tag: str = "") -> None:
        self.name = name
        self.tag = tag

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[object],
    ) -> tuple[list[ExtensionParameter], FakeExtension]:
        if any(name == "reject" for name, _ in params):
            raise NegotiationError("rejected")
        if self.tag == "reject-all":
            raise NegotiationError("rejects everything")
        return list(params), FakeExtension(self.name, list(params))


class FakeClientFactory:
    """Offers ``params``; rejects a response with a parameter named ``bad``."""

    def __init__(self, name: str = "x-fake", params: Sequence[ExtensionParameter] = ()) -> None:
        self.name = name
        self.params = list(params)

    def get_request_params(self) -> list[ExtensionParameter]:
        return list(self.params)

    def process_response_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[object],
    ) -> FakeExtension:
        if any(name == "bad" for name, _ in params):
            raise NegotiationError("bad parameter")
        return FakeExtension(self.name, list(params))


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


# ---------------------------------------------------------------------------
# ServerHandshake
# ---------------------------------------------------------------------------


def make_request(
    *, method: str = "GET", remove: Sequence[str] = (), **replace: str | list[str]
) -> Request:
    """A valid upgrade request; ``remove`` drops headers, ``replace`` sets them."""
    headers = Headers(
        [
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", RFC_KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    for name in remove:
        del headers[name]
    for key, values in replace.items():
        name = key.replace("_", "-")
        if name in headers:
            del headers[name]
        for value in [values] if isinstance(values, str) else values:
            headers[name] = value
    return Request("/chat", headers, method)


class TestServerHandshake:
    def test_rfc_example_through_bytes(self) -> None:
        request = RequestParser().feed(RFC_REQUEST)
        assert request is not None
        accepted = ServerHandshake(subprotocols=["chat"], server_header=None).accept(request)
        assert isinstance(accepted, Accepted)
        assert accepted.subprotocol == "chat"
        assert accepted.extensions == []
        assert accepted.response.serialize() == RFC_RESPONSE

    def test_default_server_header(self) -> None:
        from wsharbor import __version__

        accepted = ServerHandshake().accept(make_request())
        assert accepted.response.headers["Server"] == f"wsharbor/{__version__}"
        assert repr(DEFAULT) == "DEFAULT"

    def test_custom_server_header(self) -> None:
        accepted = ServerHandshake(server_header="edge").accept(make_request())
        assert accepted.response.headers["Server"] == "edge"
        assert accepted.response.status == 101
        assert accepted.response.headers["Upgrade"] == "websocket"
        assert accepted.response.headers["Connection"] == "Upgrade"
        assert accepted.response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
        assert "Sec-WebSocket-Protocol" not in accepted.response.headers
        assert "Sec-WebSocket-Extensions" not in accepted.response.headers

    @pytest.mark.parametrize(
        "request_",
        [
            make_request(Upgrade="WebSocket"),
            make_request(Upgrade="h2c, websocket"),
            make_request(Connection="keep-alive, Upgrade"),
            make_request(Connection=["keep-alive", "upgrade"]),
            make_request(Connection="UPGRADE"),
        ],
    )
    def test_accepted_variants(self, request_: Request) -> None:
        assert ServerHandshake().accept(request_).response.status == 101

    def test_method_405_with_allow(self) -> None:
        handshake = ServerHandshake(server_header="edge")
        with pytest.raises(InvalidMethod) as exc_info:
            handshake.accept(make_request(method="POST"))
        exc = exc_info.value
        assert exc.status == 405
        assert str(exc) == "unsupported HTTP method: POST (expected GET)"
        response = handshake.reject(exc)
        assert response.status == 405
        assert response.reason_phrase == "Method Not Allowed"
        assert response.headers["Allow"] == "GET"
        assert response.headers["Server"] == "edge"
        assert response.headers["Connection"] == "close"
        assert response.body == (str(exc) + "\n").encode()
        assert response.headers["Content-Length"] == str(len(response.body))

    def test_method_checked_first(self) -> None:
        with pytest.raises(InvalidMethod):
            ServerHandshake().accept(make_request(method="PUT", remove=["Host", "Upgrade"]))

    def test_healthz_without_upgrade_is_rejected(self) -> None:
        request = RequestParser().feed(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert request is not None
        with pytest.raises(InvalidUpgrade) as exc_info:
            ServerHandshake().accept(request)
        assert str(exc_info.value) == "missing Upgrade header"

    @pytest.mark.parametrize(
        ("request_", "exc_type", "message"),
        [
            (make_request(remove=["Host"]), InvalidHeader, "missing Host header"),
            (
                make_request(Host=["a", "b"]),
                InvalidHeader,
                "invalid Host header: a, b (more than one)",
            ),
            (make_request(Host=""), InvalidHeader, "empty Host header"),
            (
                make_request(remove=["Sec-WebSocket-Key"]),
                InvalidHeader,
                "missing Sec-WebSocket-Key header",
            ),
            (
                make_request(Sec_WebSocket_Key=[RFC_KEY, RFC_KEY]),
                InvalidHeader,
                f"invalid Sec-WebSocket-Key header: {RFC_KEY}, {RFC_KEY} (more than one)",
            ),
            (
                make_request(Sec_WebSocket_Key="not base64!"),
                InvalidHeader,
                "invalid Sec-WebSocket-Key header: not base64! (not base64)",
            ),
            (
                make_request(Sec_WebSocket_Key="é"),
                InvalidHeader,
                "invalid Sec-WebSocket-Key header: é (not base64)",
            ),
            (
                make_request(Sec_WebSocket_Key="dGhlIHNhbXBsZQ=="),
                InvalidHeader,
                "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZQ== "
                "(expected 16 bytes base64-encoded)",
            ),
        ],
    )
    def test_rejected_400(
        self, request_: Request, exc_type: type[InvalidHandshake], message: str
    ) -> None:
        handshake = ServerHandshake()
        with pytest.raises(InvalidHandshake) as exc_info:
            handshake.accept(request_)
        assert type(exc_info.value) is exc_type
        assert exc_info.value.status == 400
        assert str(exc_info.value) == message
        response = handshake.reject(exc_info.value)
        assert response.status == 400
        assert response.reason_phrase == "Bad Request"
        assert response.body == (message + "\n").encode()
        serialized = response.serialize()
        assert serialized.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert serialized.count(b"\r\n\r\n") == 1

    @pytest.mark.parametrize(
        ("request_", "message"),
        [
            (make_request(remove=["Upgrade"]), "missing Upgrade header"),
            (make_request(Upgrade="h2c"), "invalid Upgrade header: h2c (expected websocket)"),
            (make_request(remove=["Connection"]), "missing Connection header"),
            (
                make_request(Connection="keep-alive"),
                "invalid Connection header: keep-alive (expected Upgrade)",
            ),
        ],
    )
    def test_not_an_upgrade_gets_426_with_upgrade_websocket(
        self, request_: Request, message: str
    ) -> None:
        # As websockets: 426 Upgrade Required names the protocol to switch to
        # (RFC 9110 section 15.5.22).
        handshake = ServerHandshake()
        with pytest.raises(InvalidUpgrade) as exc_info:
            handshake.accept(request_)
        assert exc_info.value.status == 426
        assert str(exc_info.value) == message
        response = handshake.reject(exc_info.value)
        assert (response.status, response.reason_phrase) == (426, "Upgrade Required")
        assert response.headers["Upgrade"] == "websocket"
        assert response.headers["Connection"] == "close"
        assert response.body == (message + "\n").encode()

    @pytest.mark.parametrize(
        ("request_", "message"),
        [
            (
                make_request(remove=["Sec-WebSocket-Version"]),
                "missing Sec-WebSocket-Version header",
            ),
            (
                make_request(Sec_WebSocket_Version="8"),
                "invalid Sec-WebSocket-Version header: 8 (expected 13)",
            ),
            (
                make_request(Sec_WebSocket_Version="13, 8"),
                "invalid Sec-WebSocket-Version header: 13, 8 (expected 13)",
            ),
            (
                make_request(Sec_WebSocket_Version=["13", "13"]),
                "invalid Sec-WebSocket-Version header: 13, 13 (expected 13)",
            ),
        ],
    )
    def test_version_426(self, request_: Request, message: str) -> None:
        handshake = ServerHandshake()
        with pytest.raises(InvalidVersion) as exc_info:
            handshake.accept(request_)
        assert exc_info.value.status == 426
        assert str(exc_info.value) == message
        response = handshake.reject(exc_info.value)
        assert response.status == 426
        assert response.reason_phrase == "Upgrade Required"
        assert response.headers["Sec-WebSocket-Version"] == "13"

    def test_origin_allowed(self) -> None:
        handshake = ServerHandshake(origins=["https://a.example", "https://b.example"])
        assert handshake.accept(make_request(Origin="https://b.example")).response.status == 101

    @pytest.mark.parametrize(
        "request_", [make_request(Origin="https://evil.example"), make_request()]
    )
    def test_origin_403(self, request_: Request) -> None:
        handshake = ServerHandshake(origins=["https://a.example"])
        with pytest.raises(InvalidOrigin) as exc_info:
            handshake.accept(request_)
        assert exc_info.value.status == 403
        assert "not allowed" in str(exc_info.value)
        response = handshake.reject(exc_info.value)
        assert response.status == 403
        assert response.reason_phrase == "Forbidden"

    def test_origin_none_allows_missing(self) -> None:
        handshake = ServerHandshake(origins=[None, "https://a.example"])
        assert handshake.accept(make_request()).response.status == 101
        with pytest.raises(InvalidOrigin):
            handshake.accept(make_request(Origin="https://evil.example"))

    def test_origin_not_checked_by_default(self) -> None:
        assert ServerHandshake().accept(make_request(Origin="x")).response.status == 101

    def test_origin_duplicate_400(self) -> None:
        handshake = ServerHandshake(origins=["a"])
        with pytest.raises(InvalidHeader) as exc_info:
            handshake.accept(make_request(Origin=["a", "a"]))
        assert not isinstance(exc_info.value, InvalidOrigin)
        assert exc_info.value.status == 400

    # Extensions.

    def test_extension_accepted(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions='x-fake; a="1"; b'))
        assert accepted.extensions == [FakeExtension("x-fake", [("a", "1"), ("b", None)])]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-fake; a=1; b"

    def test_extension_declined_then_next_offer(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(
            make_request(Sec_WebSocket_Extensions=["x-fake; reject", "x-fake; a=2", "x-fake; a=3"])
        )
        assert accepted.extensions == [FakeExtension("x-fake", [("a", "2")])]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-fake; a=2"

    def test_extension_all_declined(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions="x-fake; reject"))
        assert accepted.extensions == []
        assert "Sec-WebSocket-Extensions" not in accepted.response.headers

    def test_extension_unknown_ignored(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions="x-other, x-fake"))
        assert accepted.extensions == [FakeExtension("x-fake")]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-fake"

    def test_extension_second_factory(self) -> None:
        handshake = ServerHandshake(
            extensions=[
                FakeServerFactory("x-fake", "reject-all"),
                FakeServerFactory("x-fake"),
                FakeServerFactory("x-two"),
            ]
        )
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions="x-two, x-fake"))
        assert [e.name for e in accepted.extensions] == ["x-two", "x-fake"]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-two, x-fake"

    def test_extension_malformed_400(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        with pytest.raises(InvalidHeader) as exc_info:
            handshake.accept(make_request(Sec_WebSocket_Extensions="x-fake; =1"))
        assert exc_info.value.status == 400

    def test_extension_header_ignored_without_factories(self) -> None:
        accepted = ServerHandshake().accept(make_request(Sec_WebSocket_Extensions="x-fake"))
        assert accepted.extensions == []

    # Subprotocols.

    @pytest.mark.parametrize(
        ("supported", "offered", "expected"),
        [
            (["chat", "superchat"], "superchat, chat", "chat"),  # server preference
            (["superchat", "chat"], "chat, superchat", "superchat"),
            (["chat"], ["superchat", "chat"], "chat"),  # several header lines
            (["chat"], None, None),  # client offered none
            ([], "chat", None),  # server supports none
            (None, "chat", None),
        ],
    )
    def test_subprotocol_selection(
        self, supported: list[str] | None, offered: str | list[str] | None, expected: str | None
    ) -> None:
        request = (
            make_request() if offered is None else make_request(Sec_WebSocket_Protocol=offered)
        )
        accepted = ServerHandshake(subprotocols=supported).accept(request)
        assert accepted.subprotocol == expected
        assert accepted.response.headers.get("Sec-WebSocket-Protocol") == expected

    def test_no_supported_subprotocol_400(self) -> None:
        handshake = ServerHandshake(subprotocols=["mqtt", "stomp"])
        with pytest.raises(NegotiationError) as exc_info:
            handshake.accept(make_request(Sec_WebSocket_Protocol="chat, superchat"))
        assert exc_info.value.status == 400
        assert str(exc_info.value) == (
            "no supported subprotocol (offered: chat, superchat; supported: mqtt, stomp)"
        )
        assert handshake.reject(exc_info.value).status == 400

    def test_select_subprotocol(self) -> None:
        calls: list[Sequence[str]] = []

        def select(offered: Sequence[str]) -> str | None:
            calls.append(offered)
            return offered[-1]

        handshake = ServerHandshake(subprotocols=["chat"], select_subprotocol=select)
        accepted = handshake.accept(make_request(Sec_WebSocket_Protocol="chat, superchat"))
        assert accepted.subprotocol == "superchat"
        assert calls == [["chat", "superchat"]]
        # Not called when the client offered nothing.
        assert handshake.accept(make_request()).subprotocol is None
        assert len(calls) == 1

    def test_select_subprotocol_none(self) -> None:
        handshake = ServerHandshake(select_subprotocol=lambda offered: None)
        accepted = handshake.accept(make_request(Sec_WebSocket_Protocol="chat"))
        assert accepted.subprotocol is None

    def test_select_subprotocol_not_offered(self) -> None:
        handshake = ServerHandshake(select_subprotocol=lambda offered: "other")
        with pytest.raises(NegotiationError):
            handshake.accept(make_request(Sec_WebSocket_Protocol="chat"))

    def test_subprotocol_malformed_400(self) -> None:
        with pytest.raises(InvalidHeader):
            ServerHandshake(subprotocols=["chat"]).accept(
                make_request(Sec_WebSocket_Protocol="chat superchat")
            )


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (InvalidMessage("malformed HTTP request: x"), 400, "Bad Request"),
        (HeadersTooLarge("too many headers: over 128"), 431, "Request Header Fields Too Large"),
        (InvalidHTTPVersion("unsupported HTTP version: HTTP/1.0"), 505, None),
    ],
)
def test_reject_parser_errors(exc: InvalidHandshake, status: int, reason: str | None) -> None:
    response = ServerHandshake(server_header=None).reject(exc)
    assert response.status == status
    if reason is not None:
        assert response.reason_phrase == reason
    assert response.body == (str(exc) + "\n").encode()
    assert "Server" not in response.headers


def test_error_response_is_one_line() -> None:
    response = error_response(400, "line one\r\nSet-Cookie: evil\nthree")
    assert response.body == b"line one Set-Cookie: evil three\n"
    assert "Set-Cookie" not in response.headers
    assert "Server" not in response.headers
    assert error_response(503, "x", server_header="s").headers["Server"] == "s"


# ---------------------------------------------------------------------------
# ClientHandshake
# ---------------------------------------------------------------------------


def server_answer(client: ClientHandshake, **kwargs: object) -> Response:
    """Run the client's request through bytes and a real server handshake."""
    request = RequestParser().feed(client.request.serialize())
    assert request is not None
    accepted = ServerHandshake(**kwargs).accept(request)  # type: ignore[arg-type]
    parser = ResponseParser()
    response = parser.feed(accepted.response.serialize() + FRAME)
    assert response is not None
    assert parser.leftover == FRAME
    return response


def response_101(key: str, *extra: tuple[str, str], remove: Sequence[str] = ()) -> Response:
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
    )
    for name in remove:
        del headers[name]
    headers.update(extra)
    return Response(101, "Switching Protocols", headers)


class TestClientHandshake:
    def test_request(self) -> None:
        from wsharbor import __version__

        client = ClientHandshake(host="example.com:8080", path="/chat?room=1")
        request = client.request
        assert request.method == "GET"
        assert request.path == "/chat?room=1"
        assert request.headers.items() == [
            ("Host", "example.com:8080"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", client.key),
            ("Sec-WebSocket-Version", "13"),
            ("User-Agent", f"wsharbor/{__version__}"),
        ]
        assert len(base64.b64decode(client.key, validate=True)) == 16
        assert ClientHandshake(host="a").key != client.key

    def test_request_options(self) -> None:
        client = ClientHandshake(
            host="a",
            origin="https://a",
            subprotocols=["chat", "superchat"],
            extensions=[FakeClientFactory(params=[("p", "1"), ("q", None)])],
            additional_headers={"Authorization": "Bearer x", "User-Agent": "mine"},
            user_agent_header="ignored",
        )
        headers = client.request.headers
        assert headers["Origin"] == "https://a"
        assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
        assert headers["Sec-WebSocket-Extensions"] == "x-fake; p=1; q"
        assert headers["Authorization"] == "Bearer x"
        assert headers.get_all("User-Agent") == ["mine"]

    def test_no_user_agent(self) -> None:
        client = ClientHandshake(host="a", user_agent_header=None, additional_headers=[("X", "1")])
        assert "User-Agent" not in client.request.headers
        assert client.request.headers["X"] == "1"

    def test_from_uri(self) -> None:
        client = ClientHandshake.from_uri("wss://user:p%40ss@[::1]/chat?x=1", origin="o")
        headers = client.request.headers
        assert headers["Host"] == "[::1]"
        assert client.request.path == "/chat?x=1"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
        assert headers["Origin"] == "o"
        uri = WebSocketURI(False, "a", 81, "/")
        assert ClientHandshake.from_uri(uri).request.headers["Host"] == "a:81"
        explicit = ClientHandshake.from_uri(
            "ws://u:p@a/", additional_headers={"Authorization": "Bearer t"}
        )
        assert explicit.request.headers.get_all("Authorization") == ["Bearer t"]

    def test_round_trip(self) -> None:
        client = ClientHandshake(
            host="a",
            subprotocols=["superchat", "chat"],
            extensions=[FakeClientFactory(params=[("p", "1")])],
        )
        response = server_answer(client, subprotocols=["chat"], extensions=[FakeServerFactory()])
        accepted = client.process_response(response)
        assert accepted.response is response
        assert accepted.subprotocol == "chat"
        assert accepted.extensions == [FakeExtension("x-fake", [("p", "1")])]

    def test_round_trip_plain(self) -> None:
        client = ClientHandshake(host="a")
        accepted = client.process_response(server_answer(client))
        assert accepted.subprotocol is None
        assert accepted.extensions == []

    def test_non_101(self) -> None:
        client = ClientHandshake(host="a")
        response = ResponseParser().feed(ServerHandshake().reject(InvalidOrigin("x")).serialize())
        assert response is not None
        with pytest.raises(InvalidStatus) as exc_info:
            client.process_response(response)
        assert exc_info.value.status == 403
        assert exc_info.value.response.body == b"invalid Origin header: x (not allowed)\n"

    @pytest.mark.parametrize(
        ("extra", "remove", "exc_type", "message"),
        [
            ((), ["Upgrade"], InvalidUpgrade, "missing Upgrade header"),
            ((("Upgrade", "h2c"),), ["Upgrade"], InvalidUpgrade, "invalid Upgrade header: h2c"),
            (
                (("Upgrade", "websocket, h2c"),),
                ["Upgrade"],
                InvalidUpgrade,
                "invalid Upgrade header: websocket, h2c",
            ),
            ((), ["Connection"], InvalidUpgrade, "missing Connection header"),
            (
                (("Connection", "close"),),
                ["Connection"],
                InvalidUpgrade,
                "invalid Connection header: close",
            ),
            ((), ["Sec-WebSocket-Accept"], InvalidHeader, "missing Sec-WebSocket-Accept header"),
            (
                (("Sec-WebSocket-Accept", RFC_ACCEPT),),
                ["Sec-WebSocket-Accept"],
                InvalidHeader,
                f"invalid Sec-WebSocket-Accept header: {RFC_ACCEPT} (doesn't match the key)",
            ),
            (
                (("Sec-WebSocket-Accept", "x"),),
                (),
                InvalidHeader,
                "more than one",
            ),
        ],
    )
    def test_invalid_101(
        self,
        extra: tuple[tuple[str, str], ...],
        remove: Sequence[str],
        exc_type: type[InvalidHandshake],
        message: str,
    ) -> None:
        client = ClientHandshake(host="a")
        with pytest.raises(InvalidHandshake) as exc_info:
            client.process_response(response_101(client.key, *extra, remove=remove))
        assert type(exc_info.value) is exc_type
        assert message in str(exc_info.value)

    def test_upgrade_case_insensitive(self) -> None:
        client = ClientHandshake(host="a")
        response = response_101(
            client.key,
            ("Upgrade", "WebSocket"),
            ("Connection", "keep-alive, upgrade"),
            remove=["Upgrade", "Connection"],
        )
        assert client.process_response(response).subprotocol is None

    @pytest.mark.parametrize(
        ("offered", "header", "message"),
        [
            ([], "x-fake", "server accepted extension x-fake which wasn't offered"),
            (["x-fake"], "x-other", "server accepted extension x-other which wasn't offered"),
            (["x-fake"], "x-fake; bad", "were rejected: bad parameter"),
        ],
    )
    def test_extension_negotiation_error(
        self, offered: list[str], header: str, message: str
    ) -> None:
        client = ClientHandshake(host="a", extensions=[FakeClientFactory(n) for n in offered])
        with pytest.raises(NegotiationError) as exc_info:
            client.process_response(response_101(client.key, ("Sec-WebSocket-Extensions", header)))
        assert message in str(exc_info.value)

    def test_extension_second_factory(self) -> None:
        class Picky(FakeClientFactory):
            def process_response_params(
                self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[object]
            ) -> FakeExtension:
                raise NegotiationError("picky")

        client = ClientHandshake(host="a", extensions=[Picky(), FakeClientFactory()])
        accepted = client.process_response(
            response_101(client.key, ("Sec-WebSocket-Extensions", "x-fake; p"))
        )
        assert accepted.extensions == [FakeExtension("x-fake", [("p", None)])]

    def test_extension_malformed(self) -> None:
        client = ClientHandshake(host="a", extensions=[FakeClientFactory()])
        with pytest.raises(InvalidHeader):
            client.process_response(
                response_101(client.key, ("Sec-WebSocket-Extensions", "x-fake;"))
            )

    @pytest.mark.parametrize(
        ("offered", "header", "message"),
        [
            ([], "chat", "server selected subprotocol chat which wasn't offered"),
            (["chat"], "superchat", "server selected subprotocol superchat which wasn't offered"),
            (["chat", "superchat"], "chat, superchat", "several subprotocols: chat, superchat"),
        ],
    )
    def test_subprotocol_negotiation_error(
        self, offered: list[str], header: str, message: str
    ) -> None:
        client = ClientHandshake(host="a", subprotocols=offered)
        with pytest.raises(NegotiationError) as exc_info:
            client.process_response(response_101(client.key, ("Sec-WebSocket-Protocol", header)))
        assert message in str(exc_info.value)

    def test_subprotocol_several_lines(self) -> None:
        client = ClientHandshake(host="a", subprotocols=["chat", "superchat"])
        with pytest.raises(NegotiationError):
            client.process_response(
                response_101(
                    client.key,
                    ("Sec-WebSocket-Protocol", "chat"),
                    ("Sec-WebSocket-Protocol", "chat"),
                )
            )


# ---------------------------------------------------------------------------
# Requests odd or wrong: parsed the same both ways, then accepted or rejected
# ---------------------------------------------------------------------------

# (request, what ServerHandshake().accept answers: 101 or the status and message).
REQUESTS: dict[str, tuple[bytes, int, str]] = {
    "upgrade": (upgrade(), 101, ""),
    "frames after": (upgrade(tail=FRAME + b"\r\n\r\n" + FRAME), 101, ""),
    "Upgrade WebSocket": (upgrade({b"Upgrade": [b"WebSocket"]}), 101, ""),
    "Upgrade WEBSOCKET": (upgrade({b"Upgrade": [b"WEBSOCKET"]}), 101, ""),
    "Upgrade h2c, websocket": (upgrade({b"Upgrade": [b"h2c, websocket"]}), 101, ""),
    "Upgrade websocket, h2c": (upgrade({b"Upgrade": [b"websocket, h2c"]}), 101, ""),
    "Upgrade , websocket ,": (upgrade({b"Upgrade": [b", websocket ,"]}), 101, ""),
    "Upgrade padded": (upgrade({b"Upgrade": [b"\t websocket \t"]}), 101, ""),
    "Upgrade twice": (upgrade({b"Upgrade": [b"websocket", b"websocket"]}), 101, ""),
    "Upgrade h2c then websocket": (upgrade({b"Upgrade": [b"h2c", b"WebSocket"]}), 101, ""),
    "Upgrade h2c": (
        upgrade({b"Upgrade": [b"h2c"]}),
        426,
        "invalid Upgrade header: h2c (expected websocket)",
    ),
    "Upgrade h2c twice": (
        upgrade({b"Upgrade": [b"h2c", b"h2c"]}),
        426,
        "invalid Upgrade header: h2c, h2c (expected websocket)",
    ),
    "Upgrade websockets": (
        upgrade({b"Upgrade": [b"websockets"]}),
        426,
        "invalid Upgrade header: websockets (expected websocket)",
    ),
    "Upgrade websocket/13": (
        upgrade({b"Upgrade": [b"websocket/13"]}),
        426,
        "invalid Upgrade header: websocket/13 (expected websocket)",
    ),
    "Upgrade empty": (
        upgrade({b"Upgrade": [b""]}),
        426,
        "empty Upgrade header (expected websocket)",
    ),
    "Upgrade missing": (upgrade({b"Upgrade": []}), 426, "missing Upgrade header"),
    "Connection upgrade": (upgrade({b"Connection": [b"upgrade"]}), 101, ""),
    "Connection UPGRADE": (upgrade({b"Connection": [b"UPGRADE"]}), 101, ""),
    "Connection keep-alive, Upgrade": (upgrade({b"Connection": [b"keep-alive, Upgrade"]}), 101, ""),
    "Connection Upgrade, close": (upgrade({b"Connection": [b"Upgrade, close"]}), 101, ""),
    "Connection twice": (upgrade({b"Connection": [b"Upgrade", b"Upgrade"]}), 101, ""),
    "Connection keep-alive then upgrade": (
        upgrade({b"Connection": [b"keep-alive", b"upgrade"]}),
        101,
        "",
    ),
    "Connection keep-alive": (
        upgrade({b"Connection": [b"keep-alive"]}),
        426,
        "invalid Connection header: keep-alive (expected Upgrade)",
    ),
    "Connection keep-alive twice": (
        upgrade({b"Connection": [b"keep-alive", b"close"]}),
        426,
        "invalid Connection header: keep-alive, close (expected Upgrade)",
    ),
    "Connection upgrades": (
        upgrade({b"Connection": [b"upgrades"]}),
        426,
        "invalid Connection header: upgrades (expected Upgrade)",
    ),
    "Connection missing": (upgrade({b"Connection": []}), 426, "missing Connection header"),
    "Key twice": (
        upgrade({b"Sec-WebSocket-Key": [RFC_KEY.encode(), RFC_KEY.encode()]}),
        400,
        f"invalid Sec-WebSocket-Key header: {RFC_KEY}, {RFC_KEY} (more than one)",
    ),
    "Key missing": (upgrade({b"Sec-WebSocket-Key": []}), 400, "missing Sec-WebSocket-Key header"),
    "Key empty": (
        upgrade({b"Sec-WebSocket-Key": [b""]}),
        400,
        "empty Sec-WebSocket-Key header (expected 16 bytes base64-encoded)",
    ),
    "Key 15 bytes": (
        upgrade({b"Sec-WebSocket-Key": [b"AAAAAAAAAAAAAAAAAAAA"]}),
        400,
        "invalid Sec-WebSocket-Key header: AAAAAAAAAAAAAAAAAAAA (expected 16 bytes base64-encoded)",
    ),
    "Key 17 bytes": (
        upgrade({b"Sec-WebSocket-Key": [b"AAAAAAAAAAAAAAAAAAAAAAA="]}),
        400,
        "invalid Sec-WebSocket-Key header: AAAAAAAAAAAAAAAAAAAAAAA= "
        "(expected 16 bytes base64-encoded)",
    ),
    "Key padding only": (
        upgrade({b"Sec-WebSocket-Key": [b"=="]}),
        400,
        "invalid Sec-WebSocket-Key header: == (not base64)",
    ),
    "Key bad padding": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ="]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQ= (not base64)",
    ),
    "Key data after padding": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ==AAAA"]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQ==AAAA (not base64)",
    ),
    "Key not base64": (
        upgrade({b"Sec-WebSocket-Key": [b"not base64!"]}),
        400,
        "invalid Sec-WebSocket-Key header: not base64! (not base64)",
    ),
    "Key with a space": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBs ZSBub25jZQ=="]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBs ZSBub25jZQ== (not base64)",
    ),
    "Key urlsafe alphabet": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ-_"]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQ-_ (not base64)",
    ),
    "Key non-ASCII": (
        upgrade({b"Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQé".encode("latin-1")]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQé (not base64)",
    ),
    "Key other 16 bytes": (upgrade({b"Sec-WebSocket-Key": [b"AAAAAAAAAAAAAAAAAAAAAA=="]}), 101, ""),
    "Host twice": (
        upgrade({b"Host": [b"a", b"b"]}),
        400,
        "invalid Host header: a, b (more than one)",
    ),
    "Version 8": (
        upgrade({b"Sec-WebSocket-Version": [b"8"]}),
        426,
        "invalid Sec-WebSocket-Version header: 8 (expected 13)",
    ),
    "Content-Length 0": (upgrade({b"Content-Length": [b"0"]}), 101, ""),
    "Content-Length 5": (
        upgrade({b"Content-Length": [b"5"]}, tail=b"hello"),
        400,
        "request body not supported",
    ),
    "Transfer-Encoding": (
        upgrade({b"Transfer-Encoding": [b"chunked"]}),
        400,
        "request body not supported",
    ),
    "POST": (
        upgrade().replace(b"GET", b"POST", 1),
        405,
        "unsupported HTTP method: POST (expected GET)",
    ),
}


@pytest.mark.parametrize(("data", "status", "message"), REQUESTS.values(), ids=list(REQUESTS))
def test_request_parsed_then_accepted_or_rejected(data: bytes, status: int, message: str) -> None:
    outcome, fast = both_ways(RequestParser, data)
    if outcome[0] == "error":
        # A request body: the parser already rejects it.
        assert outcome[2:] == (status, message)
        return
    assert fast
    request = RequestParser().feed(data)
    assert request is not None
    assert request == parse_bytewise(data)
    try:
        accepted = ServerHandshake(server_header=None).accept(request)
    except InvalidHandshake as exc:
        assert (exc.status, str(exc)) == (status, message)
    else:
        assert (status, message) == (101, "")
        assert accepted.response.headers["Sec-WebSocket-Accept"] == accept_key(
            request.headers["Sec-WebSocket-Key"]
        )


# ---------------------------------------------------------------------------
# The 101 response
# ---------------------------------------------------------------------------


def reference_headers(*fields: tuple[str, str]) -> Headers:
    headers = Headers()
    for name, value in fields:
        headers[name] = value
    return headers


class TestResponse:
    def test_same_as_checked_headers(self) -> None:
        request = RequestParser().feed(upgrade({b"Sec-WebSocket-Protocol": [b"chat, superchat"]}))
        assert request is not None
        accepted = ServerHandshake(subprotocols=["chat"], server_header="edge/1").accept(request)
        headers = accepted.response.headers
        expected = reference_headers(
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", RFC_ACCEPT),
            ("Sec-WebSocket-Protocol", "chat"),
            ("Server", "edge/1"),
        )
        assert headers.items() == expected.items()
        assert headers.packed  # built as a connection keeps it
        assert headers == expected
        for name in ("upgrade", "CONNECTION", "Sec-Websocket-Accept", "server"):
            assert name in headers
            assert headers[name] == expected[name]
            assert headers.get_all(name) == expected.get_all(name)
        # Still a Headers of its own: appending, deleting, other responses unchanged.
        headers["X"] = "1"
        del headers["Server"]
        assert headers._keys == [*expected._keys[:4], "x"]
        again = ServerHandshake(server_header=None).accept(request).response.headers
        assert again.items() == expected.items()[:3]
        assert accepted.response.serialize() == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
            b"Sec-WebSocket-Protocol: chat\r\n"
            b"X: 1\r\n"
            b"\r\n"
        )

    @pytest.mark.parametrize(
        "value", ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\x00b", "emoji \U0001f600", b"bytes"]
    )
    def test_bad_server_header_fails_at_construction(self, value: Any) -> None:
        with pytest.raises(ValueError) as expected:
            Headers()["Server"] = value
        with pytest.raises(ValueError) as exc_info:
            ServerHandshake(server_header=value)
        assert str(exc_info.value) == str(expected.value)
        handshake = ServerHandshake(server_header="good")
        with pytest.raises(ValueError) as exc_info:
            handshake.server_header = value
        assert str(exc_info.value) == str(expected.value)
        assert handshake.server_header == "good"
        handshake.server_header = None
        request = RequestParser().feed(upgrade())
        assert request is not None
        assert "Server" not in handshake.accept(request).response.headers

    def test_selected_subprotocol_still_checked(self) -> None:
        class Anything(str):
            """Equal to any offer: the check "was it offered?" cannot stop it."""

            __hash__ = str.__hash__

            def __eq__(self, other: object) -> bool:
                return True

        evil = Anything("chat\r\nSet-Cookie: x")
        handshake = ServerHandshake(select_subprotocol=lambda offered: evil)
        request = RequestParser().feed(upgrade({b"Sec-WebSocket-Protocol": [b"chat"]}))
        assert request is not None
        with pytest.raises(ValueError) as exc_info:
            handshake.accept(request)
        assert str(exc_info.value) == f"invalid header value for Sec-WebSocket-Protocol: {evil!r}"

    def test_subprotocol_not_offered_still_negotiation_error(self) -> None:
        handshake = ServerHandshake(select_subprotocol=lambda offered: "other")
        request = RequestParser().feed(upgrade({b"Sec-WebSocket-Protocol": [b"chat"]}))
        assert request is not None
        with pytest.raises(NegotiationError):
            handshake.accept(request)


def test_accept_key_matches_base64() -> None:
    import base64
    import hashlib
    import os

    for _ in range(50):
        key = base64.b64encode(os.urandom(16)).decode()
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        assert accept_key(key) == base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------
# Properties: any request or response the parsers let through gets a verdict
# ---------------------------------------------------------------------------

# Header values that reach deep into the rules, and any text llhttp may accept.
field_values = st.one_of(
    st.sampled_from(
        [
            "",
            ",",
            "websocket",
            "WebSocket, h2c",
            "Upgrade",
            "keep-alive, upgrade",
            "13",
            "8, 13",
            RFC_KEY,
            RFC_ACCEPT,
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "chat",
            "chat, superchat",
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
            'permessage-deflate; client_max_window_bits="9", x-fake',
            "x-fake; reject, x-fake",
            "http://example.com",
        ]
    ),
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=30,
    ),
)
field_names = st.sampled_from(
    [
        "Host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "Origin",
    ]
)
# Some fields of the RFC's messages replaced, removed or repeated.
changes = st.dictionaries(field_names, st.lists(field_values, max_size=2), max_size=4)


def changed(data: bytes, replace: dict[str, list[str]]) -> bytes:
    """``data``, an HTTP message, with the fields named in ``replace`` set to its values."""
    head, _, _ = data.partition(b"\r\n\r\n")
    first, *lines = head.split(b"\r\n")
    names = {name.lower() for name in replace}
    kept = [line for line in lines if line.partition(b":")[0].decode().lower() not in names]
    added = [
        f"{name}: {value}".encode("latin-1") for name, values in replace.items() for value in values
    ]
    return b"\r\n".join([first, *kept, *added]) + b"\r\n\r\n"


SERVERS = [
    ServerHandshake(),
    ServerHandshake(
        origins=["http://example.com", None],
        subprotocols=["superchat", "chat"],
        extensions=[ServerPerMessageDeflateFactory(), FakeServerFactory()],
    ),
    ServerHandshake(select_subprotocol=lambda offered: offered[-1] if offered else None),
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(replace=changes, server=st.sampled_from(SERVERS))
def test_server_accepts_or_rejects_with_a_status(
    replace: dict[str, list[str]], server: ServerHandshake
) -> None:
    try:
        request = RequestParser().feed(changed(RFC_REQUEST, replace))
    except InvalidHandshake:
        return  # refused by the HTTP parser: tested in test_http11.py
    assert request is not None
    try:
        accepted = server.accept(request)
    except InvalidHandshake as exc:
        response = server.reject(exc)
        assert response.status == exc.status
        assert 400 <= response.status < 600
        assert response.serialize()
        return
    response = accepted.response
    assert response.status == 101
    assert response.headers["Sec-WebSocket-Accept"] == accept_key(
        request.headers["Sec-WebSocket-Key"]
    )
    # The 101 response the server sends parses back the same.
    parser = ResponseParser()
    assert parser.feed(response.serialize() + FRAME) == response
    assert parser.leftover == FRAME


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(replace=changes, status=st.sampled_from([b"101 Switching Protocols", b"403 Forbidden"]))
def test_client_accepts_or_fails_with_a_reason(
    replace: dict[str, list[str]], status: bytes
) -> None:
    client = ClientHandshake(
        host="server.example.com",
        subprotocols=["chat"],
        extensions=[ClientPerMessageDeflateFactory(), FakeClientFactory()],
    )
    data = RFC_RESPONSE.replace(RFC_ACCEPT.encode(), accept_key(client.key).encode())
    data = data.replace(b"101 Switching Protocols", status)
    try:
        response = ResponseParser().feed(changed(data, replace))
    except InvalidHandshake:
        return
    assert response is not None
    try:
        accepted = client.process_response(response)
    except InvalidHandshake as exc:
        assert str(exc)
        return
    assert response.status == 101
    assert accepted.subprotocol in (None, "chat")


# ---------------------------------------------------------------------------
# The C checks of the usual upgrade request (_speedups.accept_upgrade)
# ---------------------------------------------------------------------------

needs_c_checks = pytest.mark.skipif(
    handshake._accept_upgrade is None, reason="the C accelerator isn't in use"
)

#: Servers with an Origin check, extensions and subprotocols, negotiated in Python
#: after the C checks as after the Python ones.
USUAL_SERVERS = [
    ServerHandshake(),
    ServerHandshake(extensions=[ServerPerMessageDeflateFactory()], server_header=None),
    ServerHandshake(subprotocols=["chat"], server_header="edge"),
    ServerHandshake(origins=["http://example.com"], extensions=[FakeServerFactory()]),
]

#: The usual request, as a browser sends it (without Sec-WebSocket-Protocol).
USUAL_REQUEST = changed(
    RFC_REQUEST,
    {
        "Sec-WebSocket-Protocol": [],
        "Sec-WebSocket-Extensions": ["permessage-deflate; client_max_window_bits"],
        "User-Agent": ["test"],
    },
)


def accept_in_c(request: Request) -> str | None:
    """``_speedups.accept_upgrade``'s answer for ``request`` (unpacked headers)."""
    assert handshake._accept_upgrade is not None
    headers = request.headers
    assert headers._keys is not None
    return handshake._accept_upgrade(headers._keys, headers._list)


def outcome(server: ServerHandshake, request: Request, *, in_c: bool = True) -> object:
    """What ``server.accept(request)`` gives, with or without the C checks: the 101's
    bytes, fields and what was negotiated, or the error's type and message."""
    saved = handshake._accept_upgrade
    if not in_c:
        handshake._accept_upgrade = None
    try:
        accepted = server.accept(request)
    except InvalidHandshake as exc:
        return type(exc), str(exc)
    finally:
        handshake._accept_upgrade = saved
    response = accepted.response
    return (
        response.serialize(),
        response.headers.raw_items(),
        accepted.subprotocol,
        [type(extension) for extension in accepted.extensions],
    )


@needs_c_checks
class TestAcceptInC:
    def test_rfc_key(self) -> None:
        assert accept_in_c(make_request()) == RFC_ACCEPT

    @given(st.binary(min_size=16, max_size=16))
    def test_sha1_and_base64_as_hashlib(self, raw: bytes) -> None:
        key = base64.b64encode(raw).decode()
        assert accept_in_c(make_request(Sec_WebSocket_Key=key)) == accept_key(key)

    @pytest.mark.parametrize(
        "request_",
        [
            make_request(Upgrade="WebSocket"),
            make_request(Upgrade="h2c, websocket"),
            make_request(Upgrade=" ,websocket\t"),
            make_request(Connection="keep-alive, Upgrade"),
            make_request(Connection="UPGRADE"),
            make_request(Connection="upgrade,"),
            # Bits after the 16th byte: binascii's strict mode takes them too.
            make_request(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAAA/=="),
            make_request(Sec_WebSocket_Extensions="permessage-deflate"),
            make_request(Sec_WebSocket_Protocol="chat"),
            make_request(Origin="http://example.com"),
            make_request(Origin="http://example.org"),
            make_request(Host="h", User_Agent="x"),
        ],
    )
    @pytest.mark.parametrize("server", USUAL_SERVERS)
    def test_taken_in_c_with_the_same_answer(
        self, request_: Request, server: ServerHandshake
    ) -> None:
        assert accept_in_c(request_) is not None
        assert outcome(server, request_) == outcome(server, request_, in_c=False)

    @pytest.mark.parametrize(
        "request_",
        [
            # Valid, but for the Python checks.
            make_request(Connection=["keep-alive", "upgrade"]),
            make_request(Upgrade=["websocket", "h2c"]),
            make_request(Connection="Upgrade, \xe9"),  # not ASCII
            # Invalid: the Python checks say why.
            make_request(remove=["Host"]),
            make_request(Host=""),
            make_request(Host=["a", "a"]),
            make_request(remove=["Upgrade"]),
            make_request(Upgrade="websockets"),
            make_request(Connection="keep-alive"),
            make_request(Connection="up grade"),
            make_request(Sec_WebSocket_Key=RFC_KEY[:-1]),
            make_request(Sec_WebSocket_Key=RFC_KEY + "="),
            make_request(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAAA==="),
            make_request(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAAA-=="),
            make_request(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAAA\xe9=="),
            make_request(Sec_WebSocket_Key=[RFC_KEY, RFC_KEY]),
            make_request(Sec_WebSocket_Version="13 "),
            make_request(Sec_WebSocket_Version="8"),
            make_request(remove=["Sec-WebSocket-Version"]),
        ],
    )
    @pytest.mark.parametrize("server", USUAL_SERVERS)
    def test_left_to_python(self, request_: Request, server: ServerHandshake) -> None:
        assert accept_in_c(request_) is None
        assert outcome(server, request_) == outcome(server, request_, in_c=False)

    def test_not_for_other_methods_or_packed_headers(self) -> None:
        request = make_request(method="POST")
        assert accept_in_c(request) is not None  # the method is checked before
        assert outcome(ServerHandshake(), request) == (
            InvalidMethod,
            "unsupported HTTP method: POST (expected GET)",
        )
        packed = make_request()
        packed.headers.compact()
        assert outcome(ServerHandshake(), packed) == outcome(ServerHandshake(), make_request())

    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(replace=changes, server=st.sampled_from(USUAL_SERVERS))
    def test_same_answer_as_python(
        self, replace: dict[str, list[str]], server: ServerHandshake
    ) -> None:
        try:
            request = RequestParser().feed(changed(USUAL_REQUEST, replace))
        except InvalidHandshake:
            return  # refused by the HTTP parser
        assert request is not None
        assert outcome(server, request) == outcome(server, request, in_c=False)

    def test_argument_errors(self) -> None:
        accept_upgrade = handshake._accept_upgrade
        assert accept_upgrade is not None
        fields = [("Host", "a")]
        with pytest.raises(TypeError):
            accept_upgrade(("host",), fields)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            accept_upgrade(["host"], [("Host", "a", "b")])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            accept_upgrade(["host"], [("Host", b"a")])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            accept_upgrade([b"host"], fields)  # type: ignore[list-item]
        with pytest.raises(TypeError):
            accept_upgrade(["host"])  # type: ignore[call-arg]
        with pytest.raises(ValueError):
            accept_upgrade(["host", "upgrade"], fields)


@pytest.mark.parametrize(
    ("server", "request_"),
    [
        (ServerHandshake(server_header="edge"), make_request()),
        (
            ServerHandshake(subprotocols=["chat"], extensions=[ServerPerMessageDeflateFactory()]),
            make_request(
                Sec_WebSocket_Protocol="chat", Sec_WebSocket_Extensions="permessage-deflate"
            ),
        ),
    ],
)
def test_101_built_packed(server: ServerHandshake, request_: Request) -> None:
    # As a connection keeps it (Headers.compact): read and serialized the same.
    response = server.accept(request_).response
    assert response.headers.packed
    items = response.headers.raw_items()
    assert [name for name, _ in items][:3] == ["Upgrade", "Connection", "Sec-WebSocket-Accept"]
    unpacked = Headers(items)
    assert response.headers == unpacked
    assert response.serialize() == (
        b"HTTP/1.1 101 Switching Protocols\r\n" + unpacked.serialize() + b"\r\n"
    )
