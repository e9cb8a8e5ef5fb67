"""The network a live test builds for itself: a veth pair into a network namespace of its own.

Every live network test needs the same thing: a namespace no other test uses, a veth pair whose
peer end lives in it, an address on each end, both ends up, and nothing left behind however the
test ends. Each test keeps its own names and subnet (see its docstring) so two of them never meet;
what it does to the pair (a tbf, an XDP program, a tap beside it, iptables) stays in the test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def ip(*args: str) -> None:
    """Run ``ip ARGS``; a failure raises naming the command and what ip said."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")


def _quiet(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, timeout=10)


@dataclass(frozen=True)
class VethPair:
    """A veth pair: ``dev`` (address ``addr``) in the root namespace or in ``dev_netns``, ``peer``
    (address ``peer_addr``) in ``netns``, whose inode is ``netns_inode``."""

    netns: str
    dev: str
    peer: str
    addr: str
    peer_addr: str
    netns_inode: int
    dev_netns: str | None = None


@contextmanager
def veth_pair(netns: str, dev: str, peer: str, addr: str, peer_addr: str, prefix: int = 24, *,
              dev_netns: str | None = None, lo_up: bool = False) -> Iterator[VethPair]:
    """Create namespace ``netns`` (and ``dev_netns`` when given: then both ends are in namespaces of
    the test's own) and the pair ``dev``/``peer`` between them, ``addr``/``peer_addr`` with
    ``prefix`` on the ends, both up (``lo_up``: the namespace's loopback too); remove all of it on
    exit. Leftovers of an earlier run that was killed are removed first."""
    spaces = [netns] + ([dev_netns] if dev_netns else [])
    _quiet("link", "del", dev)
    for ns in spaces:
        _quiet("netns", "del", ns)
    try:
        for ns in spaces:
            ip("netns", "add", ns)
        ip("link", "add", dev, "type", "veth", "peer", "name", peer, "netns", netns)
        on_dev: tuple[str, ...] = ("-n", dev_netns) if dev_netns else ()
        if dev_netns:
            ip("link", "set", dev, "netns", dev_netns)
        ip(*on_dev, "addr", "add", f"{addr}/{prefix}", "dev", dev)
        ip("-n", netns, "addr", "add", f"{peer_addr}/{prefix}", "dev", peer)
        ip(*on_dev, "link", "set", dev, "up")
        ip("-n", netns, "link", "set", peer, "up")
        if lo_up:
            ip("-n", netns, "link", "set", "lo", "up")
        yield VethPair(netns, dev, peer, addr, peer_addr, os.stat(f"/run/netns/{netns}").st_ino, dev_netns)
    finally:
        _quiet("link", "del", dev)  # the root end (a namespace's devices go with it)
        for ns in spaces:
            _quiet("netns", "del", ns)
