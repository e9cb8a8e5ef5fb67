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

:func:`resolve` folds whichever are present into one five-tuple per span (local/peer address and
port, transport, family) and a logical peer name. Precedence is per side of the call because the
same key means different things on a client and a server span (docs/ingest.md has the table).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from isostack.records import normalise_addr


def is_port_key(key: str) -> bool:
    """Keys whose values are ports (they vary per connection, so readers cache resolutions without them)."""
    return key.endswith(".port")


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
    }
)

# (address key, its port key), most preferred first.
_CLIENT_PEER = (
    ("network.peer.address", "network.peer.port"),
    ("net.peer.ip", "net.peer.port"),
    ("net.sock.peer.addr", "net.sock.peer.port"),
    ("peer.ipv4", "peer.port"),
    ("peer.ipv6", "peer.port"),
    ("server.address", "server.port"),
)
_SERVER_PEER = (
    ("client.address", "client.port"),
    ("net.sock.peer.addr", "net.sock.peer.port"),
    ("network.peer.address", "network.peer.port"),
    ("net.peer.ip", "net.peer.port"),
    ("peer.ipv4", "peer.port"),
    ("peer.ipv6", "peer.port"),
)
_LOCAL = (
    ("network.local.address", "network.local.port"),
    ("net.host.ip", "net.host.port"),
    ("net.sock.host.addr", "net.sock.host.port"),
)
# Server spans: the local port is often only known as server.port / net.host.port.
_SERVER_LOCAL_PORT_FALLBACK = ("server.port", "net.host.port")

_TRANSPORT = {"ip_tcp": "tcp", "tcp": "tcp", "ip_udp": "udp", "udp": "udp", "unix": "unix", "pipe": "pipe",
              "inproc": "inproc", "quic": "quic"}
_FAMILY = {"inet": "inet", "ipv4": "inet", "inet6": "inet6", "ipv6": "inet6", "unix": "unix"}

# Which span kinds look from the server side (peer = the caller).
SERVER_SIDE = frozenset({"SERVER", "CONSUMER"})


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
    return as_int(value, (1, 65535))


@functools.lru_cache(maxsize=65536)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


# Addresses repeat heavily within a batch: parse each distinct one once.
_normalise = functools.lru_cache(maxsize=65536)(normalise_addr)


def _addr(key: str, value: Any) -> str:
    # OpenTracing's peer.ipv4 may be the address as a big-endian int (Jaeger clients did that).
    if key == "peer.ipv4" and isinstance(value, int):
        return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return _normalise(str(value)) if value not in (None, "") else ""


def _pick(cands: dict[str, Any], order: tuple[tuple[str, str], ...], used: set[str],
          require_ip: bool) -> tuple[str, int | None, str]:
    for addr_key, port_key in order:
        value = cands.get(addr_key)
        if value in (None, ""):
            continue
        addr = _addr(addr_key, value)
        # server.address / client.address may be a DNS name: only an IP literal is a coordinate.
        if require_ip and addr_key in ("server.address", "client.address") and not _is_ip(addr):
            continue
        used.add(addr_key)
        port = _port(cands.get(port_key))
        if port is not None:
            used.add(port_key)
            return addr, port, port_key
        # Same-generation port missing: take the first port any generation offers.
        for _, other_port_key in order:
            port = _port(cands.get(other_port_key))
            if port is not None:
                used.add(other_port_key)
                return addr, port, other_port_key
        return addr, None, ""
    return "", None, ""


def resolve(kind: str, cands: dict[str, Any]) -> NetCoords:
    """Fold the NET_KEYS attributes of one span (``cands``: key -> scalar value) into coordinates.

    ``kind`` is the span kind name (SERVER, CLIENT, ...). ``used`` on the result lists the keys
    whose values landed in a column, so the reader can keep the rest in attributes_json.
    """
    out = NetCoords()
    used = out.used
    server_side = kind in SERVER_SIDE
    out.peer_addr, out.peer_port, out.peer_port_key = _pick(cands, _SERVER_PEER if server_side else _CLIENT_PEER,
                                                            used, True)
    out.local_addr, out.local_port, out.local_port_key = _pick(cands, _LOCAL, used, True)
    if server_side and out.local_port is None:
        for key in _SERVER_LOCAL_PORT_FALLBACK:
            port = _port(cands.get(key))
            if port is not None:
                out.local_port = port
                out.local_port_key = key
                used.add(key)
                break
    for key in ("network.transport", "net.transport"):
        value = cands.get(key)
        if value:
            out.transport = _TRANSPORT.get(str(value).lower(), str(value).lower())
            used.add(key)
            break
    for key in ("network.type", "net.sock.family"):
        value = cands.get(key)
        if value:
            out.family = _FAMILY.get(str(value).lower(), str(value).lower())
            used.add(key)
            break
    if not out.family:
        addr = out.peer_addr or out.local_addr
        if addr and _is_ip(addr):
            out.family = "inet6" if ":" in addr else "inet"
    name_keys = ("peer.service", "net.peer.name", "peer.hostname", "net.sock.peer.name") if server_side else (
        "peer.service", "server.address", "net.peer.name", "peer.hostname", "net.sock.peer.name")
    for key in name_keys:
        value = cands.get(key)
        if value not in (None, ""):
            out.peer_name = str(value)
            used.add(key)
            break
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
