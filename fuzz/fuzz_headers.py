"""Fuzz the header-value grammar: Sec-WebSocket-Extensions, Sec-WebSocket-Protocol,
and the permessage-deflate negotiation built on it.

Input: ``flags value...`` (``value`` decoded as ISO-8859-1, as the HTTP parser does)

- ``flags`` bits 0-1, the target: 0 ``parse_extension_header``, 1
  ``parse_subprotocol_header``, 2 the server's negotiation of each offer, 3 the
  client's check of each answer; bit 2: ``value`` is split at LF into several
  header lines (a sequence of values); bit 3: negotiation with non-default
  settings (``OTHER_SETTINGS``).

Checks:

- parsing raises only ``InvalidHeader``, negotiation only ``NegotiationError``;
- parse, serialize, parse again gives the same value (every name and parameter
  value parsed is a token, so serializing never raises);
- an answer of the server serializes and is a valid permessage-deflate answer
  (it parses and builds a codec, as the client would).
"""

from __future__ import annotations

from _common import deflate, exceptions, http, run

#: Settings unlike both defaults: a window asked of the peer, no context takeover.
OTHER_SETTINGS = deflate.DeflateSettings(
    window_bits=11,
    memory_level=8,
    context_takeover=False,
    peer_window_bits=10,
    peer_context_takeover=False,
    threshold=0,
)


def parse_extensions(value: str | list[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    try:
        parsed = http.parse_extension_header(value)
    except exceptions.InvalidHeader:
        return []
    assert parsed, value
    serialized = http.serialize_extension_header(parsed)
    assert http.parse_extension_header(serialized) == parsed, (value, serialized)
    return parsed


def test_one_input(data: bytes) -> None:
    if len(data) < 1:
        return
    flags, text = data[0], data[1:].decode("latin-1")
    value: str | list[str] = text.split("\n") if flags & 4 else text
    target = flags & 3

    if target == 1:
        try:
            parsed = http.parse_subprotocol_header(value)
        except exceptions.InvalidHeader:
            return
        assert parsed, value
        serialized = http.serialize_subprotocol_header(parsed)
        assert http.parse_subprotocol_header(serialized) == parsed, (value, serialized)
        return

    offers = parse_extensions(value)
    if target == 0:
        return
    settings = OTHER_SETTINGS if flags & 8 else None
    for _, params in offers:
        if target == 2:
            server = deflate.ServerPerMessageDeflateFactory(settings or deflate.SERVER_DEFAULTS)
            try:
                answer, _ = server.process_request_params(params, [])
            except exceptions.NegotiationError:
                continue
            header = http.serialize_extension_header([("permessage-deflate", answer)])
            ((_, reparsed),) = http.parse_extension_header(header)
            # A client that keeps its defaults takes any answer but client_max_window_bits=8
            # (zlib can't compress with 8, see deflate.py).
            client = deflate.ClientPerMessageDeflateFactory(
                deflate.DeflateSettings(window_bits=15, memory_level=8)
            )
            try:
                client.process_response_params(reparsed, [])
            except exceptions.NegotiationError:
                assert ("client_max_window_bits", "8") in reparsed, (params, reparsed)
        else:
            client = deflate.ClientPerMessageDeflateFactory(settings or deflate.CLIENT_DEFAULTS)
            try:
                client.process_response_params(params, [])
            except exceptions.NegotiationError:
                continue


if __name__ == "__main__":
    run(test_one_input)
