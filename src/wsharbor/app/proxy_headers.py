"""The client's address behind a reverse proxy: ``--proxy-headers``, ``--forwarded-allow-ips``.

A proxy in front of the application server connects to it itself, so the socket's
peer is the proxy. The proxy says who the client is in a header:

- ``X-Forwarded-For: client, proxy1, proxy2``, the de facto standard nginx,
  HAProxy, Traefik, Envoy and cloud load balancers set (``--forwarded-header
  x-forwarded``, the default);
- ``Forwarded: for=client;proto=https, for=proxy1`` (RFC 7239), which HAProxy's
  ``option forwarded`` sets (``--forwarded-header forwarded``).

The scheme a proxy reports (``X-Forwarded-Proto``, ``proto=``) is not used:
unlike an ASGI server, wsharbor hands the application no URL to rebuild. The one
URL it builds, a router's redirect, takes its scheme from the router
(``Router(url_map, url_scheme="wss")`` behind a proxy that terminates TLS).

One header is read, the one named by ``--forwarded-header``: a proxy that sets
one of them usually passes the other through as the client sent it, and reading
both would let a client name itself.

Headers are believed only from a trusted peer: the socket's peer must be in
``--forwarded-allow-ips`` (addresses and networks; ``*`` trusts every peer,
which is also the only way to trust a Unix socket peer, as with uvicorn). Each
proxy appends the address it received the request from, so the list is read
from the right: the client is the first address that is not a trusted proxy
(RFC 7239 section 7.4, as uvicorn does). If every address is trusted, the
leftmost is the client; with ``*``, the leftmost too.

Pure functions and one small class, no I/O: the worker (:mod:`.worker`) calls
:meth:`ProxyHeaders.client` for every request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, TypeAlias

from ..protocol.datastructures import Headers

__all__ = [
    "ProxyHeaders",
    "TrustedHosts",
    "parse_forwarded",
    "parse_trusted",
    "parse_x_forwarded_for",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(text: str) -> tuple[str, ...]:
    """Validate a ``--forwarded-allow-ips`` value: a comma-separated list of IP
    addresses and networks (CIDR), or ``*``. Raises :exc:`ValueError`."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ValueError("must not be empty: IP addresses or networks, comma-separated, or '*'")
    for item in items:
        if item == "*":
            continue
        try:
            if "/" in item:
                ipaddress.ip_network(item, strict=False)
            else:
                ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network: "
                "use addresses and networks (10.0.0.0/8), comma-separated, or '*'"
            ) from None
    return items


class TrustedHosts:
    """The peers whose proxy headers are believed."""

    __slots__ = ("addresses", "everyone", "networks")

    def __init__(self, items: Iterable[str]) -> None:
        self.everyone = False
        self.addresses: set[IPAddress] = set()
        self.networks: list[IPNetwork] = []
        for item in items:
            if item == "*":
                self.everyone = True
            elif "/" in item:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            else:
                self.addresses.add(ipaddress.ip_address(item))

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket
        return address in self.addresses or any(address in net for net in self.networks)


def _split_host_port(node: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:80``, ``2001:db8::1``: host, port (0)."""
    node = node.strip()
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, int(port) if port.isdigit() else 0


def parse_x_forwarded_for(values: Iterable[str]) -> list[tuple[str, int]]:
    """The hops of ``X-Forwarded-For`` header values, client first."""
    hops = []
    for value in values:
        for item in value.split(","):
            if item.strip():
                hops.append(_split_host_port(item))
    return hops


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quoted-strings (RFC 7230 section 3.2.6)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
        out, escaped = [], False
        for char in value:
            if char == "\\" and not escaped:
                escaped = True
                continue
            escaped = False
            out.append(char)
        value = "".join(out)
    return value


def parse_forwarded(values: Iterable[str]) -> list[dict[str, str]]:
    """The elements of ``Forwarded`` header values (RFC 7239 section 4), client
    first: each a dict of lowercase parameter names (``for``, ``proto``, ``by``,
    ``host``) to unquoted values. A malformed pair is skipped."""
    elements = []
    for value in values:
        for element in _split_quoted(value, ","):
            if not element.strip():
                continue
            pairs: dict[str, str] = {}
            for pair in _split_quoted(element, ";"):
                name, sep, raw = pair.partition("=")
                name = name.strip().lower()
                if sep and name:
                    pairs.setdefault(name, _unquote(raw))
            elements.append(pairs)
    return elements


class ProxyHeaders:
    """Reads the client's address from the headers of a trusted proxy.

    ``trusted`` is the ``--forwarded-allow-ips`` list; ``header`` is
    ``"x-forwarded"`` or ``"forwarded"`` (``--forwarded-header``).
    """

    __slots__ = ("header", "trusted")

    def __init__(self, trusted: Iterable[str], header: str = "x-forwarded") -> None:
        if header not in ("x-forwarded", "forwarded"):
            raise ValueError(f"unknown proxy header {header!r}")
        self.trusted = TrustedHosts(trusted)
        self.header = header

    def trusts(self, peer: Any) -> bool:
        """Whether the socket's peer (``remote_address``) is a trusted proxy."""
        if self.trusted.everyone:
            return True
        return isinstance(peer, tuple) and len(peer) >= 2 and peer[0] in self.trusted

    def _hops(self, headers: Headers) -> list[tuple[str, int]]:
        if self.header == "x-forwarded":
            return parse_x_forwarded_for(headers.get_all("X-Forwarded-For"))
        hops = []
        for element in parse_forwarded(headers.get_all("Forwarded")):
            node = element.get("for")
            if node is not None:
                hops.append(_split_host_port(node))
        return hops

    def client(self, peer: Any, headers: Headers) -> tuple[str, int] | None:
        """The client's ``(host, port)`` (port 0 when the proxy didn't say), or
        None: the peer isn't trusted, the header is missing, or it names the
        client ``unknown`` (RFC 7239 section 6.2)."""
        if not self.trusts(peer):
            return None
        hops = self._hops(headers)
        if not hops:
            return None
        client = hops[0]
        if not self.trusted.everyone:
            for hop in reversed(hops):
                if hop[0] not in self.trusted:
                    client = hop
                    break
        if not client[0] or client[0].lower() == "unknown":
            return None
        return client
