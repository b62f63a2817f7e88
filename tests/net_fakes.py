"""The network below httpx, faked for SSRF tests: DNS that answers differently each time,
and a dialer that records every TCP connection and lets none leave this machine.

- `FakeDNS` is a `Resolver` to inject (`resolver=`): each call returns the next answer.
- `SystemDNS` replaces `socket.getaddrinfo` for the names it knows, so code that resolves
  through the system (no `resolver=` anywhere) meets the same changing answers. Numeric
  hosts (and `localhost`) go to the real function, which does not touch the network for
  them; any other name fails to resolve.
- `Dialer` replaces `socket.create_connection`, which httpcore uses to connect. It records
  the address each connection is opened to; a dial to an address in `routes` (a public
  address a test pretends to reach) is carried to a loopback address, same port, and any
  other non-loopback address is refused with ECONNREFUSED before a packet is sent.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import pytest

__all__ = ["PUBLIC_V4", "FakeDNS", "SystemDNS", "Dialer"]

# Public and not a documentation block (net_guard refuses those); never really dialled.
PUBLIC_V4 = "93.184.215.14"


class FakeDNS:
    """An injected resolver: each call returns the next answer (the last one repeats)."""

    def __init__(self, *answers: Iterable[str]) -> None:
        self.answers = [list(a) for a in answers]
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class SystemDNS:
    """`socket.getaddrinfo` with changing answers for some names, while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, names: dict[str, FakeDNS]) -> None:
        self.names = names
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self._getaddrinfo)

    def _getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        fake = self.names.get(str(name).lower().rstrip("."))
        if fake is None:
            if not _is_ip(name) and name != "localhost":  # no real DNS query, ever
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return self._real(host, port, *args, **kwargs)
        infos = []
        for address in fake(str(name), int(port or 0)):
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, int(port or 0), 0, 0) if ":" in address else (address, port)
            infos.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return infos


class Dialer:
    """`socket.create_connection` that records each dial and never leaves loopback."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, routes: dict[str, str] | None = None):
        self.routes = dict(routes or {})
        self.dialled: list[tuple[str, int]] = []
        self._real = socket.create_connection
        monkeypatch.setattr(socket, "create_connection", self._create_connection)

    def _create_connection(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        host, port = address[0], int(address[1])
        self.dialled.append((host, port))
        target = self.routes.get(host, host)
        if not _is_loopback(target):
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"test dialer: {target} is off-limits")
        return self._real((target, port), *args, **kwargs)


def _is_ip(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name: the caller was meant to have resolved it already
