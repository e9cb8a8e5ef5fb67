#!/usr/bin/env bash
# Idempotent machine set-up for isostack: Debian packages, tracefs, a venv with the package installed.
# Called by `make demo` and `make test`; safe to run again (does only what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tool and its tests drive for real (eBPF, netns/tc/iptables faults, load, servers).
APT_PACKAGES=(bpftrace iproute2 iptables ethtool conntrack fio wrk iperf3 nginx-light procps sysstat
              prometheus prometheus-alertmanager prometheus-node-exporter
              chromium chromium-driver  # the web UI's real-browser test
              runsc  # gVisor (Debian's release runs on the ptrace platform here): the L-4 sandbox tests
              qemu-system-x86 linux-image-amd64 busybox-static  # a QEMU/TCG guest: the L-1/L-2 VM tests
              postgresql redis-server nodejs)  # real servers for the instrumentation corpus recorder

log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's packaged services must not start on install: tests start their own on loopback.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
  # eBPF tracepoint programs need tracefs; this microVM does not mount it at boot.
  if [ ! -e /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs (eBPF probes will be skipped)"
  fi
else
  log "not root or no apt-get: skipping Debian packages and tracefs (root-only tests will skip and say why)"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.isostack-installed
# reinstall when the build inputs changed (pyproject.toml, setup.py, the Cython decoder) or its .so is missing
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py isostack -newer "$stamp" \( -name pyproject.toml \
     -o -name setup.py -o -name '*.pyx' \) -print -quit)" ] || ! ls isostack/sources/otlp/_wire.*.so >/dev/null 2>&1; then
  log "installing isostack and its dependencies into .venv"
  # pip and the build backend are chatty even with -q: keep their output in a log, show it on failure
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -e '.[dev]'; } > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    log "pip install failed (log above, also in .venv/pip-install.log)"
    exit 1
  fi
  touch "$stamp"
fi
