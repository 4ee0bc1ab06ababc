"""Write the seed corpora, ``fuzz/corpus/<target>/<name>``, from the examples below.

The corpora are committed; run this after changing it (``python fuzz/make_seeds.py``)
and commit the result. It overwrites its own files and leaves others (a seed added by
hand, such as a minimized crash) in place; ``tests/fuzz`` checks that the committed
files match it. Each seed starts with the settings bytes its harness reads
(see the harness docstring and ``fuzz/README.md``); masked frames use the masking
key of RFC 6455 section 5.7 so that the output is the same on every run.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
KEY = b"\x37\xfa\x21\x3d"  # RFC 6455 section 5.7


def mask(data: bytes, key: bytes = KEY) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def frame(
    opcode: int,
    data: bytes,
    *,
    fin: bool = True,
    masked: bool = False,
    rsv1: bool = False,
    length: int | None = None,
) -> bytes:
    """A frame, with ``length`` in the header if given (a lie, for bad frames)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(data) if length is None else length
    bit = 0x80 if masked else 0
    if n < 126:
        header = bytes([first, bit | n])
    elif n < 65536:
        header = bytes([first, bit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, bit | 127]) + struct.pack("!Q", n)
    return header + KEY + mask(data) if masked else header + data


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def deflate_message(data: bytes, wbits: int = 15) -> bytes:
    """``data`` compressed as one permessage-deflate message (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


# RFC 7692 section 7.2.3: payloads of "Hello".
HELLO_DEFLATE = bytes.fromhex("f248cdc9c90700")  # 7.2.3.1
HELLO_AGAIN = bytes.fromhex("f200110000")  # 7.2.3.2, with context takeover
HELLO_STORED = bytes.fromhex("000500faff48656c6c6f00")  # 7.2.3.3
HELLO_BFINAL = bytes.fromhex("f348cdc9c9070000")  # 7.2.3.4 (note: BFINAL set)
HELLO_TWO_BLOCKS = bytes.fromhex("f2480500000000ffffcac9c90700")  # 7.2.3.5
HELLO_FRAGMENTS = (bytes.fromhex("f248cd"), bytes.fromhex("c9c90700"))  # 7.2.3.1
EMPTY_DEFLATE = b"\x00"  # 7.2.3.6: an empty message

UTF8_VALID = {
    "ascii": b"Hello, world",
    "empty": b"",
    "latin1-range": "héllo wörld".encode(),
    "cjk": "日本語のテキスト".encode(),
    "emoji": "😀👍🏽🇫🇷".encode(),
    "boundaries": "\x00\x7f\x80\u07ff\u0800\uffff\U00010000\U0010ffff".encode(),
    "bom": "\ufeffbom".encode(),
    "kuhn-greek": "κόσμε".encode(),
    "noncharacters": "\ufffe\uffff\U0001fffe".encode(),
}
UTF8_INVALID = {
    "lone-continuation": b"ab\x80cd",
    "overlong-2": b"\xc0\x80",
    "overlong-3": b"\xe0\x80\x80",
    "overlong-4": b"\xf0\x80\x80\x80",
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "ff": b"ok\xff",
    "truncated-at-end": "κόσμε".encode() + b"\xe2\x82",
    "truncated-then-ascii": b"\xe2\x82a",
    "autobahn-6.4.1": "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited",
}

REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)


def frames_seeds() -> dict[str, bytes]:
    # flags: bit 0 mask, bit 1 max_size, bits 2+: index in MAX_SIZES; then the split seed.
    seeds = {
        "rfc6455-5.7-unmasked-hello": b"\x00\x01" + bytes.fromhex("810548656c6c6f"),
        "rfc6455-5.7-masked-hello": b"\x01\x02" + bytes.fromhex("818537fa213d7f9f4d5158"),
        "rfc6455-5.7-fragmented": b"\x00\x00" + bytes.fromhex("010348656c80026c6f"),
        "rfc6455-5.7-ping": b"\x00\x03" + bytes.fromhex("890548656c6c6f"),
        "rfc6455-5.7-masked-pong": b"\x01\x00" + bytes.fromhex("8a8537fa213d7f9f4d5158"),
        "rfc6455-5.7-256-binary": b"\x00\x05" + frame(2, bytes(range(256))),
        "rfc6455-5.7-64k-header": b"\x00\x06" + frame(2, b"", length=65536) + b"\x00" * 8,
        "max-size-125-exceeded": b"\x0f\x07" + frame(2, b"x" * 126, masked=True),
        "max-size-0-empty": b"\x03\x01" + frame(1, b"", masked=True),
        "msb-length": b"\x00\x01" + bytes([0x82, 127]) + b"\x80" + b"\x00" * 7,
        "reserved-opcode-3": b"\x00\x01" + frame(3, b"x"),
        "reserved-opcode-b": b"\x00\x01" + frame(11, b""),
        "long-ping": b"\x00\x01" + frame(9, b"p" * 126),
        "fragmented-ping": b"\x00\x01" + frame(9, b"p", fin=False),
        "client-unmasked": b"\x01\x01" + frame(1, b"hi"),
        "server-masked": b"\x00\x01" + frame(1, b"hi", masked=True),
        "rsv-bits": b"\x00\x02" + bytes([0xF1, 0x01]) + b"a",
        "truncated": b"\x01\x02" + frame(2, b"abcdef", masked=True)[:-2],
        # Over 2048 bytes: unmasked from a memoryview rather than a copy.
        "masked-3000-binary": b"\x01\x01" + frame(2, bytes(range(250)) * 12, masked=True),
    }
    for opcode, name, data in (
        (0, "cont", b"more"),
        (1, "text", "héllo".encode()),
        (2, "binary", b"\x00\xff" * 10),
        (8, "close", close_payload(1000, b"bye")),
        (9, "ping", b"ping"),
        (10, "pong", b""),
    ):
        seeds[f"{name}-unmasked"] = b"\x00\x02" + frame(opcode, data)
        seeds[f"{name}-masked"] = b"\x01\x03" + frame(opcode, data, masked=True)
    seeds["several-frames"] = b"\x01\x01" + b"".join(
        frame(op, b"abc", masked=True, fin=op != 1) for op in (1, 9, 0, 10)
    )
    return seeds


def connection_seeds() -> dict[str, bytes]:
    # flags: bit 0 deflate, bit 1 stream_fragments, bit 2 client, bits 3-5 max_size;
    # then the split seed, then ext (bits 0-2: window bits - 8, bit 3: no context takeover).
    server = b"\x00\x01\x07"
    deflate = b"\x01\x02\x07"

    def m(opcode: int, data: bytes, **kw: bool) -> bytes:
        return frame(opcode, data, masked=True, **kw)

    return {
        "text": server + m(1, b"Hello"),
        "binary": server + m(2, b"\x00\x01\x02"),
        "fragmented-text": server + m(1, b"Hel", fin=False) + m(0, b"lo"),
        "fragmented-streamed": b"\x02\x00\x07" + m(1, b"Hel", fin=False) + m(0, b"lo"),
        "ping-pong": server + m(9, b"ping") + m(10, b"pong"),
        "ping-between-fragments": server + m(1, b"a", fin=False) + m(9, b"") + m(0, b"b"),
        "close-1000": server + m(8, close_payload(1000, b"bye")),
        "close-empty": server + m(8, b""),
        "close-3000": server + m(8, close_payload(3000)),
        "close-999": server + m(8, close_payload(999)),
        "close-1005": server + m(8, close_payload(1005)),
        "close-1-byte": server + m(8, b"\x03"),
        "close-bad-utf8": server + m(8, close_payload(1000, b"\xff")),
        "frames-after-close": server + m(8, b"") + m(1, b"late"),
        "invalid-utf8": server + m(1, b"\xc0\x80"),
        "invalid-utf8-fragment": server + m(1, b"\xe2\x82", fin=False) + m(0, b"\x28"),
        "rsv1-no-extension": server + m(1, b"x", rsv1=True),
        "cont-without-start": server + m(0, b"x"),
        "text-during-fragment": server + m(1, b"a", fin=False) + m(1, b"b"),
        "max-size-16-exceeded": b"\x18\x01\x07" + m(2, b"x" * 17),
        "max-size-16-fragments": b"\x18\x00\x07" + m(2, b"x" * 10, fin=False) + m(0, b"y" * 7),
        "client-unmasked-text": b"\x04\x01\x07" + frame(1, b"Hello"),
        "client-ping": b"\x04\x01\x07" + frame(9, b"x"),
        "deflate-rfc7692-hello": deflate + m(1, HELLO_DEFLATE, rsv1=True),
        "deflate-rfc7692-twice": deflate
        + m(1, HELLO_DEFLATE, rsv1=True)
        + m(1, HELLO_AGAIN, rsv1=True),
        "deflate-rfc7692-stored": deflate + m(1, HELLO_STORED, rsv1=True),
        "deflate-rfc7692-bfinal": deflate + m(1, HELLO_BFINAL, rsv1=True),
        "deflate-rfc7692-two-blocks": deflate + m(1, HELLO_TWO_BLOCKS, rsv1=True),
        "deflate-rfc7692-fragmented": deflate
        + m(1, HELLO_FRAGMENTS[0], rsv1=True, fin=False)
        + m(0, HELLO_FRAGMENTS[1]),
        "deflate-empty": deflate + m(2, EMPTY_DEFLATE, rsv1=True),
        "deflate-uncompressed": deflate + m(1, b"plain"),
        "deflate-rsv1-on-cont": deflate + m(1, b"a", fin=False) + m(0, b"b", rsv1=True),
        "deflate-rsv1-on-ping": deflate + m(9, b"", rsv1=True),
        "deflate-corrupt": deflate + m(2, b"\xff\xff\xff", rsv1=True),
        "deflate-bomb-max-16": b"\x19\x01\x07" + m(2, deflate_message(b"\x00" * 5000), rsv1=True),
        "deflate-window-8": b"\x01\x01\x00" + m(1, deflate_message(b"abc" * 200, 9), rsv1=True),
    }


def utf8_seeds() -> dict[str, bytes]:
    # flags: bit 0 stream, bit 1 close reason, bit 2 deflate, bit 3 empty final; split seed.
    seeds = {}
    for i, (name, payload) in enumerate({**UTF8_VALID, **UTF8_INVALID}.items()):
        seeds[name] = bytes([i % 16, i % 4]) + payload
    seeds["bytewise-emoji-streamed"] = b"\x01\x00" + UTF8_VALID["emoji"]
    seeds["close-reason-valid"] = b"\x02\x01" + UTF8_VALID["cjk"]
    seeds["close-reason-invalid"] = b"\x02\x01" + UTF8_INVALID["surrogate-high"]
    seeds["compressed-fragments"] = b"\x05\x02" + UTF8_VALID["latin1-range"] * 3
    return seeds


def deflate_seeds() -> dict[str, bytes]:
    # flags: bit 0 mode (1: compress first), bits 1-3 window bits - 8, bit 4 no context
    # takeover, bits 5-7 max_size; then the split seed and the frames per message - 1.
    w15 = 7 << 1
    return {
        "rfc7692-7.2.3.1-hello": bytes([w15, 255, 0]) + HELLO_DEFLATE,
        "rfc7692-7.2.3.1-fragmented": bytes([w15, 3, 1]) + b"".join(HELLO_FRAGMENTS),
        "rfc7692-7.2.3.2-twice": bytes([w15, 7, 0]) + HELLO_DEFLATE + HELLO_AGAIN,
        "rfc7692-7.2.3.3-stored": bytes([w15, 255, 0]) + HELLO_STORED,
        "rfc7692-7.2.3.4-bfinal": bytes([w15, 255, 0]) + HELLO_BFINAL,
        "rfc7692-7.2.3.5-two-blocks": bytes([w15, 255, 0]) + HELLO_TWO_BLOCKS,
        "rfc7692-7.2.3.6-empty": bytes([w15, 255, 0]) + EMPTY_DEFLATE,
        "no-context-takeover": bytes([w15 | 16, 7, 0]) + HELLO_DEFLATE + HELLO_DEFLATE,
        "window-8": bytes([0, 255, 0]) + deflate_message(b"abcabc" * 100, 9),
        "window-9-far-reference": bytes([2, 255, 0])
        + deflate_message(bytes(range(256)) * 3 + bytes(range(256)), 15),
        "bomb-max-1000": bytes([w15 | (5 << 5), 255, 0]) + deflate_message(b"\x00" * 100000),
        "bomb-max-0": bytes([w15 | (1 << 5), 255, 0]) + deflate_message(b"a"),
        "corrupt": bytes([w15, 255, 0]) + b"\xff\xff\xff\xff",
        "roundtrip-text": bytes([w15 | 1, 5, 2]) + b"Hello, hello, hello " * 5,
        "roundtrip-binary-small-window": bytes([(1 << 1) | 1, 9, 7]) + bytes(range(256)) * 2,
        "roundtrip-no-context-takeover": bytes([w15 | 16 | 1, 6, 0]) + b"abcabcabc" * 10,
        "roundtrip-max-100": bytes([w15 | 1 | (4 << 5), 0, 3]) + b"z" * 300,
        "roundtrip-empty": bytes([w15 | 1, 1, 0]),
    }


def http_seeds() -> dict[str, bytes]:
    # flags: bit 0 response, bit 1 small limits, bits 2-5 server config; split seed.
    deflate_request = REQUEST.replace(
        b"\r\n\r\n",
        b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    )
    return {
        "rfc6455-1.2-request": b"\x00\x01" + REQUEST,
        "rfc6455-1.2-request-bytewise": b"\x00\x00" + REQUEST,
        "request-all-options": b"\x3c\x05" + deflate_request,
        "request-deflate-pipelined-frame": b"\x10\x02"
        + deflate_request
        + frame(1, HELLO_DEFLATE, masked=True, rsv1=True),
        "request-small-limits": b"\x02\x01" + REQUEST,
        "request-minimal": b"\x00\x03"
        + b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n"
        b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "request-healthz": b"\x00\x01GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "request-http10": b"\x00\x01GET / HTTP/1.0\r\n\r\n",
        "request-post-body": b"\x00\x01POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        "request-chunked": b"\x00\x01GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "request-bare-lf": b"\x00\x02GET / HTTP/1.1\nHost: a\n\n",
        "request-obs-fold": b"\x00\x02GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
        "request-rtsp": b"\x00\x01OPTIONS * RTSP/1.0\r\n\r\n",
        "request-long-line-small-limits": b"\x02\x01GET /" + b"a" * 80 + b" HTTP/1.1\r\n\r\n",
        "request-many-headers": b"\x02\x01GET / HTTP/1.1\r\n" + b"X: y\r\n" * 6 + b"\r\n",
        "request-two-keys": b"\x00\x01"
        + REQUEST.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
        "request-bad-key": b"\x00\x01" + REQUEST.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"abc"),
        "request-version-8": b"\x00\x01" + REQUEST.replace(b"Version: 13", b"Version: 8"),
        "request-bad-origin": b"\x04\x01" + REQUEST.replace(b"example.com", b"evil.com"),
        "request-no-subprotocol-match": b"\x08\x01" + REQUEST.replace(b"chat, superchat", b"x"),
        "request-bad-extension-header": b"\x10\x01"
        + REQUEST.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: ;;\r\n\r\n"),
        "rfc6455-1.3-response": b"\x01\x01" + RESPONSE,
        "response-bytewise-leftover": b"\x01\x00" + RESPONSE + frame(1, b"hi"),
        "response-deflate": b"\x01\x02"
        + RESPONSE.replace(
            b"\r\n\r\n",
            b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12;"
            b" client_max_window_bits=12\r\n\r\n",
        ),
        "response-400-body": b"\x01\x01HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nhello",
        "response-403-chunked": b"\x03\x03HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n5\r\nhello\r\n0\r\n\r\n",
        "response-204": b"\x01\x01HTTP/1.1 204 No Content\r\n\r\n",
        "response-eof-body": b"\x01\x01HTTP/1.1 500 Oops\r\n\r\nbody until close",
        "response-http10": b"\x01\x01HTTP/1.0 101 Switching Protocols\r\n\r\n",
        "response-wrong-accept": b"\x01\x01" + RESPONSE.replace(b"s3pP", b"AAAA"),
        # A finding (tests/protocol/test_fuzz_findings.py): the next message's body.
        "finding-body-then-next-response": b"\x01\x00HTTP/1.1 400 Bad Request\r\n"
        b"Content-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxy",
    }


def headers_seeds() -> dict[str, bytes]:
    # flags: bits 0-1 target (0 extensions, 1 subprotocols, 2 server, 3 client),
    # bit 2 several lines (split at LF), bit 3 other settings.
    extensions = [
        b"permessage-deflate",
        b"permessage-deflate; client_max_window_bits",
        b"permessage-deflate; client_max_window_bits; server_max_window_bits=10",
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        b'permessage-deflate; server_max_window_bits="10", permessage-deflate',
        b"permessage-deflate; client_max_window_bits=8",
        b"permessage-deflate; server_max_window_bits=8",
        b"permessage-deflate; server_max_window_bits=015",
        b"permessage-deflate; unknown_param",
        b"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        b"x-webkit-deflate-frame, foo; bar=baz",
        b" , permessage-deflate ,, ",
        b'ext; p="a\\b"',
        b'ext; p="not a token"',
        b"ext;",
        b"",
    ]
    subprotocols = [
        b"chat, superchat",
        b"graphql-ws",
        b"v10.stomp, v11.stomp, v12.stomp",
        b",",
        b"a b",
    ]
    seeds = {}
    for i, value in enumerate(extensions):
        seeds[f"extensions-{i:02d}"] = bytes([0]) + value
        seeds[f"server-{i:02d}"] = bytes([2 | (8 if i % 2 else 0)]) + value
    for i, value in enumerate(subprotocols):
        seeds[f"subprotocols-{i}"] = bytes([1]) + value
    seeds["client-answer-default"] = b"\x03permessage-deflate; server_max_window_bits=12"
    seeds["client-answer-all"] = (
        b"\x0bpermessage-deflate; server_no_context_takeover; client_no_context_takeover;"
        b" server_max_window_bits=9; client_max_window_bits=9"
    )
    seeds["several-lines"] = b"\x04permessage-deflate\nx-foo; a=1\n"
    return seeds


def uri_seeds() -> dict[str, bytes]:
    uris = {
        "localhost": "ws://localhost",
        "port-80": "ws://localhost:80/",
        "wss": "wss://example.com",
        "port-query": "wss://example.com:8443/chat?room=1&x",
        "upper-case": "WS://EXAMPLE.com/A",
        "ipv6": "ws://[::1]:8080/",
        "ipv6-zone": "ws://[fe80::1%25eth0]/",
        "ipv4": "ws://127.0.0.1:1234/a%20b/%2F",
        "non-ascii-path": "ws://a/\u00e9 b?q=\u00e9",
        "idna": "ws://b\u00fccher.example/",
        "user-info": "ws://user:pass@a/",
        "http": "http://example.com/",
        "fragment": "ws://example.com/#frag",
        "no-host": "ws:///path",
        "bad-port": "ws://example.com:99999/",
        "user-without-password": "ws://user@example.com/",
        "bracket": "ws://[::1/",
        "control-in-host": "ws://a\x00b/",
    }
    seeds = {name: uri.encode() for name, uri in uris.items()}
    seeds["not-utf8"] = b"ws://\xff.example/"  # decoded as U+FFFD by the harness
    return seeds


def all_seeds() -> dict[str, dict[str, bytes]]:
    """The seeds of each harness: ``{target: {file name: content}}``."""
    return {
        "frames": frames_seeds(),
        "connection": connection_seeds(),
        "utf8": utf8_seeds(),
        "deflate": deflate_seeds(),
        "http": http_seeds(),
        "headers": headers_seeds(),
        "uri": uri_seeds(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS, help="default: fuzz/corpus")
    args = parser.parse_args()
    for target, seeds in all_seeds().items():
        directory = args.out / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
        print(f"{directory}: {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
