"""semconv's endpoint-string reader (URLs, host:port, gRPC peers, connection strings) and how
resolve() uses it: property tests over generated addresses and names, plus the shapes real
instrumentation sends (tests/fixtures/instrumentation has the recordings)."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isostack.sources import semconv
from isostack.sources.semconv import Endpoint, parse_endpoint

_V4 = st.ip_addresses(v=4).map(str)
_V6 = st.ip_addresses(v=6).map(str)
_PORT = st.integers(1, 65535)
_LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
# a DNS name that is no IP literal (an all-digit/hex-looking last label could read as one)
_NAME = st.lists(_LABEL, min_size=1, max_size=4).map(".".join).filter(lambda n: not semconv._is_ip(n))


def _canonical(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@given(_V4, _PORT)
def test_ipv4_host_port(addr: str, port: int) -> None:
    assert parse_endpoint(f"{addr}:{port}") == Endpoint(addr, port, True)


@given(_V6, _PORT)
def test_bracketed_ipv6_host_port(addr: str, port: int) -> None:
    assert parse_endpoint(f"[{addr}]:{port}") == Endpoint(_canonical(addr), port, True)
    assert parse_endpoint(f"[{addr}]") == Endpoint(_canonical(addr), None, True)
    assert parse_endpoint(addr) == Endpoint(_canonical(addr), None, True)


@given(_NAME, st.one_of(st.none(), _PORT))
def test_host_names_are_names_not_addresses(name: str, port: int | None) -> None:
    text = name if port is None else f"{name}:{port}"
    assert parse_endpoint(text) == Endpoint(name, port, False)


@given(st.sampled_from(["http", "https", "HTTP", "wss"]), st.one_of(_V4, _V6.map(lambda a: f"[{a}]"), _NAME),
       st.one_of(st.none(), _PORT), st.sampled_from(["", "user@", "REDACTED:REDACTED@", "u%40x:p@"]),
       st.sampled_from(["", "/", "/a/b?x=1:2&y=[3]", "#frag"]))
def test_urls(scheme: str, host: str, port: int | None, userinfo: str, rest: str) -> None:
    url = f"{scheme}://{userinfo}{host}{'' if port is None else f':{port}'}{rest}"
    ep = parse_endpoint(url)
    bare = host.strip("[]")
    is_ip = semconv._is_ip(bare)
    assert ep.host == (_canonical(bare) if is_ip else bare)
    assert (ep.port, ep.is_ip) == (port, is_ip)
    assert ep.default_port == {"http": 80, "https": 443, "wss": 443}[scheme.lower()]


@given(st.one_of(_V4.map(lambda a: (f"ipv4:{a}", a)), _V6.map(lambda a: (f"ipv6:[{a}]", a)),
                 _V6.map(lambda a: (f"ipv6:{quote('[' + a + ']')}", a))), _PORT)
def test_grpc_peer_strings(prefix_addr: tuple[str, str], port: int) -> None:
    prefix, addr = prefix_addr
    assert parse_endpoint(f"{prefix}:{port}") == Endpoint(_canonical(addr), port, True)
    # a resolver's address list: the first one
    assert parse_endpoint(f"{prefix}:{port},ipv4:10.9.9.9:1").host == _canonical(addr)


@given(st.text(max_size=80))
def test_any_text_reads_to_an_endpoint_or_nothing(text: str) -> None:
    ep = parse_endpoint(text)
    assert ep.port is None or 1 <= ep.port <= 65535
    if ep.is_ip:
        assert semconv._is_ip(ep.host) and ep.host == _canonical(ep.host)
    else:
        assert not semconv._is_ip(ep.host)


@pytest.mark.parametrize(("text", "expected"), [
    # urllib3's instrumentation writes an IPv6 URL without brackets (recorded: python-urllib3)
    ("http://::1:18080/hello", Endpoint("::1", 18080, True, default_port=80)),
    ("http://fe80::1/x", Endpoint("fe80::1", None, True, default_port=80)),
    ("https://[::ffff:10.0.0.9]/", Endpoint("10.0.0.9", None, True, default_port=443)),
    ("jdbc:postgresql://db.internal:5433/app", Endpoint("db.internal", 5433, False, default_port=5432)),
    ("postgresql://app@10.0.0.1,10.0.0.2:5433/db", Endpoint("10.0.0.1", None, True, default_port=5432)),
    ("mongodb://10.1.2.3:27018/?replicaSet=rs0", Endpoint("10.1.2.3", 27018, True, default_port=27017)),
    ("redis://localhost/0", Endpoint("localhost", None, False, default_port=6379)),
    ("host=10.0.0.5 port=6432 dbname=app user=u", Endpoint("10.0.0.5", 6432, True)),
    ("Server=tcp:10.1.1.1,1433;Database=app;User Id=u", Endpoint("10.1.1.1", 1433, True)),
    ("Data Source=sql.internal;Initial Catalog=app", Endpoint("sql.internal", None, False)),
    ("dns:///api.internal:443", Endpoint("api.internal", 443, False)),
    ("ipv6:%5B::1%5D:50051", Endpoint("::1", 50051, True)),
    ("/var/run/postgresql", Endpoint("", None, False, "unix")),
    ("unix:/tmp/grpc.sock", Endpoint("", None, False, "unix")),
    ("http+unix://%2Fvar%2Frun%2Fdocker.sock/v1.43/info", Endpoint("", None, False, "unix")),
    ("10.88.0.12:8000", Endpoint("10.88.0.12", 8000, True)),
    ("10.88.0.12:99999", Endpoint("", None, False)),
    ("http://10.0.0.1:0/x", Endpoint("10.0.0.1", None, True, default_port=80)),
    ("http://[::1", Endpoint("", None, False)),
    ("", Endpoint("", None, False)),
])
def test_endpoint_shapes(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


def _cols(kind: str, attrs: dict) -> tuple:
    net = semconv.resolve(kind, attrs)
    return (net.local_addr, net.local_port, net.peer_addr, net.peer_port, net.transport, net.family, net.peer_name)


@pytest.mark.parametrize(("kind", "attrs", "expected"), [
    # the chain: requests/httpx only send the URL ...
    ("CLIENT", {"http.url": "http://10.88.0.12:8000/pay", "http.method": "GET"},
     ("", None, "10.88.0.12", 8000, "", "inet", "10.88.0.12")),
    # ... a URL without a port goes to the scheme's
    ("CLIENT", {"url.full": "https://10.0.0.7/x"}, ("", None, "10.0.0.7", 443, "", "inet", "10.0.0.7")),
    # a host name is never an address: it is the logical peer, for the kernel side to resolve
    ("CLIENT", {"url.full": "http://pay.internal:8080/x", "server.address": "pay.internal", "server.port": 8080},
     ("", None, "", 8080, "", "", "pay.internal")),
    # server spans: the Host header as "10.88.0.12:8000" names our own endpoint
    ("SERVER", {"net.host.name": "10.88.0.12:8000", "net.peer.ip": "10.88.0.11", "net.peer.port": 40000},
     ("10.88.0.12", 8000, "10.88.0.11", 40000, "", "inet", "")),
    ("SERVER", {"http.host": "[fd00::2]:8443", "client.address": "fd00::1", "client.port": 51000},
     ("fd00::2", 8443, "fd00::1", 51000, "", "inet6", "")),
    # a SERVER span never gets a guessed (scheme default) port
    ("SERVER", {"url.full": "http://10.0.0.2/x"}, ("10.0.0.2", None, "", None, "", "inet", "")),
    # psycopg2: net.peer.name is an IP literal
    ("CLIENT", {"net.peer.name": "10.88.0.14", "net.peer.port": 5432, "db.system": "postgresql"},
     ("", None, "10.88.0.14", 5432, "", "inet", "10.88.0.14")),
    # new db semconv leaves a default port out: db.system tells it
    ("CLIENT", {"server.address": "10.0.0.3", "db.system.name": "postgresql"},
     ("", None, "10.0.0.3", 5432, "", "inet", "10.0.0.3")),
    ("CLIENT", {"db.connection_string": "Server=10.1.1.1,1433;Database=x", "db.system": "mssql"},
     ("", None, "10.1.1.1", 1433, "", "inet", "10.1.1.1")),
    # a unix socket: no address, no default port, transport unix (redis-py says "other")
    ("CLIENT", {"net.peer.name": "/run/redis.sock", "net.transport": "other", "db.system": "redis"},
     ("", None, "", None, "unix", "unix", "")),
    # gRPC peer strings where an instrumentation puts them
    ("SERVER", {"net.peer.name": "ipv4:127.0.0.1:50051", "rpc.system": "grpc"},
     ("", None, "127.0.0.1", 50051, "", "inet", "127.0.0.1")),
    # messaging: the broker URL (older semconv)
    ("PRODUCER", {"messaging.url": "amqp://guest@10.2.0.5/vhost", "messaging.system": "rabbitmq"},
     ("", None, "10.2.0.5", 5672, "", "inet", "10.2.0.5")),
    # an IPv4-mapped socket address (Node's http server) is plain IPv4
    ("SERVER", {"network.peer.address": "::ffff:127.0.0.1", "network.peer.port": 49706, "server.port": 18091},
     ("", 18091, "127.0.0.1", 49706, "", "inet", "")),
])
def test_resolve_reads_endpoint_strings(kind: str, attrs: dict, expected: tuple) -> None:
    assert _cols(kind, attrs) == expected


def test_endpoint_strings_are_never_consumed() -> None:
    """URL, Host header and connection string stay in attributes_json (they carry more than the endpoint)."""
    net = semconv.resolve("CLIENT", {"url.full": "http://10.0.0.1:80/a?b", "http.host": "10.0.0.1:80",
                                     "db.connection_string": "host=10.0.0.1"})
    assert net.peer_addr == "10.0.0.1" and not net.used & semconv.ENDPOINT_STRING_KEYS


_VALUE = st.one_of(st.text(max_size=40), _V4, _V6, _NAME, _PORT, st.integers(-5, 2**40), st.booleans(),
                   st.builds(lambda h, p: f"{h}:{p}", st.one_of(_V4, _NAME), _PORT),
                   st.builds(lambda h, p: f"http://{h}:{p}/x", st.one_of(_V4, _NAME), _PORT))


@given(st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER", "INTERNAL"]),
       st.dictionaries(st.sampled_from(sorted(semconv.NET_KEYS)), _VALUE, max_size=8))
def test_address_columns_only_ever_hold_ip_literals(kind: str, attrs: dict) -> None:
    net = semconv.resolve(kind, attrs)
    for addr in (net.local_addr, net.peer_addr):
        assert addr == "" or (semconv._is_ip(addr) and addr == _canonical(addr))
    for port in (net.local_port, net.peer_port):
        assert port is None or 1 <= port <= 65535
    assert not net.used & semconv.ENDPOINT_STRING_KEYS
    assert net.used <= set(attrs)
