"""The interface between the connection state machine and extensions.

An extension is negotiated in the opening handshake by a *factory* and then
transforms frames: :meth:`Extension.decode` on frames received (in order, before
reassembly) and :meth:`Extension.encode` on frames sent.

The only extension wsharbor ships is permessage-deflate (:mod:`.deflate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..typing import ExtensionName, ExtensionParameter
from .frames import Frame

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]


class Extension(Protocol):
    """A negotiated extension, bound to one connection."""

    #: Registered extension name, as in Sec-WebSocket-Extensions.
    name: ExtensionName

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Decode a frame received.

        ``max_size`` bounds the decoded payload of this frame: a decoder must
        raise :class:`~wsharbor.exceptions.PayloadTooBig` rather than allocate
        more. Raises :class:`~wsharbor.exceptions.ProtocolError` for a frame the
        extension forbids (such as RSV1 on a continuation frame).
        """
        ...

    def encode(self, frame: Frame) -> Frame:
        """Encode a frame to send."""
        ...


class ClientExtensionFactory(Protocol):
    """Client side: makes an offer and checks the server's answer."""

    name: ExtensionName

    def get_request_params(self) -> list[ExtensionParameter]:
        """Parameters of the offer sent in the request."""
        ...

    def process_response_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> Extension:
        """Check the server's answer; raise NegotiationError if it is unacceptable."""
        ...


class ServerExtensionFactory(Protocol):
    """Server side: answers an offer from the client."""

    name: ExtensionName

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], Extension]:
        """Answer one offer; raise NegotiationError to decline it."""
        ...
