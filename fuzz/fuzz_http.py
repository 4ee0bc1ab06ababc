"""Fuzz the HTTP/1.1 parsers of the opening handshake and what consumes them.

``RequestParser`` then ``ServerHandshake.accept()`` (server side), or
``ResponseParser`` then ``ClientHandshake.process_response()`` (client side).

Input: ``flags seed data...``

- ``flags`` bit 0: parse a response (a request otherwise); bit 1: small size
  limits (``SMALL``) instead of the defaults; bits 2-5, for a request, the server's
  configuration: an Origin allow-list, subprotocols, permessage-deflate, a
  ``select_subprotocol`` callback.
- ``seed``: how ``data`` is cut into ``feed()`` calls (``_common.split``).

Checks:

- the parsers, ``accept()`` and ``process_response()`` raise only
  ``InvalidHandshake`` subclasses; a parser raises the same error again on the
  next ``feed()``;
- feeding ``data`` whole and in chunks gives the same message (method, path,
  status, reason, fields, body) and the same ``leftover``, or the same error;
  the one documented exception: input that breaks both a size limit and the HTTP
  grammar may report either (``HeadersTooLarge`` against ``InvalidMessage`` or
  ``InvalidHTTPVersion``); two ``HeadersTooLarge`` name the same limit whatever
  the cut (they didn't before ``_HTTPParser._first_broken``);
- a rejected request gets an error response that serializes, with the status of
  the exception; an accepted one gets a 101 that serializes, parses back to
  itself and carries the right ``Sec-WebSocket-Accept``.
"""

from __future__ import annotations

from typing import Any

from _common import deflate, exceptions, http, run, split

SMALL = {"max_request_line": 64, "max_header_line": 64, "max_headers": 4, "max_headers_size": 256}
#: The key of RFC 6455 section 1.3, so that seeds of valid 101 responses are accepted.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="

InvalidHandshake = exceptions.InvalidHandshake
GRAMMAR = (exceptions.InvalidMessage, exceptions.InvalidHTTPVersion)


def make_parser(flags: int) -> Any:
    limits: dict[str, int] = dict(SMALL) if flags & 2 else {}
    if flags & 1:
        if limits:
            limits["max_body_size"] = 16
        return http.ResponseParser(**limits)
    return http.RequestParser(**limits)


def summary(message: Any, leftover: bytes) -> tuple[Any, ...]:
    if isinstance(message, http.Request):
        return ("request", message.method, message.path, message.headers.raw_items(), leftover)
    return (
        "response",
        message.status,
        message.reason_phrase,
        message.headers.raw_items(),
        message.body,
        leftover,
    )


def parse(flags: int, chunks: list[bytes]) -> tuple[Any, Any]:
    """``(message, summary)`` or ``(None, (error type, message))``."""
    parser = make_parser(flags)
    for i, chunk in enumerate(chunks):
        try:
            message = parser.feed(chunk)
        except InvalidHandshake as exc:
            try:
                parser.feed(b"\r\n")
            except InvalidHandshake as again:
                assert again is exc, (again, exc)
            else:
                raise AssertionError("a parser that failed accepted more input") from exc
            return None, (type(exc), str(exc))
        if message is not None:
            leftover = parser.leftover
            # The bytes after a request or a 101 are kept, after another response not.
            if not isinstance(message, http.Response) or message.status == 101:
                leftover += b"".join(chunks[i + 1 :])
            else:
                assert leftover == b"", leftover
            return message, summary(message, leftover)
    return None, None


def check_request(flags: int, request: Any) -> None:
    handshake = http.ServerHandshake(
        origins=["https://example.com", None] if flags & 4 else None,
        subprotocols=["chat", "superchat"] if flags & 8 else None,
        extensions=[deflate.ServerPerMessageDeflateFactory()] if flags & 16 else (),
        select_subprotocol=(lambda offered: offered[-1]) if flags & 32 else None,
    )
    try:
        accepted = handshake.accept(request)
    except InvalidHandshake as exc:
        response = handshake.reject(exc)
        assert response.status == exc.status
        response.serialize()
        return
    response = accepted.response
    assert response.status == 101
    wire = response.serialize()
    parser = http.ResponseParser()
    parsed = parser.feed(wire)
    assert parsed is not None and parser.leftover == b""
    assert parsed.headers.raw_items() == response.headers.raw_items()
    key = request.headers["Sec-WebSocket-Key"]
    assert parsed.headers["Sec-WebSocket-Accept"] == http.accept_key(key)


def check_response(response: Any) -> None:
    client = http.ClientHandshake(
        host="example.com",
        subprotocols=["chat", "superchat"],
        extensions=[deflate.ClientPerMessageDeflateFactory()],
    )
    client.key = KEY
    try:
        accepted = client.process_response(response)
    except InvalidHandshake:
        return
    assert accepted.subprotocol in (None, "chat", "superchat"), accepted
    assert len(accepted.extensions) <= 1, accepted


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, seed, body = data[0], data[1], data[2:]
    message, whole = parse(flags, [body])
    _, chunked = parse(flags, split(body, seed))
    if whole != chunked:
        errors = [r[0] for r in (whole, chunked) if r is not None and isinstance(r[0], type)]
        documented = (
            len(errors) == 2
            and any(issubclass(e, exceptions.HeadersTooLarge) for e in errors)
            and any(issubclass(e, GRAMMAR) for e in errors)
        )
        assert documented, (whole, chunked)
    if message is None:
        return
    if flags & 1:
        check_response(message)
    else:
        check_request(flags, message)


if __name__ == "__main__":
    run(test_one_input)
