from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from speechq.net_guard import (
    FetchFailed,
    HostUnresolvable,
    TooLarge,
    UnsafeURL,
    check_address,
    fetch_to_file,
    pinned_client,
    resolve_safe,
)
from tests.net_fakes import Dialer, FakeDNS, SystemDNS

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

# --- a real HTTP server on loopback ---------------------------------------------------


@dataclass
class Seen:
    path: str
    host_header: str | None
    local_address: str


Route = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: dict[str, Route]) -> None:
        super().__init__(address, _Handler)
        self.routes = routes
        self.seen: list[Seen] = []
        self.release = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-body are the point of several tests


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        local = self.connection.getsockname()[0]
        self.server.seen.append(Seen(self.path, self.headers.get("Host"), local))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route(self)

    do_POST = do_GET  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Running:
    server: _Server
    port: int
    routes: dict[str, Route] = field(default_factory=dict)

    @property
    def seen(self) -> list[Seen]:
        return self.server.seen


@pytest.fixture
def start_server() -> Iterator[Callable[..., Running]]:
    started: list[tuple[_Server, threading.Thread]] = []

    def start(
        routes: dict[str, Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> Running:
        server = _Server((host, port), routes)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return Running(server, server.server_address[1], routes)

    yield start
    for server, thread in started:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def body(data: bytes, content_type: str = "audio/wav", status: int = 200) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def endless(chunk: bytes, *, interval_s: float = 0.0, total: int = 10_000_000) -> Route:
    """No Content-Length: the body runs until the connection closes (HTTP/1.0)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "audio/mpeg")
        handler.end_headers()
        sent = 0
        try:
            while sent < total and not handler.server.release.is_set():  # type: ignore[attr-defined]
                handler.wfile.write(chunk)
                handler.wfile.flush()
                sent += len(chunk)
                if interval_s:
                    time.sleep(interval_s)
        except OSError:
            pass

    return route


def held(headers: dict[str, str], status: int = 200) -> Route:
    """Send the status and headers, then hold the body until the test ends."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()
        handler.server.release.wait(10)  # type: ignore[attr-defined]

    return route


def silent(handler: BaseHTTPRequestHandler) -> None:
    handler.server.release.wait(10)  # type: ignore[attr-defined]


def dns(*addresses: str) -> FakeDNS:
    return FakeDNS(addresses)


# --- URL rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example/a.wav",
        "file:///etc/passwd",
        "gopher://files.example/",
        "files.example/a",
    ],
)
def test_resolve_safe_refuses_other_schemes(url: str) -> None:
    with pytest.raises(UnsafeURL, match="http:// or https://") as info:
        resolve_safe(url, allow_private=True, resolver=dns(PUBLIC_V4))
    assert info.value.rule == "scheme"


@pytest.mark.parametrize(
    "url", ["http://user:secret@files.example/a", "https://user@files.example/a"]
)
def test_resolve_safe_refuses_credentials(url: str) -> None:
    with pytest.raises(UnsafeURL, match="user name or password") as info:
        resolve_safe(url, allow_private=True, resolver=dns(PUBLIC_V4))
    assert info.value.rule == "credentials"


@pytest.mark.parametrize("url", ["http:///a.wav", "https://:443/a.wav"])
def test_resolve_safe_refuses_missing_host(url: str) -> None:
    with pytest.raises(UnsafeURL, match="no host") as info:
        resolve_safe(url, allow_private=True, resolver=dns(PUBLIC_V4))
    assert info.value.rule == "host"


def test_resolve_safe_refuses_bad_and_disallowed_ports() -> None:
    for bad in (0, 99999):
        with pytest.raises(UnsafeURL, match=f"port {bad} is not a valid port"):
            resolve_safe(
                f"http://files.example:{bad}/", allow_private=True, resolver=dns(PUBLIC_V4)
            )
    with pytest.raises(UnsafeURL, match="port 22 is not allowed; use one of 80, 443") as info:
        resolve_safe(
            "http://files.example:22/",
            allow_private=False,
            resolver=dns(PUBLIC_V4),
            allowed_ports={443, 80},
        )
    assert info.value.rule == "port"
    ok = resolve_safe(
        "https://files.example/", allow_private=False, resolver=dns(PUBLIC_V4), allowed_ports={443}
    )
    assert ok.port == 443


def test_resolve_safe_returns_every_address() -> None:
    resolver = dns(PUBLIC_V4, PUBLIC_V6, PUBLIC_V4)
    resolved = resolve_safe(
        "https://Files.Example:8443/a.wav?x=1", allow_private=False, resolver=resolver
    )
    assert resolved.url == "https://Files.Example:8443/a.wav?x=1"
    assert (resolved.scheme, resolved.host, resolved.port) == ("https", "files.example", 8443)
    assert resolved.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert resolver.calls == [("files.example", 8443)]


def test_resolve_safe_uses_idna_host_and_default_port() -> None:
    resolver = dns(PUBLIC_V4)
    resolved = resolve_safe("http://bücher.example/a", allow_private=False, resolver=resolver)
    assert resolved.host == "xn--bcher-kva.example"
    assert resolver.calls == [("xn--bcher-kva.example", 80)]


def test_resolve_safe_ip_literal_skips_resolver() -> None:
    resolver = dns("10.0.0.1")
    resolved = resolve_safe(f"http://[{PUBLIC_V6}]/a", allow_private=False, resolver=resolver)
    assert resolved.addresses == (PUBLIC_V6,)
    assert resolver.calls == []
    with pytest.raises(UnsafeURL, match=r"host 127.0.0.1 is a loopback address"):
        resolve_safe("http://127.0.0.1:8000/", allow_private=False, resolver=resolver)
    with pytest.raises(UnsafeURL, match=r"host ::ffff:127.0.0.1 is an IPv4-mapped form"):
        resolve_safe("http://[::ffff:127.0.0.1]/", allow_private=False, resolver=resolver)
    assert resolver.calls == []


def test_resolve_safe_unresolvable_host() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(HostUnresolvable, match="could not be resolved") as info:
        resolve_safe("https://nowhere.example/", allow_private=False, resolver=failing)
    assert info.value.rule == "unresolvable"
    with pytest.raises(HostUnresolvable, match="no IP address"):
        resolve_safe("https://nowhere.example/", allow_private=False, resolver=dns())


NOT_PUBLIC = [
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("127.0.0.1", "loopback"),
    ("100.64.0.1", "shared"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
    ("::ffff:10.1.2.3", "IPv4-mapped form of 10.1.2.3, a private"),
    ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254, a link-local"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, a loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("2002:a00:1::1", "6to4 form of 10.0.0.1, a private"),
    ("2002:7f00:1::", "6to4 form of 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:db8::1", "documentation"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("100::1", "discard-only"),
]


@pytest.mark.parametrize(("address", "reason"), NOT_PUBLIC)
def test_resolve_safe_refuses_non_public_address(address: str, reason: str) -> None:
    with pytest.raises(UnsafeURL, match="only publicly routable addresses") as info:
        resolve_safe("https://files.example/a", allow_private=False, resolver=dns(address))
    assert info.value.rule == "address"
    assert reason in str(info.value)
    assert "'files.example' resolves to" in str(info.value)


@pytest.mark.parametrize(("address", "reason"), NOT_PUBLIC)
def test_resolve_safe_allows_non_public_address_when_private_allowed(
    address: str, reason: str
) -> None:
    resolved = resolve_safe("https://files.example/a", allow_private=True, resolver=dns(address))
    assert resolved.addresses == (str(ipaddress.ip_address(address.split("%")[0])),)


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC_V4,
        "8.8.8.8",
        PUBLIC_V6,
        "::ffff:93.184.216.34",  # IPv4-mapped public
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34, as DNS64 answers on v6-only hosts
        "2002:5db8:d822::1",  # 6to4 of a public address
    ],
)
def test_check_address_allows_public_addresses(address: str) -> None:
    assert check_address(address) is None


def test_resolve_safe_refuses_if_any_address_is_private() -> None:
    for answers in ([PUBLIC_V4, "10.0.0.1"], ["10.0.0.1", PUBLIC_V4], [PUBLIC_V6, "::1"]):
        with pytest.raises(UnsafeURL) as info:
            resolve_safe("https://files.example/", allow_private=False, resolver=dns(*answers))
        assert info.value.address in ("10.0.0.1", "::1")


# --- pinning -------------------------------------------------------------------------


def test_pinned_request_for_https_uses_ip_with_sni_and_host_of_name() -> None:
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(204)

    for address, url_host in [(PUBLIC_V4, PUBLIC_V4), (PUBLIC_V6, f"[{PUBLIC_V6}]")]:
        captured.clear()
        resolved = resolve_safe(
            "https://files.example:8443/a.wav?x=1", allow_private=False, resolver=dns(address)
        )
        with pinned_client(resolved, transport=httpx.MockTransport(handler)) as client:
            response = client.get(resolved.url)
        (sent,) = captured
        assert str(sent.url) == f"https://{url_host}:8443/a.wav?x=1"
        assert sent.extensions["sni_hostname"] == "files.example"
        assert sent.headers["host"] == "files.example:8443"
        assert response.status_code == 204
        assert str(response.request.url) == "https://files.example:8443/a.wav?x=1"


def test_pinned_request_for_http_has_no_sni() -> None:
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200)

    resolved = resolve_safe("http://files.example/", allow_private=False, resolver=dns(PUBLIC_V4))
    with pinned_client(resolved, transport=httpx.MockTransport(handler)) as client:
        client.post(resolved.url, content=b"{}", headers={"webhook-id": "msg_1"})
    (sent,) = captured
    assert str(sent.url) == f"http://{PUBLIC_V4}/"
    assert "sni_hostname" not in sent.extensions
    assert sent.headers["host"] == "files.example"
    assert sent.headers["webhook-id"] == "msg_1"
    assert sent.read() == b"{}"


def test_pinned_client_refuses_other_hosts() -> None:
    resolved = resolve_safe("https://files.example/", allow_private=False, resolver=dns(PUBLIC_V4))
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with pinned_client(resolved, transport=transport) as client:
        for other in ["https://evil.example/", "http://files.example/", "https://files.example:1/"]:
            with pytest.raises(UnsafeURL, match="pinned to https://files.example:443"):
                client.get(other)


def test_pinned_client_does_not_follow_redirects(start_server: Callable[..., Running]) -> None:
    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "/target")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = start_server({"/start": redirect, "/target": body(b"x")})
    resolved = resolve_safe(
        f"http://files.example:{server.port}/start", allow_private=True, resolver=dns("127.0.0.1")
    )
    with pinned_client(resolved, timeout_s=5) as client:
        response = client.get(resolved.url)
    assert response.status_code == 302
    assert [s.path for s in server.seen] == ["/start"]


def test_pinned_client_tries_next_checked_address_when_refused(
    start_server: Callable[..., Running],
) -> None:
    server = start_server({"/a": body(b"ok")})
    # Nothing listens on [::1]:<port>, so the first checked address refuses.
    resolved = resolve_safe(
        f"http://files.example:{server.port}/a",
        allow_private=True,
        resolver=dns("::1", "127.0.0.1"),
    )
    assert resolved.addresses == ("::1", "127.0.0.1")
    with pinned_client(resolved, timeout_s=5) as client:
        assert client.get(resolved.url).content == b"ok"


def test_dns_rebinding_request_goes_to_checked_address(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    checked = start_server({"/a.wav": body(b"checked")})
    try:
        rebound = start_server({"/a.wav": body(b"rebound")}, host="127.0.0.2", port=checked.port)
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    # The first answer is checked; any later lookup would send the request elsewhere.
    resolver = FakeDNS(["127.0.0.1"], ["127.0.0.2"])
    url = f"http://rebind.invalid:{checked.port}/a.wav"
    dest = tmp_path / "a.wav"

    result = fetch_to_file(url, dest, max_bytes=1000, allow_private=True, resolver=resolver)

    assert dest.read_bytes() == b"checked"
    assert result.final_status == 200
    assert resolver.calls == [("rebind.invalid", checked.port)]
    assert [(s.host_header, s.local_address) for s in checked.seen] == [
        (f"rebind.invalid:{checked.port}", "127.0.0.1")
    ]
    assert rebound.seen == []


def test_public_check_then_private_answer_still_uses_checked_address() -> None:
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200)

    resolver = FakeDNS([PUBLIC_V4], ["127.0.0.1"])
    resolved = resolve_safe("https://files.example/", allow_private=False, resolver=resolver)
    with pinned_client(resolved, transport=httpx.MockTransport(handler)) as client:
        client.get(resolved.url)
        client.get(resolved.url)
    assert [r.url.host for r in captured] == [PUBLIC_V4, PUBLIC_V4]
    assert len(resolver.calls) == 1


# --- rebinding, end to end: what the real transport dials --------------------------------
# The Dialer sits where httpcore opens its TCP connections (socket.create_connection) and
# records each one. A "public" answer is carried to the local server on loopback, so the
# request is really made, and nothing is sent off this machine.

REBIND_PUBLIC = "93.184.215.14"
REBIND_PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


@pytest.mark.parametrize("public", [REBIND_PUBLIC, REBIND_PUBLIC_V6])
def test_fetch_to_file_public_then_loopback_answer_dials_only_the_checked_address(
    public: str,
    start_server: Callable[..., Running],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = start_server({"/a.wav": body(b"public audio")})
    dialer = Dialer(monkeypatch, routes={public: "127.0.0.1"})
    resolver = FakeDNS([public], ["127.0.0.1"])
    dest = tmp_path / "a.wav"

    fetch_to_file(
        f"http://rebind.example:{server.port}/a.wav",
        dest,
        max_bytes=1000,
        allow_private=False,
        timeout_s=5,
        resolver=resolver,
    )

    assert dest.read_bytes() == b"public audio"
    assert resolver.calls == [("rebind.example", server.port)]
    assert dialer.dialled == [(public, server.port)]  # never 127.0.0.1, the second answer
    assert [s.host_header for s in server.seen] == [f"rebind.example:{server.port}"]


def test_fetch_to_file_falls_back_only_to_addresses_of_the_same_check(
    start_server: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server({"/a.wav": body(b"second public")})
    other_public = "93.184.215.15"
    # The first checked address refuses (the dialer only carries the second one); the
    # transport moves to the next address of the same answer, and never asks DNS again.
    dialer = Dialer(monkeypatch, routes={other_public: "127.0.0.1"})
    resolver = FakeDNS([REBIND_PUBLIC, other_public], ["127.0.0.1"])
    dest = tmp_path / "a.wav"

    fetch_to_file(
        f"http://rebind.example:{server.port}/a.wav",
        dest,
        max_bytes=1000,
        allow_private=False,
        timeout_s=5,
        resolver=resolver,
    )

    assert dest.read_bytes() == b"second public"
    assert len(resolver.calls) == 1
    assert dialer.dialled == [(REBIND_PUBLIC, server.port), (other_public, server.port)]


def test_fetch_to_file_loopback_then_public_answer_is_refused_without_dialling(
    start_server: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server({"/a.wav": body(b"internal audio")})
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})
    resolver = FakeDNS(["127.0.0.1"], [REBIND_PUBLIC])

    with pytest.raises(UnsafeURL) as info:
        fetch_to_file(
            f"http://rebind.example:{server.port}/a.wav",
            tmp_path / "a.wav",
            max_bytes=1000,
            allow_private=False,
            timeout_s=5,
            resolver=resolver,
        )

    assert info.value.rule == "address"
    assert len(resolver.calls) == 1  # no second look that would have found a public answer
    assert dialer.dialled == []
    assert server.seen == []


def test_fetch_to_file_private_allowed_dials_the_checked_loopback_not_a_later_answer(
    start_server: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server({"/a.wav": body(b"local audio")})
    dialer = Dialer(monkeypatch)  # no routes: the public answer would be refused if dialled
    resolver = FakeDNS(["127.0.0.1"], [REBIND_PUBLIC])
    dest = tmp_path / "a.wav"

    fetch_to_file(
        f"http://rebind.example:{server.port}/a.wav",
        dest,
        max_bytes=1000,
        allow_private=True,
        timeout_s=5,
        resolver=resolver,
    )

    assert dest.read_bytes() == b"local audio"
    assert dialer.dialled == [("127.0.0.1", server.port)]


def test_fetch_to_file_with_system_dns_looks_up_once_and_dials_that_answer(
    start_server: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No injected resolver: the default one and everything under it (httpx, httpcore,
    # socket.create_connection) go through socket.getaddrinfo, which answers public once
    # and loopback after. Only the name's first answer may be used.
    server = start_server({"/a.wav": body(b"public audio")})
    lookups = FakeDNS([REBIND_PUBLIC], ["127.0.0.1"])
    SystemDNS(monkeypatch, {"rebind.example": lookups})
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})
    dest = tmp_path / "a.wav"

    fetch_to_file(
        f"http://rebind.example:{server.port}/a.wav",
        dest,
        max_bytes=1000,
        allow_private=False,
        timeout_s=5,
    )

    assert dest.read_bytes() == b"public audio"
    assert len(lookups.calls) == 1
    assert dialer.dialled == [(REBIND_PUBLIC, server.port)]


def test_fetch_to_file_with_system_dns_refuses_loopback_first_answer(
    start_server: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server({"/a.wav": body(b"internal audio")})
    lookups = FakeDNS(["127.0.0.1"], [REBIND_PUBLIC])
    SystemDNS(monkeypatch, {"rebind.example": lookups})
    dialer = Dialer(monkeypatch, routes={REBIND_PUBLIC: "127.0.0.1"})

    with pytest.raises(UnsafeURL, match="loopback"):
        fetch_to_file(
            f"http://rebind.example:{server.port}/a.wav",
            tmp_path / "a.wav",
            max_bytes=1000,
            allow_private=False,
            timeout_s=5,
        )

    assert len(lookups.calls) == 1
    assert dialer.dialled == []
    assert server.seen == []


# --- TLS: SNI and certificate checked against the hostname, not the IP -----------------


@dataclass
class LocalPKI:
    server: ssl.SSLContext
    client: ssl.SSLContext


def make_pki(hostname: str, tmp_path: Path) -> LocalPKI:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> object:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("speechq test CA"))
        .issuer_name(name("speechq test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(hostname))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    cert_file = tmp_path / "leaf.pem"
    key_file = tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode("ascii"))
    return LocalPKI(server=server, client=client)


def test_pinned_https_verifies_certificate_for_hostname(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    pki = make_pki("files.example", tmp_path)
    server = start_server({"/a": body(b"secure")}, tls=pki.server)

    good = resolve_safe(
        f"https://files.example:{server.port}/a", allow_private=True, resolver=dns("127.0.0.1")
    )
    with pinned_client(good, timeout_s=5, verify=pki.client) as client:
        response = client.get(good.url)
    assert response.content == b"secure"
    assert server.seen[-1].host_header == f"files.example:{server.port}"

    # Same address, a name the certificate does not cover: verification must fail.
    wrong = resolve_safe(
        f"https://other.example:{server.port}/a", allow_private=True, resolver=dns("127.0.0.1")
    )
    with pinned_client(wrong, timeout_s=5, verify=pki.client) as client:
        with pytest.raises(httpx.ConnectError, match="certificate|hostname"):
            client.get(wrong.url)


# --- fetch_to_file -------------------------------------------------------------------


def local_url(server: Running, path: str, host: str = "files.example") -> str:
    return f"http://{host}:{server.port}{path}"


def test_fetch_to_file_writes_body(start_server: Callable[..., Running], tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    server = start_server({"/a.wav": body(data, "audio/wav")})
    dest = tmp_path / "a.wav"
    result = fetch_to_file(
        local_url(server, "/a.wav"),
        dest,
        max_bytes=len(data),
        allow_private=True,
        resolver=dns("127.0.0.1"),
    )
    assert result.bytes == len(data)
    assert result.content_type == "audio/wav"
    assert result.final_status == 200
    assert dest.read_bytes() == data


def test_fetch_to_file_refuses_private_before_connecting(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/a.wav": body(b"x")})
    dest = tmp_path / "a.wav"
    with pytest.raises(UnsafeURL, match="loopback"):
        fetch_to_file(
            local_url(server, "/a.wav"),
            dest,
            max_bytes=10,
            allow_private=False,
            resolver=dns("127.0.0.1"),
        )
    assert server.seen == []
    assert not dest.exists()


def test_fetch_to_file_cuts_stream_over_limit_and_deletes_partial_file(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/big": endless(b"\0" * 8192)})
    dest = tmp_path / "big.mp3"
    with pytest.raises(TooLarge) as info:
        fetch_to_file(
            local_url(server, "/big"),
            dest,
            max_bytes=100_000,
            allow_private=True,
            resolver=dns("127.0.0.1"),
        )
    assert info.value.max_bytes == 100_000
    assert 100_000 < info.value.passed_bytes <= 100_000 + 64 * 1024
    assert not dest.exists()


def test_fetch_to_file_accepts_body_of_exactly_max_bytes(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/exact": endless(b"\1" * 1000, total=100_000)})
    dest = tmp_path / "exact"
    result = fetch_to_file(
        local_url(server, "/exact"),
        dest,
        max_bytes=100_000,
        allow_private=True,
        resolver=dns("127.0.0.1"),
    )
    assert result.bytes == 100_000 == dest.stat().st_size


def test_fetch_to_file_refuses_content_length_over_limit_before_body(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/huge": held({"Content-Length": "50000000"})})
    dest = tmp_path / "huge"
    began = time.monotonic()
    with pytest.raises(TooLarge) as info:
        fetch_to_file(
            local_url(server, "/huge"),
            dest,
            max_bytes=1_000_000,
            allow_private=True,
            timeout_s=10,
            resolver=dns("127.0.0.1"),
        )
    # The server never sends the body; reading any of it would have waited for the timeout.
    assert time.monotonic() - began < 5
    assert (info.value.passed_bytes, info.value.max_bytes) == (50_000_000, 1_000_000)
    assert not dest.exists()


def test_fetch_to_file_does_not_follow_redirects(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    def moved(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(301)
        handler.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = start_server({"/old": moved, "/new": body(b"audio")})
    dest = tmp_path / "a"
    with pytest.raises(FetchFailed, match="redirects are not followed") as info:
        fetch_to_file(
            local_url(server, "/old"),
            dest,
            max_bytes=1000,
            allow_private=True,
            resolver=dns("127.0.0.1"),
        )
    assert info.value.status == 301
    assert "169.254.169.254" in str(info.value)
    assert [s.path for s in server.seen] == ["/old"]
    assert not dest.exists()


@pytest.mark.parametrize("status", [404, 500])
def test_fetch_to_file_non_2xx_fails(
    status: int, start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/x": body(b"nope", "text/plain", status=status)})
    dest = tmp_path / "x"
    with pytest.raises(FetchFailed, match=f"answered {status}") as info:
        fetch_to_file(
            local_url(server, "/x"),
            dest,
            max_bytes=1000,
            allow_private=True,
            resolver=dns("127.0.0.1"),
        )
    assert info.value.status == status
    assert not dest.exists()


def test_fetch_to_file_refuses_compressed_body(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    def gzipped(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", "3")
        handler.end_headers()
        handler.wfile.write(b"abc")

    server = start_server({"/gz": gzipped})
    with pytest.raises(FetchFailed, match="Content-Encoding: gzip"):
        fetch_to_file(
            local_url(server, "/gz"),
            tmp_path / "gz",
            max_bytes=1000,
            allow_private=True,
            resolver=dns("127.0.0.1"),
        )
    assert server.seen[0].path == "/gz"
    assert not (tmp_path / "gz").exists()


def test_fetch_to_file_times_out_waiting_for_answer(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/slow": silent})
    began = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out after 0.5 s") as info:
        fetch_to_file(
            local_url(server, "/slow"),
            tmp_path / "slow",
            max_bytes=1000,
            allow_private=True,
            timeout_s=0.5,
            resolver=dns("127.0.0.1"),
        )
    assert info.value.status is None
    assert time.monotonic() - began < 3
    assert not (tmp_path / "slow").exists()


def test_fetch_to_file_stops_slow_drip_at_total_deadline(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({"/drip": endless(b"x", interval_s=0.05)})
    began = time.monotonic()
    with pytest.raises(FetchFailed, match="took longer than 0.5 s"):
        fetch_to_file(
            local_url(server, "/drip"),
            tmp_path / "drip",
            max_bytes=1_000_000,
            allow_private=True,
            timeout_s=0.5,
            resolver=dns("127.0.0.1"),
        )
    assert time.monotonic() - began < 3
    assert not (tmp_path / "drip").exists()


def test_fetch_to_file_connection_refused(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = start_server({})
    port = server.port
    server.server.shutdown()
    server.server.server_close()
    with pytest.raises(FetchFailed, match="Could not fetch the URL") as info:
        fetch_to_file(
            f"http://files.example:{port}/a",
            tmp_path / "a",
            max_bytes=10,
            allow_private=True,
            timeout_s=5,
            resolver=dns("127.0.0.1"),
        )
    assert info.value.status is None


def test_fetch_to_file_body_cut_short_fails_and_deletes(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    def short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)
        handler.close_connection = True

    server = start_server({"/short": short})
    dest = tmp_path / "short"
    with pytest.raises(FetchFailed):
        fetch_to_file(
            local_url(server, "/short"),
            dest,
            max_bytes=10_000,
            allow_private=True,
            timeout_s=5,
            resolver=dns("127.0.0.1"),
        )
    assert not dest.exists()
