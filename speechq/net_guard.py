"""Outbound HTTP to URLs that users give us (audio to fetch, webhooks), without SSRF.

A URL is checked once: http(s) only, a host, no credentials, an allowed port, and every
address the host resolves to must be publicly routable (unless private ones are allowed).
The request then goes to one of those checked addresses and never through a second DNS
lookup, so a name that answers differently the next time (DNS rebinding) cannot move it.
The Host header, TLS SNI and certificate verification still use the hostname. Redirects
are never followed.

The messages are precise (the resolved address and why it is refused, the status, the
errno): right for a log, or for a webhook's owner. Do not show them to someone who should
not learn what this host can reach: an UnsafeURL whose `rule` is address or unresolvable,
and every FetchFailed, tell the network's shape (api/uploads.py answers all of them alike).

ValueError
└── UnsafeURL                 the URL may not be fetched; `rule` says which check failed
    └── HostUnresolvable      the host has no address (DNS failure); may be temporary
FetchError                    fetch_to_file could not deliver the body
├── FetchFailed               network error, timeout, redirect or non-2xx; `status` or None
└── TooLarge                  more than `max_bytes` (announced or received)
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import httpx

__all__ = [
    "UnsafeURL",
    "HostUnresolvable",
    "FetchError",
    "FetchFailed",
    "TooLarge",
    "Resolver",
    "ResolvedURL",
    "FetchResult",
    "PinnedTransport",
    "system_resolver",
    "check_address",
    "resolve_safe",
    "pinned_client",
    "fetch_to_file",
]

Resolver = Callable[[str, int], Iterable[str]]
"""`resolver(host, port)` returns the host's IP addresses as strings."""

DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Not publicly routable, with the name a person will recognise. Kept explicit because
# `ipaddress.is_global` differs between Python versions and misses several of these
# (multicast, 192.0.0.0/24, NAT64, the IPv4-compatible and 2001::/23 blocks on 3.11).
_BLOCKED_V4: list[tuple[IPNetwork, str]] = [
    (ipaddress.IPv4Network(net), label)
    for net, label in [
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (this includes cloud metadata services)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    ]
]
_BLOCKED_V6: list[tuple[IPNetwork, str]] = [
    (ipaddress.IPv6Network(net), label)
    for net, label in [
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address (deprecated)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/32", "a Teredo tunnel address"),
        ("2001::/23", "an IETF protocol address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a segment-routing address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (deprecated)"),
        ("ff00::/8", "a multicast address"),
    ]
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """The URL may not be fetched. `rule` is one of: invalid, scheme, host, credentials,
    port, address, unresolvable; the message says what to change."""

    def __init__(self, message: str, *, rule: str, address: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.address = address


class HostUnresolvable(UnsafeURL):
    """The host name did not resolve; a later attempt may succeed."""


class FetchError(Exception):
    """fetch_to_file could not deliver the body; nothing is left at `dest`."""


class FetchFailed(FetchError):
    """Network error, timeout, redirect or non-2xx answer. `status` is None when no
    answer arrived."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TooLarge(FetchError):
    """The body is over `max_bytes`. `passed_bytes` is the announced Content-Length, or
    the bytes received when the download was cut (so a lower bound)."""

    def __init__(self, passed_bytes: int, max_bytes: int) -> None:
        super().__init__(
            f"The file at the URL is too large: {passed_bytes} bytes or more, "
            f"the limit is {max_bytes} bytes"
        )
        self.passed_bytes = passed_bytes
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class ResolvedURL:
    """A URL that passed every check, with all the addresses its host resolved to."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) form, lower case, without IPv6 brackets
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class FetchResult:
    bytes: int
    content_type: str | None
    final_status: int


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `socket.getaddrinfo` gives for a TCP connection, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [
        str(sockaddr[0])
        for family, _, _, _, sockaddr in infos
        if family in (socket.AF_INET, socket.AF_INET6)
    ]


def check_address(address: str) -> str | None:
    """Why `address` is not publicly routable ("a loopback address", ...), or None if
    it is. IPv4 embedded in IPv6 (mapped, NAT64, 6to4, Teredo) is judged by the IPv4.
    Raises ValueError if `address` is not an IP address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return _refusal(ip)


def _refusal(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            inner = _refusal(ip.ipv4_mapped)
            return f"an IPv4-mapped form of {ip.ipv4_mapped}, {inner}" if inner else None
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            inner = _refusal(embedded)
            return f"a NAT64 form of {embedded}, {inner}" if inner else None
        if ip.sixtofour is not None:
            inner = _refusal(ip.sixtofour)
            if inner:
                return f"a 6to4 form of {ip.sixtofour}, {inner}"
        if ip.teredo is not None:
            for embedded in ip.teredo:
                inner = _refusal(embedded)
                if inner:
                    return f"a Teredo address embedding {embedded}, {inner}"
    for network, label in _BLOCKED_V6 if ip.version == 6 else _BLOCKED_V4:
        if ip in network:
            return f"{label} ({network})"
    if ip.is_multicast:
        return "a multicast address"
    if not ip.is_global or ip.is_reserved:
        return "a reserved address that is not publicly routable"
    return None


def resolve_safe(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
    allowed_ports: Collection[int] | None = None,
) -> ResolvedURL:
    """Check `url` and resolve its host once; raise UnsafeURL if any rule fails.

    Every resolved address must pass (one private answer among public ones refuses the
    URL). `allow_private` lets private, loopback and other non-public addresses through;
    the scheme, credential and port rules still apply. `allowed_ports` None allows any."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeURL(f"The URL is not valid: {exc}.", rule="invalid") from exc
    scheme = parsed.scheme
    if scheme not in DEFAULT_PORTS:
        shown = f"'{scheme}'" if scheme else "none"
        raise UnsafeURL(
            f"The URL must start with http:// or https:// (scheme was {shown}).", rule="scheme"
        )
    if parsed.userinfo:
        raise UnsafeURL(
            "The URL must not contain a user name or password (user:password@); remove them.",
            rule="credentials",
        )
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise UnsafeURL("The URL has no host name.", rule="host")
    port = DEFAULT_PORTS[scheme] if parsed.port is None else parsed.port
    if not 1 <= port <= 65535:
        raise UnsafeURL(f"The URL's port {port} is not a valid port.", rule="port")
    if allowed_ports is not None and port not in allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(allowed_ports))
        raise UnsafeURL(f"The URL's port {port} is not allowed; use one of {allowed}.", rule="port")

    literal = _ip_literal(host)
    if literal is not None:
        addresses: tuple[str, ...] = (literal,)
    else:
        addresses = _addresses_for(host, port, resolver or system_resolver)
    if not allow_private:
        for address in addresses:
            reason = check_address(address)
            if reason is not None:
                where = (
                    f"The URL's host {host} is"
                    if literal is not None
                    else f"The URL's host '{host}' resolves to {address},"
                )
                raise UnsafeURL(
                    f"{where} {reason}; only publicly routable addresses are allowed.",
                    rule="address",
                    address=address,
                )
    return ResolvedURL(url=url, scheme=scheme, host=host, port=port, addresses=addresses)


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _addresses_for(host: str, port: int, resolver: Resolver) -> tuple[str, ...]:
    try:
        answers = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise HostUnresolvable(
            f"The URL's host '{host}' could not be resolved: {exc}.", rule="unresolvable"
        ) from exc
    addresses: list[str] = []
    for answer in answers:
        try:
            address = str(ipaddress.ip_address(answer.split("%", 1)[0]))
        except ValueError as exc:
            raise HostUnresolvable(
                f"The URL's host '{host}' resolved to {answer!r}, which is not an IP address.",
                rule="unresolvable",
            ) from exc
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostUnresolvable(f"The URL's host '{host}' has no IP address.", rule="unresolvable")
    return tuple(addresses)


class PinnedTransport(httpx.BaseTransport):
    """Sends each request to one of `resolved.addresses` instead of looking the host up.

    The request URL's host becomes the IP; the Host header (set by the client from the
    original URL) is kept, and for https `sni_hostname` makes httpcore send SNI and
    verify the certificate for the hostname. A request for any other scheme, host or port
    is refused with UnsafeURL. Addresses are tried in order, moving on only when a
    connection is refused or unreachable (httpx.ConnectError)."""

    def __init__(
        self,
        resolved: ResolvedURL,
        *,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.resolved = resolved
        self._transport = transport or httpx.HTTPTransport(verify=verify, trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = DEFAULT_PORTS.get(url.scheme) if url.port is None else url.port
        target = (url.scheme, url.raw_host.decode("ascii").lower(), port)
        expected = (self.resolved.scheme, self.resolved.host, self.resolved.port)
        if target != expected:
            raise UnsafeURL(
                f"This connection is pinned to {self.resolved.scheme}://{self.resolved.host}:"
                f"{self.resolved.port} and cannot send to {url.scheme}://{url.host}:{port}.",
                rule="host",
            )
        addresses = self.resolved.addresses
        for index, address in enumerate(addresses):
            try:
                return self._transport.handle_request(self._pin(request, address))
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable: ResolvedURL always has an address")

    def _pin(self, request: httpx.Request, address: str) -> httpx.Request:
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = self.resolved.host
        return httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )

    def close(self) -> None:
        self._transport.close()


def pinned_client(
    resolved: ResolvedURL,
    *,
    timeout_s: float = 30.0,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A client that only talks to `resolved`'s checked addresses, never follows
    redirects (a 3xx comes back as it is) and ignores proxy environment variables.
    Make one per ResolvedURL and close it (use it as a context manager). `transport`
    replaces the network below the pinning, for tests."""
    return httpx.Client(
        transport=PinnedTransport(resolved, verify=verify, transport=transport),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout_s,
    )


def fetch_to_file(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool,
    timeout_s: float = 30.0,
    resolver: Resolver | None = None,
    allowed_ports: Collection[int] | None = None,
) -> FetchResult:
    """GET `url` into `dest`, at most `max_bytes`, in chunks (memory stays flat).

    Raises UnsafeURL before connecting; TooLarge when Content-Length or the bytes received
    pass `max_bytes`; FetchFailed for a redirect, a non-2xx answer, a compressed body, a
    network error or a timeout. `timeout_s` bounds connecting and each read, and the whole
    download is cut once it has run `timeout_s` (checked between chunks, so the worst
    case is about twice `timeout_s`). A partly written `dest` is removed on any failure;
    `dest` is not created unless a 2xx answer of an acceptable size has started."""
    resolved = resolve_safe(
        url, allow_private=allow_private, resolver=resolver, allowed_ports=allowed_ports
    )
    deadline = time.monotonic() + timeout_s
    try:
        with (
            pinned_client(resolved, timeout_s=timeout_s) as client,
            client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response,
        ):
            _check_response(response, max_bytes)
            received = _stream_to_file(response, dest, max_bytes, deadline, timeout_s)
    except httpx.TimeoutException as exc:
        raise FetchFailed(
            f"Fetching the URL timed out after {timeout_s:g} s ({type(exc).__name__})."
        ) from exc
    except httpx.TransportError as exc:
        raise FetchFailed(f"Could not fetch the URL: {exc or type(exc).__name__}.") from exc
    return FetchResult(
        bytes=received,
        content_type=response.headers.get("content-type"),
        final_status=response.status_code,
    )


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        where = f" to {location}" if location else ""
        raise FetchFailed(
            f"The URL answered {status} (a redirect{where}); redirects are not followed, "
            "give the final URL.",
            status=status,
        )
    if not 200 <= status < 300:
        phrase = _phrase(status)
        raise FetchFailed(
            f"The URL answered {status}{' ' + phrase if phrase else ''}.", status=status
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchFailed(
            f"The URL sent a compressed body (Content-Encoding: {encoding}); "
            "serve the file uncompressed.",
            status=status,
        )
    length = response.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise TooLarge(int(length), max_bytes)


def _stream_to_file(
    response: httpx.Response, dest: Path, max_bytes: int, deadline: float, timeout_s: float
) -> int:
    received = 0
    try:
        with dest.open("wb") as file:
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > max_bytes:
                    raise TooLarge(received, max_bytes)
                if time.monotonic() > deadline:
                    raise FetchFailed(
                        f"Fetching the URL took longer than {timeout_s:g} s; "
                        f"stopped after {received} bytes.",
                        status=response.status_code,
                    )
                file.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return received


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
