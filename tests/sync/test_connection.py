"""The threaded connection: limits (1009, 1007), fragments, concurrency, backpressure,
and the message assembler on its own."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
import websockets.exceptions
import websockets.sync.client

import wsharbor
from wsharbor.exceptions import ConcurrencyError
from wsharbor.protocol.frames import Opcode
from wsharbor.sync.client import connect
from wsharbor.sync.messages import Assembler
from wsharbor.sync.server import ServerConnection

from .conftest import HOST, TIMEOUT, RawServer, run_in_thread, sync_server, uri_of

# Limits.


def test_server_max_size_closes_with_1009() -> None:
    seen: list[Any] = []

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except wsharbor.ConnectionClosed as exc:
            seen.append(exc)

    with sync_server(handler, max_size=1000) as server:
        with websockets.sync.client.connect(uri_of(server)) as websocket:
            websocket.send(b"\x00" * 2000)
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
                websocket.recv(timeout=TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert isinstance(seen[0], wsharbor.ConnectionClosedError)
    assert seen[0].sent is not None and seen[0].sent.code == 1009
    assert isinstance(seen[0].__cause__, wsharbor.PayloadTooBig)


def test_client_max_size_closes_with_1009() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.send("x" * 5000)
        websocket.recv()

    with sync_server(handler) as server:
        websocket = connect(uri_of(server), max_size=4096)
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.sent is not None and info.value.sent.code == 1009


def test_max_size_applies_to_fragmented_and_compressed_messages() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.send(["a" * 600, "b" * 600])  # 1200 bytes in two frames
        websocket.recv()

    for compression in ("deflate", None):
        with sync_server(handler, compression=compression) as server:
            websocket = connect(uri_of(server), max_size=1000)
            with pytest.raises(wsharbor.ConnectionClosedError) as info:
                websocket.recv(timeout=TIMEOUT)
        assert info.value.sent is not None and info.value.sent.code == 1009


def test_max_size_tuple_limits_frames_too() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.send(["a" * 100] * 5)  # 500 bytes in frames of 100
        websocket.send(["b" * 300, "c"])  # a frame of 300 bytes
        websocket.recv()

    with sync_server(handler) as server:
        websocket = connect(uri_of(server), max_size=(1000, 200))
        assert websocket.recv(timeout=TIMEOUT) == "a" * 500
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.sent is not None and info.value.sent.code == 1009


def test_invalid_utf8_closes_with_1007() -> None:
    seen: list[Any] = []

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except wsharbor.ConnectionClosed as exc:
            seen.append(exc)

    with sync_server(handler) as server:
        with websockets.sync.client.connect(uri_of(server)) as websocket:
            websocket.send(b"\xff\xfe", text=True)  # a text frame that isn't UTF-8
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
                websocket.recv(timeout=TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
    assert seen[0].sent.code == 1007


def test_invalid_utf8_from_the_server_closes_with_1007() -> None:
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None, close_timeout=0.2)
        raw.send_frame(Opcode.TEXT, b"ok")
        assert websocket.recv(timeout=TIMEOUT) == "ok"
        raw.send_frame(Opcode.TEXT, b"\xc3", fin=False)
        raw.send_frame(Opcode.CONT, b"\x28")  # an invalid continuation byte
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
        assert info.value.sent is not None and info.value.sent.code == 1007
        close = raw.recv_frame()
        assert close.opcode is Opcode.CLOSE and close.data[:2] == b"\x03\xef"


def test_decode_true_on_invalid_utf8_binary_closes_with_1007() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.send(b"\xff")
        websocket.recv()

    with sync_server(handler) as server:
        websocket = connect(uri_of(server))
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT, decode=True)
    assert info.value.sent is not None and info.value.sent.code == 1007


def test_protocol_error_from_the_peer_closes_with_1002() -> None:
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None, close_timeout=0.2)
        raw.send_frame(Opcode.CONT, b"no message in progress")
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.sent is not None and info.value.sent.code == 1002
    assert isinstance(info.value.__cause__, wsharbor.ProtocolError)


def test_peer_dropping_tcp_is_1006() -> None:
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None)
        assert raw.accepted.wait(TIMEOUT) and raw.conn is not None
        raw.conn.shutdown(socket.SHUT_RDWR)
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.code == 1006 and info.value.rcvd is None
    assert websocket.close_code == 1006


# Fragments.


def test_fragmented_send_and_recv_streaming() -> None:
    fragments: list[list[Any]] = []

    def handler(websocket: ServerConnection) -> None:
        fragments.append(list(websocket.recv_streaming()))
        fragments.append(list(websocket.recv_streaming(decode=False)))
        fragments.append(list(websocket.recv_streaming()))
        websocket.send("done")

    with sync_server(handler, compression=None) as server, connect(uri_of(server)) as websocket:
        websocket.send(["con", "ti", "nued"])
        websocket.send(["é", "t", "é"])
        websocket.send(iter([b"\x01", b"\x02", b"\x03"]))
        assert websocket.recv(timeout=TIMEOUT) == "done"
    assert fragments == [
        ["con", "ti", "nued"],
        ["é".encode(), b"t", "é".encode()],
        [b"\x01", b"\x02", b"\x03"],
    ]


def test_recv_streaming_decodes_utf8_split_across_frames() -> None:
    emoji = "😀".encode()
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None, close_timeout=0.2)
        raw.send_frame(Opcode.BINARY, emoji[:2], fin=False)
        raw.send_frame(Opcode.CONT, emoji[2:])
        assert "".join(websocket.recv_streaming(decode=True)) == "😀"
        raw.send_frame(Opcode.TEXT, emoji[:1], fin=False)
        raw.send_frame(Opcode.CONT, emoji[1:])
        assert "".join(websocket.recv_streaming()) == "😀"


def test_error_inside_a_fragmented_send_fails_the_connection() -> None:
    def chunks() -> Any:
        yield "first"
        yield "second"
        raise RuntimeError("the producer failed")

    seen: list[Any] = []

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except wsharbor.ConnectionClosed as exc:
            seen.append(exc)

    with sync_server(handler) as server:
        websocket = connect(uri_of(server))
        with pytest.raises(RuntimeError, match="producer"):
            websocket.send(chunks())
        with pytest.raises(wsharbor.ConnectionClosedError):
            websocket.send("after")
    assert seen[0].code == 1011


# Concurrency.


def test_recv_while_a_stream_is_unfinished_is_a_concurrency_error() -> None:
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None, close_timeout=0.2)
        raw.send_frame(Opcode.TEXT, b"part 1", fin=False)
        stream = websocket.recv_streaming()
        assert next(stream) == "part 1"
        with pytest.raises(ConcurrencyError):
            websocket.recv(timeout=0)
        with pytest.raises(ConcurrencyError):
            next(websocket.recv_streaming())
        assert isinstance(ConcurrencyError("x"), RuntimeError)
        raw.send_frame(Opcode.CONT, b" part 2")
        assert list(stream) == [" part 2"]
        raw.send_frame(Opcode.TEXT, b"next")
        assert websocket.recv(timeout=TIMEOUT) == "next"


def test_two_threads_receiving_at_once() -> None:
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None, close_timeout=0.2)
        raw.send_frame(Opcode.TEXT, b"first half", fin=False)
        streaming = threading.Event()
        finish = threading.Event()

        def consume() -> list[Any]:
            stream = websocket.recv_streaming()
            parts = [next(stream)]
            streaming.set()
            finish.wait(TIMEOUT)
            parts.extend(stream)
            return parts

        thread, outcome = run_in_thread(consume)
        assert streaming.wait(TIMEOUT)
        with pytest.raises(ConcurrencyError, match="another thread"):
            websocket.recv()
        finish.set()
        raw.send_frame(Opcode.CONT, b", second half")
        thread.join(TIMEOUT)
    assert outcome == [["first half", ", second half"]]


def test_send_while_another_thread_sends_fragments() -> None:
    with RawServer() as raw:
        websocket = connect(raw.uri, compression=None, close_timeout=0.2)
        first_sent = threading.Event()
        finish = threading.Event()

        def slow_fragments() -> Any:
            yield "a"
            yield "b"  # the first fragment goes out when the second arrives
            first_sent.set()
            finish.wait(TIMEOUT)
            yield "c"

        thread, outcome = run_in_thread(lambda: websocket.send(slow_fragments()))
        assert first_sent.wait(TIMEOUT)
        with pytest.raises(ConcurrencyError):
            websocket.send("interleaved")
        finish.set()
        thread.join(TIMEOUT)
        assert outcome == [None]
        frames = [raw.recv_frame() for _ in range(3)]
        assert [(f.opcode, f.data, f.fin) for f in frames] == [
            (Opcode.TEXT, b"a", False),
            (Opcode.CONT, b"b", False),
            (Opcode.CONT, b"c", True),
        ]


def test_close_unblocks_a_thread_waiting_in_recv() -> None:
    with sync_server(lambda ws: ws.recv()) as server:
        websocket = connect(uri_of(server))
        thread, outcome = run_in_thread(websocket.recv)
        websocket.close()
        thread.join(TIMEOUT)
    assert isinstance(outcome[0], wsharbor.ConnectionClosedOK)


# Backpressure.


def small_buffer_socket(size: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock


def test_full_queue_stops_reading_and_the_sender_waits() -> None:
    count, size = 200, 16 * 1024
    sent_all = threading.Event()

    def flood(websocket: ServerConnection) -> None:
        for i in range(count):
            websocket.send(i.to_bytes(4, "big") * (size // 4))
        sent_all.set()
        websocket.recv()

    listener = small_buffer_socket()
    listener.bind((HOST, 0))
    listener.listen()
    with sync_server(flood, sock=listener, compression=None) as server:
        client_sock = small_buffer_socket()
        client_sock.connect(server.socket.getsockname())
        websocket = connect(uri_of(server), sock=client_sock, max_queue=4)
        # The client reads nothing: its queue fills, its reader stops, the
        # kernel buffers fill, and the server's send() blocks.
        assert not sent_all.wait(0.5)
        queued = len(websocket._messages._fragments)
        assert 4 < queued <= 4 + 16  # the high-water mark, plus one read's worth
        for i in range(count):
            assert websocket.recv(timeout=TIMEOUT) == i.to_bytes(4, "big") * (size // 4)
        assert sent_all.wait(TIMEOUT)
        websocket.close()


# The assembler on its own.


def test_assembler_pauses_above_high_and_resumes_at_low() -> None:
    assembler = Assembler(high=4)
    assert assembler.low == 1
    for i in range(5):
        assembler.put(f"m{i}", True)
    assert assembler.paused
    reader, outcome = run_in_thread(assembler.wait_for_room)
    reader.join(0.05)
    assert reader.is_alive()  # blocked while paused
    assert [assembler.get() for _ in range(4)] == ["m0", "m1", "m2", "m3"]
    reader.join(TIMEOUT)
    assert not assembler.paused and outcome == [None]


def test_assembler_timeout_keeps_partial_messages() -> None:
    assembler = Assembler()
    assembler.put(b"ab", False)
    with pytest.raises(TimeoutError):
        assembler.get(timeout=0.01)
    assembler.put(b"cd", True)
    assert assembler.get(timeout=0) == b"abcd"


def test_assembler_decode_options() -> None:
    assembler = Assembler()
    assembler.put("té", False)
    assembler.put("xt", True)
    assembler.put(b"caf\xc3\xa9", True)
    assert assembler.get(decode=False) == "téxt".encode()
    assert assembler.get(decode=True) == "café"


def test_assembler_close_ends_the_stream_after_queued_messages() -> None:
    assembler = Assembler()
    assembler.put("last", True)
    assembler.put("partial", False)
    waiting, outcome = run_in_thread(lambda: (assembler.get(), assembler.get()))
    waiting.join(0.05)
    assembler.close()
    waiting.join(TIMEOUT)
    assert isinstance(outcome[0], EOFError)
    assembler.put("ignored", True)
    with pytest.raises(EOFError):
        assembler.get()


def test_assembler_drops_whole_messages_while_closing_and_full() -> None:
    assembler = Assembler(high=2)
    assembler.put("a", True)
    assembler.put("b", True)
    assembler.stop_flow_control()
    assembler.put("c1", False)  # the queue is full: this message is dropped whole
    assembler.put("c2", True)
    assert not assembler.paused
    assert [assembler.get(timeout=0), assembler.get(timeout=0)] == ["a", "b"]
    assembler.put("d", True)
    assert assembler.get(timeout=0) == "d"


def test_assembler_rejects_bad_marks() -> None:
    with pytest.raises(ValueError):
        Assembler(high=1, low=2)
    with pytest.raises(ValueError):
        Assembler(high=4, low=-1)
    assert Assembler(low=2).high == 8
