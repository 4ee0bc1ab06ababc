"""Echo server on picows (``ws_create_server`` and a ``WSListener``).

picows works frame by frame: each data frame is echoed as it arrives (the load generator
sends unfragmented messages, so a frame is a message). Compression is not implemented by
picows: ``--compression`` exits with status 3 ("not available"). ``--fanout`` sends each
data frame received to every open connection with ``transport.send`` in a loop (picows
has no broadcast). ``max_frame_size`` comes from the flags; everything else is at the
library's defaults, which include the aiofastnet transport when that package is installed
(picows depends on it).
"""

from __future__ import annotations

import sys

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from benchmarks.servers._common import (
    ServerArgs,
    announce,
    parse_args,
    run,
    ssl_context,
    wait_for_signal,
)

NOT_AVAILABLE = 3


class EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type is not WSMsgType.PING and msg_type is not WSMsgType.PONG:
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)


TRANSPORTS: set[WSTransport] = set()


class FanoutListener(EchoListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        TRANSPORTS.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        TRANSPORTS.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is not WSMsgType.TEXT and msg_type is not WSMsgType.BINARY:
            super().on_ws_frame(transport, frame)
            return
        payload = frame.get_payload_as_bytes()
        for peer in TRANSPORTS:
            peer.send(msg_type, payload)


async def main(args: ServerArgs) -> None:
    listener = FanoutListener if args.fanout else EchoListener
    server = await ws_create_server(
        lambda _request: listener(),
        args.host,
        args.port,
        max_frame_size=args.max_size,
        ssl=ssl_context(args),
    )
    async with server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    if arguments.compression:
        print("picows does not implement permessage-deflate", file=sys.stderr)
        sys.exit(NOT_AVAILABLE)
    sys.exit(run(main, arguments))
