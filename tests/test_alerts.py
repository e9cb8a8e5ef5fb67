"""Alert convergence: a storm from one root cause -> one notification; two faults stay two.

The slow test drives a real Alertmanager (Debian prometheus-alertmanager) on loopback, routing by
labels to ``isostack alerts``' receiver, which forwards to a sink that records notifications.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from isostack.errors import InputError
from isostack.ops import alerts, storm
from tests.conftest import have, run_cli, sigint_default

T0 = 1_764_050_000_000_000_000


def converge(payloads: list[dict[str, Any]], diags: list) -> alerts.Converger:
    c = alerts.Converger(alerts.Resolver(lambda since, until: diags))
    for p in payloads:
        c.ingest(alerts.parse_webhook(p))
    return c


def test_one_root_cause_storm_converges_to_one_notification() -> None:
    f = storm.throttle_fault()
    c = converge(storm.webhook(storm.alerts(f, T0), group_size=4), storm.diagnoses(f, T0))
    st = c.stats()
    assert st["alerts"] == 23 and st["notifications"] == 1
    assert st["convergence_rate"] == pytest.approx(1 - 1 / 23, abs=1e-4) and st["convergence_rate"] >= 0.9
    inc = st["by_incident"][0]
    assert (inc["layer"], inc["mechanism"], inc["diagnosed"]) == ("L-3", "cpu_throttle", True)


def test_two_independent_faults_stay_two() -> None:
    f1, f2 = storm.throttle_fault(), storm.disk_fault()
    mixed = storm.alerts(f1, T0) + storm.alerts(f2, T0)
    mixed = mixed[::2] + mixed[1::2]  # interleaved, as a real storm arrives
    c = converge(storm.webhook(mixed, group_size=3), storm.diagnoses(f1, T0) + storm.diagnoses(f2, T0))
    st = c.stats()
    assert st["notifications"] == 2
    assert {(i["mechanism"], i["alerts"]) for i in st["by_incident"]} == {("cpu_throttle", 23), ("disk_saturation", 10)}


def test_same_mechanism_on_two_cgroups_is_not_merged() -> None:
    """Same root mechanism but different cause location: two incidents (no over-merging)."""
    fa = storm.throttle_fault(victim="payment", upstream=("checkout",))
    fb = storm.throttle_fault(victim="search", upstream=("catalog",))
    c = converge(storm.webhook(storm.alerts(fa, T0) + storm.alerts(fb, T0)),
                 storm.diagnoses(fa, T0) + storm.diagnoses(fb, T0))
    assert c.stats()["notifications"] == 2


def test_recorded_case1_alerts_group_by_the_incident_verdict(tmp_path: Path) -> None:
    """Spec case 1 recorded live (payment throttled; its hops are order -> payment): the span-p95 alerts
    of every service on the path - ingress too, which no slow hop names - and the throttle alerts form
    one incident, the verdict's (15 alerts, 1 notification: 93 %); unrelated alerts stay their own."""
    from isostack.locate.diagnose import diagnose_all
    from tests.test_cases import CASES_DIR, load_case

    store, truth, meta = load_case(CASES_DIR / "case1", tmp_path / "store")
    ds = diagnose_all(store, since_ns=meta["inject_ns"], until_ns=meta["revert_ns"], limit=20)
    assert {d.slow_hop.service for d in ds if d.slow_hop} == {"order"}  # ingress is never a slow hop here
    fault = storm.Fault("throttle", "payment", ("order", "ingress"), "/isostack-testbed/payment", "ctr-payment")
    storm_alerts = storm.alerts(fault, meta["inject_ns"])
    # another service's p95 and a disk on another host, at the same time: on none of the incident's traces
    disk = storm.alerts(storm.disk_fault(), meta["inject_ns"])
    unrelated = [disk[0], disk[-1]]
    from isostack.locate.verdict import verdict_for

    con = store.connect()
    c = alerts.Converger(alerts.Resolver(lambda since, until: ds, verdicts=lambda window: verdict_for(con, window)))
    for p in storm.webhook(storm_alerts + unrelated, group_size=4):
        c.ingest(alerts.parse_webhook(p))
    con.close()
    st = c.stats()
    assert (st["alerts"], st["notifications"]) == (len(storm_alerts) + 2, 3)
    main = next(i for i in st["by_incident"] if i["mechanism"] == truth["mechanism"])
    assert main["alerts"] == len(storm_alerts) == 15 and "/isostack-testbed/payment" in main["locations"]
    assert 1 - 1 / main["alerts"] >= 0.9
    others = sorted((i["mechanism"], i["alerts"], i["diagnosed"]) for i in st["by_incident"] if i is not main)
    assert others == [("app_self_time", 1, False), ("disk_saturation", 1, False)]


def test_far_apart_in_time_is_not_merged() -> None:
    f = storm.throttle_fault(upstream=())
    later = T0 + 3600 * 10**9
    c = converge(storm.webhook(storm.alerts(f, T0) + storm.alerts(f, later)),
                 storm.diagnoses(f, T0) + storm.diagnoses(f, later))
    assert c.stats()["notifications"] == 2


def test_without_diagnoses_alerts_fall_back_to_labels() -> None:
    f = storm.throttle_fault()
    st = converge(storm.webhook(storm.alerts(f, T0)), []).stats()
    # Labels alone cannot tie span alerts of five services to one cgroup: far below the bar.
    assert st["notifications"] > 10 and st["convergence_rate"] < 0.9
    assert all(not i["diagnosed"] for i in st["by_incident"])


def test_resent_alerts_are_counted_once() -> None:
    f = storm.throttle_fault()
    payloads = storm.webhook(storm.alerts(f, T0))
    c = converge(payloads + payloads, storm.diagnoses(f, T0))
    assert c.stats()["alerts"] == 23


def test_bad_payload_names_the_field() -> None:
    with pytest.raises(InputError, match="field 'version'"):
        alerts.parse_webhook({"version": "3", "alerts": []}, "hook.json")
    with pytest.raises(InputError, match=r"alerts\[1\]\.startsAt"):
        alerts.parse_webhook({"version": "4", "alerts": [{"labels": {}}, {"labels": {}, "startsAt": "yesterday"}]})


def test_cli_replay_with_recorded_diagnoses(tmp_path: Path) -> None:
    f1, f2 = storm.throttle_fault(), storm.disk_fault()
    hooks = tmp_path / "webhooks.jsonl"
    hooks.write_text("\n".join(json.dumps(p) for p in storm.webhook(storm.alerts(f1, T0) + storm.alerts(f2, T0), 6)))
    diag = tmp_path / "diag.json"
    # The exact shape `isostack diagnose --all --json` prints (to_json adds baseline, title, chain_line ...).
    from isostack.report.json_report import to_json

    diag.write_text(json.dumps([to_json(d) for d in storm.diagnoses(f1, T0) + storm.diagnoses(f2, T0)]))
    res = run_cli("alerts", "replay", str(hooks), "--diagnoses", str(diag), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["alerts"], out["notifications"]) == (33, 2)
    assert out["notifications_sent"][0]["chain"][0]["mechanism"] == "cpu_throttle"
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "4", "alerts": {}}')
    res = run_cli("alerts", "replay", str(bad))
    assert res.returncode == 1 and "bad.json:1: field 'alerts'" in res.stderr


# ---------------------------------------------------------------- real Alertmanager
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """The configured downstream webhook: records every notification isostack forwards."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                sink.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up in {timeout_s} s")


def start_alertmanager(tmp: Path, receiver_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = tmp / "alertmanager.yml"
    # Label-based grouping, as deployed today: Alertmanager alone would send one notification per
    # (alertname, service, instance) group.
    cfg.write_text(f"""
route:
  receiver: isostack
  group_by: [alertname, service_name, instance, pod]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: isostack
    webhook_configs:
      - url: {receiver_url}
        send_resolved: false
""")
    proc = subprocess.Popen(["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={tmp / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "am.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/-/ready")
    except AssertionError:
        proc.kill()
        raise
    return proc, url


def post_alerts(am_url: str, batch: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(am_url + "/api/v2/alerts", data=json.dumps(batch).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


@pytest.mark.slow
@pytest.mark.parametrize("two_faults", [False, True], ids=["one-root-cause", "two-independent-faults"])
def test_real_alertmanager_storm(tmp_path: Path, two_faults: bool) -> None:
    if not have("prometheus-alertmanager"):
        pytest.skip("prometheus-alertmanager is not installed (Debian package prometheus-alertmanager)")
    now = time.time_ns() - 60 * 10**9
    faults = [storm.throttle_fault()] + ([storm.disk_fault()] if two_faults else [])
    diags = [d for f in faults for d in storm.diagnoses(f, now)]
    api_alerts = [a for f in faults for a in storm.alerts(f, now)]
    sink = Sink()
    conv = alerts.Converger(alerts.Resolver(lambda since, until: diags), alerts.webhook_notifier(sink.url))
    receiver = alerts.make_server(conv, "127.0.0.1", 0)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    am, am_url = start_alertmanager(tmp_path, f"http://127.0.0.1:{receiver.server_address[1]}/")
    try:
        for k in range(0, len(api_alerts), 7):  # the storm arrives in bursts
            post_alerts(am_url, api_alerts[k:k + 7])
            time.sleep(0.3)
        deadline = time.time() + 30
        while time.time() < deadline and conv.stats()["alerts"] < len(api_alerts):
            time.sleep(0.3)
        time.sleep(1.5)  # let Alertmanager's group_interval re-sends arrive too
        st = conv.stats()
    finally:
        am.terminate()
        am.wait(10)
        receiver.shutdown()
        sink.server.shutdown()
    assert st["alerts"] == len(api_alerts), (st, (tmp_path / "am.log").read_text()[-2000:])
    assert st["notifications"] == len(faults) == len(sink.received)
    assert st["convergence_rate"] >= 0.9
    roots = {n["root_cause"]["mechanism"] for n in sink.received}
    assert roots == ({"cpu_throttle", "disk_saturation"} if two_faults else {"cpu_throttle"})
    for n in sink.received:
        assert n["chain"] and n["chain"][0]["mechanism"] == n["root_cause"]["mechanism"]
        assert n["alert_count"] >= 1


@pytest.mark.slow
def test_cli_serve_receives_forwards_and_reports(tmp_path: Path) -> None:
    """`isostack alerts serve` as a user runs it: POST webhooks, one forward, /stats, clean exit on SIGINT."""
    import signal
    import sys

    f = storm.throttle_fault()
    diag = tmp_path / "diag.json"
    diag.write_text(json.dumps([d.to_dict() for d in storm.diagnoses(f, T0)]))
    sink = Sink()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(tmp_path / "store"), "alerts", "serve",
                             "--listen", f"127.0.0.1:{port}", "--forward", sink.url, "--diagnoses", str(diag)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/healthy")
        for p in storm.webhook(storm.alerts(f, T0), group_size=5):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(p).encode(), method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"version": "3"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=5)
        assert err.value.code == 400 and "field 'version'" in err.value.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            st = json.loads(r.read())
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        sink.server.shutdown()
    assert (st["alerts"], st["notifications"]) == (23, 1) and len(sink.received) == 1
    assert "23 alerts -> 1 notifications; convergence 95.7%" in out
