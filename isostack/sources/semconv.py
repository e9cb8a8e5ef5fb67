"""Network coordinates from every generation of the OpenTelemetry semantic conventions.

Instrumentations in the wild speak at least four dialects for "who talked to whom":

- v1.x up to 1.20 (the spec's): ``net.peer.ip`` ``net.peer.port`` ``net.host.ip`` ``net.host.port``
  ``net.transport`` (``ip_tcp``) ``net.peer.name``;
- v1.17-1.20 socket-level: ``net.sock.peer.addr`` ``net.sock.peer.port`` ``net.sock.host.addr``
  ``net.sock.host.port`` ``net.sock.family`` (``inet``/``inet6``/``unix``);
- v1.21+ (current): ``network.peer.address`` ``network.peer.port`` ``network.local.address``
  ``network.local.port`` ``network.transport`` (``tcp``) ``network.type`` (``ipv4``) plus the logical
  ``server.address``/``server.port`` and ``client.address``/``client.port``;
- OpenTracing (Jaeger/Zipkin tags): ``peer.ipv4`` (dotted or an int) ``peer.ipv6`` ``peer.port``
  ``peer.hostname`` ``peer.service``.

Real auto-instrumentation with default settings mostly sends the *logical* keys, often as one string
(tests/fixtures/instrumentation/ has what each library really sent): a URL (``url.full``,
``http.url``), a ``host:port`` (``http.host``, ``net.host.name``, ``server.address`` on some
servers), a gRPC peer (``ipv4:127.0.0.1:50051``, ``ipv6:%5B::1%5D:50051``), a connection string
(``db.connection_string``), a host name in ``net.peer.name``. :func:`parse_endpoint` reads any of
those shapes; :func:`resolve` folds whichever keys are present into one five-tuple per span
(local/peer address and port, transport, family) and a logical peer name.

Two rules keep the join honest. An address column only ever holds an IP literal: a host name is
recorded as ``peer_name`` (logical only; nothing here resolves DNS, the kernel-side recovery finds
which address the process really connected to). A port is taken as stated, or on a CLIENT span
from the scheme / ``db.system`` default the instrumentation left out (the semconv omit a default
port); a SERVER span never gets a guessed port. Precedence is per side of the call because the same
key means different things on a client and a server span (docs/ingest.md has the table).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from isostack.records import normalise_addr


def is_port_key(key: str) -> bool:
    """Keys whose values are ports (they vary per connection, so readers cache resolutions without them)."""
    return key.endswith(".port")


# Keys whose value is a whole endpoint string (URL, host:port, gRPC peer, connection string). They
# carry more than coordinates (a path, a query, credentials already redacted by the instrumentation),
# so resolve() never marks them used: they always stay in attributes_json as sent.
ENDPOINT_STRING_KEYS: frozenset[str] = frozenset(
    {"url.full", "http.url", "http.host", "net.host.name", "db.connection_string", "messaging.url"}
)
# The endpoint strings that vary per request (path, query): readers key their resolution caches by
# url_authority() of these instead of the whole value, so one cache entry serves every request to a
# server (see decode._key_class: class 3).
URL_KEYS: frozenset[str] = frozenset({"url.full", "http.url"})


def url_authority(url: str) -> str:
    """``url`` cut after its authority (``scheme://userinfo@host:port``): all :func:`parse_endpoint`
    reads of a URL. A value without ``://`` is returned whole (it is no URL; nothing is cut)."""
    start = url.find("://")
    if start < 0:
        return url
    end = start + 3
    n = len(url)
    while end < n and url[end] not in "/?#":
        end += 1
    return url[:end]


# System names that tell the default port a CLIENT span's instrumentation left out.
SYSTEM_KEYS = ("db.system", "db.system.name", "messaging.system")

# Every attribute key resolve() reads. Readers look keys up here so that only these reach the
# (slower) resolution step; everything else goes straight to attributes_json.
NET_KEYS: frozenset[str] = frozenset(
    {
        "network.peer.address", "network.peer.port", "network.local.address", "network.local.port",
        "network.transport", "network.type",
        "server.address", "server.port", "client.address", "client.port",
        "net.peer.ip", "net.peer.port", "net.peer.name", "net.host.ip", "net.host.port", "net.host.name",
        "net.transport", "net.sock.family",
        "net.sock.peer.addr", "net.sock.peer.port", "net.sock.peer.name",
        "net.sock.host.addr", "net.sock.host.port",
        "peer.ipv4", "peer.ipv6", "peer.port", "peer.hostname", "peer.service",
        "http.status_code", "http.response.status_code",
        "isostack.sock_cookie", "sock.cookie",
        *ENDPOINT_STRING_KEYS, *SYSTEM_KEYS,
    }
)

# (address key, its port key), most preferred first. Socket-level keys come before logical ones.
_CLIENT_PEER = (
    ("network.peer.address", "network.peer.port"),
    ("net.peer.ip", "net.peer.port"),
    ("net.sock.peer.addr", "net.sock.peer.port"),
    ("peer.ipv4", "peer.port"),
    ("peer.ipv6", "peer.port"),
    ("server.address", "server.port"),
    ("net.peer.name", "net.peer.port"),
    ("peer.hostname", "peer.port"),
)
# Client spans: where the server's endpoint may be written as one string, most specific first.
_CLIENT_PEER_STRINGS = ("url.full", "http.url", "http.host", "db.connection_string", "messaging.url")
_SERVER_PEER = (
    ("client.address", "client.port"),
    ("net.sock.peer.addr", "net.sock.peer.port"),
    ("network.peer.address", "network.peer.port"),
    ("net.peer.ip", "net.peer.port"),
    ("peer.ipv4", "peer.port"),
    ("peer.ipv6", "peer.port"),
    ("net.peer.name", "net.peer.port"),
)
_LOCAL = (
    ("network.local.address", "network.local.port"),
    ("net.host.ip", "net.host.port"),
    ("net.sock.host.addr", "net.sock.host.port"),
)
# Server spans: the local endpoint is often only known logically -- server.port / net.host.port, or
# the Host header as "10.88.0.12:8000" in server.address / net.host.name / http.host, or url.full.
_SERVER_LOCAL_PORT_FALLBACK = ("server.port", "net.host.port")
_SERVER_LOCAL_STRINGS = ("server.address", "net.host.name", "http.host", "url.full", "http.url")

_TRANSPORT = {"ip_tcp": "tcp", "tcp": "tcp", "ip_udp": "udp", "udp": "udp", "unix": "unix", "pipe": "pipe",
              "inproc": "inproc", "quic": "quic"}
_FAMILY = {"inet": "inet", "ipv4": "inet", "inet6": "inet6", "ipv6": "inet6", "unix": "unix"}

# Which span kinds look from the server side (peer = the caller).
SERVER_SIDE = frozenset({"SERVER", "CONSUMER"})

# Default ports of URL schemes (their RFCs / IANA registrations) and of the systems the db/messaging
# semconv name: the conventions make server.port conditional on being non-default, so a client span
# to a default port often has none. jdbc:/+driver suffixes are stripped before the lookup.
DEFAULT_PORTS: dict[str, int] = {
    "http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "grpc": 80, "grpcs": 443,
    "postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "redis": 6379, "rediss": 6379,
    "mongodb": 27017, "mssql": 1433, "sqlserver": 1433, "cassandra": 9042, "elasticsearch": 9200,
    "memcached": 11211, "couchdb": 5984, "oracle": 1521, "amqp": 5672, "amqps": 5671, "rabbitmq": 5672,
    "kafka": 9092, "nats": 4222, "mqtt": 1883, "mqtts": 8883, "clickhouse": 9000, "cockroachdb": 26257,
    "valkey": 6379,
}


class NetCoords:
    """The resolved network coordinates of one span (plain attributes: cheap to create)."""

    __slots__ = ("local_addr", "local_port", "peer_addr", "peer_port", "transport", "family", "peer_name",
                 "http_status", "sock_cookie", "used", "local_port_key", "peer_port_key")

    def __init__(self) -> None:
        self.local_addr = ""
        self.local_port: int | None = None
        self.peer_addr = ""
        self.peer_port: int | None = None
        self.transport = ""
        self.family = ""
        self.peer_name = ""
        self.http_status: int | None = None
        self.sock_cookie: int | None = None
        self.used: set[str] = set()
        # which attribute supplied each port (readers reuse a resolution for spans differing only in ports)
        self.local_port_key = ""
        self.peer_port_key = ""


class Endpoint(NamedTuple):
    """One endpoint read from a string: ``host`` is a normalised IP literal when ``is_ip``, else a
    host name as written ("" when the string names none); ``port`` as written (None: none given);
    ``default_port`` the scheme's (None: no scheme or an unknown one); ``transport`` "unix" for a
    socket path, else ""."""

    host: str
    port: int | None
    is_ip: bool
    transport: str = ""
    default_port: int | None = None


INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)


def as_int(value: Any, bounds: tuple[int, int]) -> int | None:
    """``int(value)`` when it converts and lies within ``bounds`` (its column's type), else None.

    None means "not promoted": the caller leaves the attribute in attributes_json, untouched.
    Infinite and NaN doubles, text that is not a number and values past the column's range all end
    up there instead of raising (an OverflowError, or Arrow refusing the whole column).
    """
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if bounds[0] <= number <= bounds[1] else None


def _port(value: Any) -> int | None:
    # (a bool converts like an int, as the readers' port caches assume: True is port 1)
    return as_int(value, (1, 65535))


def _port_text(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) < 65536 else None


@functools.lru_cache(maxsize=65536)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


# Addresses repeat heavily within a batch: parse each distinct one once.
_normalise = functools.lru_cache(maxsize=65536)(normalise_addr)

_NONE = Endpoint("", None, False)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# key=value connection strings: libpq ("host=h port=5432 dbname=d") and ADO.NET ("Server=h,1433;...")
_KV_PAIR = re.compile(r"([A-Za-z][A-Za-z ]*?)\s*=\s*('(?:[^'\\]|\\.)*'|[^;\s]*)")
_KV_HOST_KEYS = ("host", "hostaddr", "server", "data source", "address", "addr", "network address")
_KV_PORT_KEYS = ("port",)


def _host_port(text: str) -> Endpoint:
    """``[v6]:port``, ``[v6]``, a bare IP (v6 included, zone ids kept out), ``host:port``, ``host``."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return _NONE
        host = text[1:close]
        rest = text[close + 1:]
        port = _port_text(rest[1:]) if rest.startswith(":") else None
        if rest and port is None:
            return _NONE
        return Endpoint(_normalise(host), port, True) if _is_ip(host) else _NONE
    if _is_ip(text):
        return Endpoint(_normalise(text), None, True)
    host, sep, port_text = text.rpartition(":")
    if sep and ":" not in host:
        port = _port_text(port_text)
        if port is None or not host:
            return _NONE
        return Endpoint(_normalise(host), port, True) if _is_ip(host) else Endpoint(host.lower(), port, False)
    if ":" in text or not text or any(c in text for c in "/@ \t"):
        return _NONE
    return Endpoint(text.lower(), None, False)


def _url(text: str, scheme: str) -> Endpoint:
    base = scheme.lower()
    if base == "jdbc":  # jdbc:postgresql://h:5432/db
        return parse_endpoint(text[5:])
    # redis+unix://, http+unix://%2Fvar%2Frun%2Fapp.sock/ , unix:///path
    if base == "unix" or base.endswith("+unix"):
        return Endpoint("", None, False, "unix")
    base = base.split("+", 1)[0]
    try:
        parts = urlsplit(text)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return _NONE
    default = DEFAULT_PORTS.get(base)
    if not netloc:
        return Endpoint("", None, False, default_port=default)
    if netloc.count(":") > 1 and not netloc.startswith("["):
        # an IPv6 literal written without brackets (urllib3's instrumentation writes http://::1:8080/x):
        # a well-formed address as a whole wins, else the last ":digits" is the port
        if _is_ip(netloc):
            return Endpoint(_normalise(netloc), None, True, default_port=default)
        host, _, port_text = netloc.rpartition(":")
        port = _port_text(port_text)
        if _is_ip(host) and port is not None:
            return Endpoint(_normalise(host), port, True, default_port=default)
        return Endpoint("", None, False, default_port=default)
    # a multi-host URL (postgresql://h1:5432,h2:5433/db): the first host is the one tried first
    if "," in netloc:
        first = _host_port(netloc.split(",", 1)[0])
        return first._replace(default_port=default)
    try:
        port = parts.port or None  # port 0 is no port
    except ValueError:
        return _NONE
    host = parts.hostname or ""
    if _is_ip(host):
        return Endpoint(_normalise(host), port, True, default_port=default)
    if not host or any(c in host for c in "/ \t"):
        return Endpoint("", port, False, default_port=default)
    return Endpoint(host, port, False, default_port=default)


def _grpc_peer(text: str, scheme: str) -> Endpoint:
    """gRPC's peer strings: ``ipv4:127.0.0.1:50051``, ``ipv6:[::1]:50051`` (percent-encoded by newer
    cores: ``ipv6:%5B::1%5D:50051``), several comma-separated, ``dns:///host:port``, ``unix:path``."""
    rest = unquote(text[len(scheme) + 1:])
    if scheme == "unix" or scheme == "unix-abstract":
        return Endpoint("", None, False, "unix")
    if scheme == "dns":
        rest = rest.lstrip("/").rpartition("/")[2] if rest.startswith("//") else rest
    first = rest.split(",", 1)[0].strip()
    if scheme == "ipv6" and not first.startswith("[") and not _is_ip(first):
        host, _, port_text = first.rpartition(":")  # ipv6:::1:50051 (no brackets): the last part is the port
        port = _port_text(port_text)
        if _is_ip(host) and port is not None:
            return Endpoint(_normalise(host), port, True)
    return _host_port(first)


_GRPC_SCHEMES = frozenset({"ipv4", "ipv6", "dns", "unix", "unix-abstract"})


@functools.lru_cache(maxsize=65536)
def parse_endpoint(text: str) -> Endpoint:
    """Read the endpoint out of any string shape real instrumentation writes one in.

    URLs (``https://user@[::1]/x`` -> ``::1``, port None, default_port 443; ``jdbc:`` prefixes;
    multi-host ``postgresql://h1,h2/db`` -> the first), ``host:port`` and ``[v6]:port``, bare IP
    literals (IPv4-mapped IPv6 becomes IPv4), gRPC peers (``ipv4:127.0.0.1:50051``,
    ``ipv6:%5B::1%5D:50051``, ``dns:///h:443``), key=value connection strings (libpq
    ``host=... port=...``, ADO.NET ``Server=h,1433``), and socket paths / ``unix:`` (transport
    "unix"). Never resolves DNS. Anything unreadable gives ``Endpoint("", None, False)``.
    """
    text = text.strip()
    if not text:
        return _NONE
    if text.startswith("/") or text.startswith("@"):  # a unix socket path (or an abstract one)
        return Endpoint("", None, False, "unix")
    m = _SCHEME.match(text)
    if m is not None:
        scheme = m.group(1).lower()
        if scheme in _GRPC_SCHEMES:
            return _grpc_peer(text, scheme)
        if text[m.end():m.end() + 2] == "//" or scheme == "jdbc":
            return _url(text, m.group(1))
    if "=" in text:
        return _connection_kv(text)
    return _host_port(text)


def _connection_kv(text: str) -> Endpoint:
    pairs: dict[str, str] = {}
    for key, value in _KV_PAIR.findall(text):
        pairs.setdefault(key.strip().lower(), value.strip("'"))
    host = next((pairs[k] for k in _KV_HOST_KEYS if pairs.get(k)), "")
    port = next((_port_text(pairs[k]) for k in _KV_PORT_KEYS if pairs.get(k)), None)
    if host.lower().startswith("tcp:"):
        host = host[4:]
    if host.startswith("/"):
        return Endpoint("", None, False, "unix")
    ep = _host_port(host.split(",", 1)[0]) if host else _NONE
    if "," in host and ep.port is None:  # ADO.NET: Server=host,1433 (libpq's host=h1,h2 is a list of hosts)
        ep = ep._replace(port=_port_text(host.rpartition(",")[2]))
    return ep._replace(port=port) if port is not None else ep


def _addr_endpoint(key: str, value: Any) -> Endpoint:
    # OpenTracing's peer.ipv4 may be the address as a big-endian int (Jaeger clients did that).
    if key == "peer.ipv4" and isinstance(value, int) and not isinstance(value, bool):
        return Endpoint(str(ipaddress.IPv4Address(value & 0xFFFFFFFF)), None, True)
    if value in (None, "") or not isinstance(value, str | bytes | int):
        return _NONE
    return parse_endpoint(str(value))


def _pick(cands: dict[str, Any], order: tuple[tuple[str, str], ...], used: set[str]
          ) -> tuple[str, int | None, str]:
    """The first pair in ``order`` whose address is an IP literal: (address, port, the port's key).

    A port written into the address string (``10.0.0.1:5432``) counts as the pair's own; with none,
    the first valid port any pair of the same side offers is taken (generations mix on one span).
    """
    for addr_key, port_key in order:
        value = cands.get(addr_key)
        if value in (None, ""):
            continue
        ep = _addr_endpoint(addr_key, value)
        if not ep.is_ip:
            continue
        if addr_key not in ENDPOINT_STRING_KEYS:
            used.add(addr_key)
        port = _port(cands.get(port_key))
        if port is not None:
            used.add(port_key)
            return ep.host, port, port_key
        if ep.port is not None:
            return ep.host, ep.port, ""
        port, key = _first_port(cands, order, used)
        return ep.host, port, key
    return "", None, ""


def _first_port(cands: dict[str, Any], order: tuple[tuple[str, str], ...], used: set[str]
                ) -> tuple[int | None, str]:
    for _, port_key in order:
        port = _port(cands.get(port_key))
        if port is not None:
            used.add(port_key)
            return port, port_key
    return None, ""


def _system_default_port(cands: dict[str, Any]) -> int | None:
    for key in SYSTEM_KEYS:
        value = cands.get(key)
        if isinstance(value, str) and value:
            port = DEFAULT_PORTS.get(value.lower())
            if port is not None:
                return port
    return None


def _resolve_client_peer(cands: dict[str, Any], out: NetCoords) -> None:
    """Client side: the peer is the server. Socket keys, then logical ones, then endpoint strings."""
    used = out.used
    out.peer_addr, out.peer_port, out.peer_port_key = _pick(cands, _CLIENT_PEER, used)
    strings = [parse_endpoint(v) for k in _CLIENT_PEER_STRINGS
               if isinstance(v := cands.get(k), str) and v]
    if not out.peer_addr:
        for ep in strings:
            if ep.is_ip:
                out.peer_addr = ep.host
                if out.peer_port is None:
                    out.peer_port = ep.port
                break
    if out.peer_port is None:
        out.peer_port, out.peer_port_key = _first_port(cands, _CLIENT_PEER, used)
    if out.transport in ("", "other") and any(ep.transport == "unix" for ep in strings):
        out.transport = "unix"
    if out.peer_port is None and out.transport != "unix":
        # the string's own port, else its scheme's default, else the db/messaging system's default
        out.peer_port = next((ep.port for ep in strings if ep.port is not None), None) or \
            next((ep.default_port for ep in strings if ep.default_port is not None), None) or \
            _system_default_port(cands)
    if not out.peer_name:
        out.peer_name = next((ep.host for ep in strings if ep.host), "")


def _resolve_server_local(cands: dict[str, Any], out: NetCoords) -> None:
    """Server side: the Host header / request URL name our own endpoint when no socket key does."""
    used = out.used
    if out.local_port is None:
        for key in _SERVER_LOCAL_PORT_FALLBACK:
            port = _port(cands.get(key))
            if port is not None:
                out.local_port = port
                out.local_port_key = key
                used.add(key)
                break
    if out.local_addr and out.local_port is not None:
        return
    for key in _SERVER_LOCAL_STRINGS:
        value = cands.get(key)
        if not isinstance(value, str) or not value:
            continue
        ep = parse_endpoint(value)
        if not out.local_addr and ep.is_ip:
            out.local_addr = ep.host
        if out.local_port is None and ep.port is not None:
            out.local_port = ep.port


def resolve(kind: str, cands: dict[str, Any]) -> NetCoords:
    """Fold the NET_KEYS attributes of one span (``cands``: key -> scalar value) into coordinates.

    ``kind`` is the span kind name (SERVER, CLIENT, ...). ``used`` on the result lists the keys
    whose values landed in a column, so the reader can keep the rest in attributes_json.
    Addresses are IP literals only; a peer known only by name lands in ``peer_name``.
    """
    out = NetCoords()
    used = out.used
    server_side = kind in SERVER_SIDE
    for key in ("network.transport", "net.transport"):
        value = cands.get(key)
        if value:
            out.transport = _TRANSPORT.get(str(value).lower(), str(value).lower())
            used.add(key)
            break
    if server_side:
        out.peer_addr, out.peer_port, out.peer_port_key = _pick(cands, _SERVER_PEER, used)
    out.local_addr, out.local_port, out.local_port_key = _pick(cands, _LOCAL, used)
    if server_side:
        _resolve_server_local(cands, out)
    name_keys = ("peer.service", "net.peer.name", "peer.hostname", "net.sock.peer.name") if server_side else (
        "peer.service", "server.address", "net.peer.name", "peer.hostname", "net.sock.peer.name")
    for key in name_keys:
        value = cands.get(key)
        if value not in (None, ""):
            ep = parse_endpoint(str(value)) if key != "peer.service" else _NONE
            # a socket path is no peer name (and says the transport: redis-py calls it "other");
            # "host:port" and "[::1]" name the host
            if ep.transport == "unix":
                if out.transport in ("", "other"):
                    out.transport = "unix"
                continue
            out.peer_name = ep.host or str(value)
            used.add(key)
            break
    if not server_side:
        _resolve_client_peer(cands, out)
    for key in ("network.type", "net.sock.family"):
        value = cands.get(key)
        if value:
            out.family = _FAMILY.get(str(value).lower(), str(value).lower())
            used.add(key)
            break
    if not out.family:
        addr = out.peer_addr or out.local_addr
        if addr:
            out.family = "inet6" if ":" in addr else "inet"
        elif out.transport == "unix":
            out.family = "unix"
    # A value that does not convert or does not fit the column (int32 / int64) stays in attributes_json.
    for key in ("http.response.status_code", "http.status_code"):
        value = cands.get(key)
        if value not in (None, ""):
            out.http_status = as_int(value, INT32_RANGE)
            if out.http_status is not None:
                used.add(key)
            break
    for key in ("isostack.sock_cookie", "sock.cookie"):
        value = cands.get(key)
        if value not in (None, ""):
            out.sock_cookie = as_int(value, INT64_RANGE)
            if out.sock_cookie is not None:
                used.add(key)
            break
    return out


# Resource attributes promoted to columns (column name -> attribute key).
RESOURCE_COLUMNS: dict[str, str] = {
    "service_name": "service.name",
    "host_name": "host.name",
    "container_id": "container.id",
    "process_pid": "process.pid",
    "k8s_namespace": "k8s.namespace.name",
    "k8s_pod_name": "k8s.pod.name",
}
_RESOURCE_KEYS = frozenset(RESOURCE_COLUMNS.values())


def split_resource(attrs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split resource attributes into the promoted columns and the rest (for resource_json).

    ``process_pid`` is an int or None; a ``process.pid`` that is not an int64 (text, inf, 2**70)
    stays in the rest instead. The other columns are strings ("" when absent).
    Every other ``k8s.*`` attribute stays in the rest, where SQL can still reach it.
    """
    cols: dict[str, Any] = {}
    for col, key in RESOURCE_COLUMNS.items():
        value = attrs.get(key)
        if col == "process_pid":
            cols[col] = as_int(value, INT64_RANGE) if value not in (None, "") else None
        else:
            cols[col] = "" if value is None else str(value)
    rest = {k: v for k, v in attrs.items() if k not in _RESOURCE_KEYS}
    pid = attrs.get("process.pid")
    if cols["process_pid"] is None and pid not in (None, ""):
        rest["process.pid"] = pid
    return cols, rest
