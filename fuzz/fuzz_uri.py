"""Fuzz the WebSocket URI parser, ``parse_uri``, and the client request built on it.

Input: ``uri...`` (UTF-8, undecodable bytes replaced)

Checks:

- ``parse_uri`` raises only ``InvalidURI``;
- a URI it accepts makes a client handshake (``ClientHandshake.from_uri``) whose
  request serializes and is parsed back by ``RequestParser`` with the same Host
  and path, and that ``ServerHandshake.accept()`` accepts;
- ``ws://`` + Host + path parses back to the same host, port and path.
"""

from __future__ import annotations

from _common import exceptions, http, run


def test_one_input(data: bytes) -> None:
    uri = data.decode("utf-8", "replace")
    try:
        wsuri = http.parse_uri(uri)
    except exceptions.InvalidURI:
        return
    assert 0 <= wsuri.port <= 65535, wsuri
    client = http.ClientHandshake.from_uri(wsuri)
    wire = client.request.serialize()
    parser = http.RequestParser()
    request = parser.feed(wire)
    assert request is not None and parser.leftover == b""
    assert request.path == wsuri.path, (request.path, wsuri)
    assert request.headers["Host"] == wsuri.host_header, (request.headers, wsuri)
    http.ServerHandshake().accept(request)

    scheme = "wss" if wsuri.secure else "ws"
    again = http.parse_uri(f"{scheme}://{wsuri.host_header}{wsuri.path}")
    assert (again.host, again.port, again.path) == (wsuri.host, wsuri.port, wsuri.path), again


if __name__ == "__main__":
    run(test_one_input)
