"""bcc/bpftrace text readers on the tools' own *_example.txt files (tests/fixtures/bcc/SOURCES)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isostack.errors import InputError
from isostack.sources import bcc_text
from isostack.store import Store
from tests.conftest import FIXTURES, run_cli

BCC = FIXTURES / "bcc"
BASE_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z


def _rows(name: str, **kw) -> list[dict]:
    return bcc_text.parse_file(BCC / name, strict=False, base_ts_ns=BASE_NS, **kw).to_pylist()


def test_tcplife_all_variants_become_tcp_life_rows() -> None:
    rows = _rows("tcplife_example.txt")
    assert len(rows) == 43  # 8 + 6 (-w) + 12 + 8 (-t) + 8 (CSV) + 1 (-L)
    assert {r["kind"] for r in rows} == {"tcp_life"}
    curl = rows[2]
    assert (curl["pid"], curl["comm"], curl["saddr"], curl["sport"], curl["daddr"], curl["dport"]) == (
        22598, "curl", "100.66.3.172", 61620, "52.205.89.26", 80)
    assert curl["value"] == pytest.approx(91.79e6)  # MS -> ns
    sshd = next(r for r in rows if r["pid"] == 7619)
    assert json.loads(sshd["detail_json"]) == {"tx_kb": 5, "rx_kb": 10255}
    ipv6 = next(r for r in rows if r["comm"] == "ssh")
    assert ipv6["saddr"] == "fe80::8a3:9dff:fed5:6b19" and ipv6["dport"] == 22
    timed = [r for r in rows if r["pid"] == 6042]  # -t: TIME(s) 3.069136 after the capture start
    assert timed[0]["ts_ns"] == BASE_NS + 3_069_136_000
    csv = next(r for r in rows if r["pid"] == 7404)
    assert csv["comm"] == "recordProgramSt" and csv["value"] == pytest.approx(0.30e6)
    assert all(r["source"] == "bcc_text:tcplife" for r in rows)


def test_tcpretrans_events_and_counts() -> None:
    rows = _rows("tcpretrans_example.txt")
    assert len(rows) == 17
    first = rows[0]
    assert (first["saddr"], first["sport"], first["daddr"], first["dport"]) == ("10.153.223.157", 22, "69.53.245.40", 34619)
    assert json.loads(first["detail_json"]) == {"state": "ESTABLISHED", "type": "retransmit"}
    tlp = [r for r in rows if json.loads(r["detail_json"]).get("type") == "tail_loss_probe"]
    assert len(tlp) == 1 and tlp[0]["dport"] == 46444
    counted = rows[-3:]
    assert [r["value"] for r in counted] == [700, 345, 211]
    assert counted[0]["daddr"] == "172.217.21.194" and counted[0]["dport"] == 443


def test_tcpdrop_keeps_the_kernel_stack() -> None:
    rows = _rows("tcpdrop_example.txt")
    assert len(rows) == 2
    d = json.loads(rows[1]["detail_json"])
    assert (rows[1]["saddr"], rows[1]["sport"], rows[1]["dport"], rows[1]["pid"]) == ("127.0.0.1", 8198, 48280, 12431)
    assert d["state"] == "CLOSE" and d["flags"] == "RST|ACK"
    assert d["stack"][0] == "tcp_drop+0x1" and len(d["stack"]) == 9
    assert len(json.loads(rows[0]["detail_json"])["stack"]) == 29


def test_biolatency_histograms_p99_from_buckets_and_per_disk() -> None:
    rows = _rows("biolatency_example.txt")
    assert len(rows) == 10  # 1 + 5 (-mT 1 5) + 1 (-Q) + 3 (-D)
    first = json.loads(rows[0]["detail_json"])
    assert first["count"] == 277 and first["printed_unit"] == "usecs"
    # 99 % of 277 = 274.23: 273 I/Os are below 32768 us, then 1.23 of the 2 in [32768, 65536) us.
    assert rows[0]["value"] == pytest.approx((32768 + 32768 * 1.23 / 2) * 1000)
    assert first["hist"][0] == [64_000, 128_000, 1]
    msecs = json.loads(rows[1]["detail_json"])
    assert msecs["printed_unit"] == "msecs" and msecs["count"] == 103
    assert rows[1]["ts_ns"] == BASE_NS - (22 * 3600 + 13 * 60 + 20) * 10**9 + (6 * 3600 + 20 * 60 + 16) * 10**9
    assert [r["device"] for r in rows[-3:]] == ["xvdb", "xvdc", "xvda1"]


def test_bpftrace_runqlat_histograms_with_k_m_suffixes() -> None:
    rows = _rows("bpftrace_runqlat_example.txt")
    assert [r["kind"] for r in rows] == ["runq_latency"] * 4
    d = json.loads(rows[3]["detail_json"])
    assert d["count"] == 770 and d["map"] == "usecs"
    assert d["hist"][-1] == [1024 * 1024 * 1000, 2 * 1024 * 1024 * 1000, 1]  # [1M, 2M) usecs in ns
    # 478 of 771 waits are in [32K, 64K) us: the median lands there.
    assert 32 * 1024 * 1000 <= d["p50"] < 64 * 1024 * 1000


def test_tcprtt_per_remote_address_in_microseconds() -> None:
    rows = _rows("tcprtt_example.txt")
    assert len(rows) == 6
    per_addr = {r["daddr"]: r for r in rows if r["daddr"]}
    assert set(per_addr) == {"10.194.87.206", "10.194.87.197", "10.194.88.148", "10.194.87.90"}
    assert per_addr["10.194.88.148"]["value"] == pytest.approx(4096 + 4096 * 0.99)  # both samples in [4096, 8192) us
    assert json.loads(rows[0]["detail_json"])["printed_unit"] == "msecs"


def test_softirqs_net_rx_table_and_histogram() -> None:
    rows = _rows("softirqs_example.txt")
    assert [r["value"] for r in rows[:4]] == [88188e3, 15075e3, 14652e3, 15656e3]
    hist = json.loads(rows[4]["detail_json"])
    assert hist["softirq"] == "net_rx_action" and hist["count"] == 21396


def test_fileslower_rows() -> None:
    rows = _rows("fileslower_example.txt")
    assert len(rows) == 56
    slow = max(rows, key=lambda r: r["value"])
    assert slow["value"] == pytest.approx(163.12e6) and slow["pid"] == 9654
    assert json.loads(slow["detail_json"])["file"] == "preconv"


def test_log2_quantile_edges() -> None:
    b = [(0.0, 2.0, 0), (2.0, 4.0, 10), (4.0, 8.0, 10)]
    assert bcc_text.log2_quantile(b, 0.5) == 4.0
    assert bcc_text.log2_quantile(b, 1.0) == 8.0
    assert bcc_text.log2_quantile([(0.0, 1.0, 0)], 0.99) == 0.0


def test_strict_mode_names_file_and_line_and_keeps_earlier_rows(tmp_path) -> None:
    capture = tmp_path / "tcplife_prod.txt"
    capture.write_text(
        "PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS\n"
        "22597 recordProg 127.0.0.1       46644 127.0.0.1       28527     0     0 0.23\n"
        "3277  redis-serv 127.0.0.1       28527 127.0.0.1\n"
    )
    with pytest.raises(InputError, match=r"tcplife_prod.txt:3: bad tcplife row: 5 fields") as exc:
        bcc_text.parse_file(capture)
    assert exc.value.partial.num_rows == 1  # type: ignore[attr-defined]
    prose = tmp_path / "biolatency_x.txt"
    prose.write_text("     usecs  : count  distribution\n   0 -> 1 : 3 |**|\nthis is not output\n")
    with pytest.raises(InputError, match=r"biolatency_x.txt:3: unrecognised line 'this is not output'"):
        bcc_text.parse_file(prose)
    unknown = tmp_path / "capture.txt"
    unknown.write_text("     usecs  : count  distribution\n   0 -> 1 : 3 |**|\n")
    with pytest.raises(InputError, match=r"capture.txt:1: a histogram from tool '\(unknown\)'"):
        bcc_text.parse_file(unknown)


def test_rows_are_accepted_by_the_store(tmp_path) -> None:
    store = Store(tmp_path / "s")
    for name in ("tcplife_example.txt", "biolatency_example.txt", "tcpdrop_example.txt"):
        store.append("kernel_events", bcc_text.parse_file(BCC / name, strict=False, base_ts_ns=BASE_NS))
    counts = Counter(store.query("SELECT kind FROM kernel_events").column("kind").to_pylist())
    assert counts == {"tcp_life": 43, "block_io_latency": 10, "skb_drop": 2}
    keys = store.query("SELECT flow_key FROM kernel_events WHERE pid = 22598").column("flow_key").to_pylist()
    assert keys == ["100.66.3.172:61620|52.205.89.26:80"]


def test_read_cli_bcc_json_summary(data_dir) -> None:
    res = run_cli("read", "--format", "bcc", "--lenient", "--json", str(BCC / "tcpretrans_example.txt"),
                  str(BCC / "bpftrace_runqlat_example.txt"), data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert [f["rows"] for f in summary["files"]] == [17, 4]
    assert summary["files"][1]["kinds"] == {"runq_latency": 4}


def test_cpudist_on_and_off_cpu_per_pid_and_tid() -> None:
    rows = _rows("cpudist_example.txt")
    assert [r["kind"] for r in rows].count("offcpu") == 1
    assert len(rows) == 18  # 3 whole-system + 6 per-pid (-TP 5 3) + 1 off-CPU + 8 per-thread
    first = rows[0]
    # estimated total = sum(count x bucket midpoint): 1x3 + 1x6 + 13x12 + 187x24 + 89x48 + 26x96 + 1x384 us
    assert first["value"] == pytest.approx((3 + 6 + 13 * 12 + 187 * 24 + 89 * 48 + 26 * 96 + 384) * 1000)
    per_pid = [r for r in rows if r["pid"] == 5068]
    assert len(per_pid) == 3 and json.loads(per_pid[0]["detail_json"])["count"] == 5
    tids = [json.loads(r["detail_json"]).get("tid") for r in rows[-8:]]
    assert tids == [str(t) for t in range(5092, 5100)]
    assert json.loads(rows[-1]["detail_json"])["printed_unit"] == "msecs"


def test_bpftrace_tcpdrop_with_comm_column() -> None:
    rows = _rows("bpftrace_tcpdrop_example.txt")
    assert [(r["comm"], r["pid"], r["saddr"], r["sport"], r["daddr"], r["dport"]) for r in rows] == [
        ("redis-server", 3252023, "10.153.18.169", 44926, "10.134.113.159", 6379),
        ("swapper/4", 0, "10.152.132.206", 38392, "10.134.113.159", 6379),
    ]
    assert json.loads(rows[0]["detail_json"])["state"] == "ESTABLISHED"


def test_read_cli_from_stdin_strict_capture(data_dir) -> None:
    capture = (
        "Tracing TCP RTT... Hit Ctrl-C to end.\n"
        "     usecs               : count     distribution\n"
        "         0 -> 1          : 0        |                                        |\n"
        "        64 -> 127        : 30       |****************************************|\n"
        "       128 -> 255        : 10       |*************                           |\n"
    )
    res = run_cli("read", "--format", "bcc", "--tool", "tcprtt", "--json", "-", input=capture, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["files"][0]["kinds"] == {"tcp_rtt": 1}
    q = run_cli("sql", "--json", "SELECT value FROM kernel_events", data_dir=data_dir)
    assert q.returncode == 0, q.stderr
    # p99 of 40 samples = the 39.6th: 9.6 of the 10 samples in [128, 256) us -> 128 + 128 x 0.96
    assert json.loads(q.stdout)[0]["value"] == pytest.approx(250.88)


def test_funclatency_functions_pids_and_exact_summary() -> None:
    rows = _rows("funclatency_example.txt")
    assert {r["kind"] for r in rows} == {"syscall_latency"}
    details = [json.loads(r["detail_json"]) for r in rows]
    assert [d["function"] for d in details[:4]] == ["do_sys_open", "pthread:pthread_mutex_lock", "is_prime",
                                                     "insert_result"]
    assert details[0]["summary"] == {"avg": 13746, "total": 6543360, "count": 476, "unit": "nsecs"}
    # -F: one summary line after both histograms covers both
    assert details[2]["summary"]["count"] == details[3]["summary"]["count"] == 1721727
    assert rows[2]["pid"] == 6556  # "Function = is_prime [6556]"
    assert rows[-3]["pid"] == 17064  # "-mp 17064": the capture was filtered to that process
    assert rows[1]["pid"] is None  # "-p $(pidof contentions)": the pid is not in the capture
    # 476 calls; the 99th percentile (471.24th) falls in [32768, 65536) ns after 467 faster ones
    assert rows[0]["value"] == pytest.approx(32768 + 32768 * (0.99 * 476 - 467) / 8)


def test_funclatency_capture_parses_strictly(tmp_path) -> None:
    text = (BCC / "funclatency_example.txt").read_text().split("The output shows")[0]
    capture = tmp_path / "funclatency_do_sys_open.txt"
    capture.write_text("\n".join(text.splitlines()[5:]) + "\n")  # from "# ./funclatency do_sys_open" on
    t = bcc_text.parse_file(capture, base_ts_ns=BASE_NS)
    assert t.num_rows == 1 and json.loads(t.column("detail_json")[0].as_py())["summary"]["avg"] == 13746


# runqlat.bt from bpftrace's tools, minus its `#include <linux/sched.h>` (no kernel headers here:
# TASK_RUNNING is 0) and stopping itself after 2 s.
RUNQLAT_BT = """
BEGIN { printf("Tracing CPU scheduler... Hit Ctrl-C to end.\\n"); }
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
    if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; }
    $ns = @qtime[args->next_pid];
    if ($ns) { @usecs = hist((nsecs - $ns) / 1000); }
    delete(@qtime[args->next_pid]);
}
interval:s:2 { exit(); }
END { clear(@qtime); }
"""


@pytest.mark.slow
def test_real_bpftrace_runqlat_capture_parses_strictly(data_dir) -> None:
    from tests.conftest import require_ebpf

    require_ebpf()
    res = subprocess.run(["bpftrace", "-e", RUNQLAT_BT], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # stderr's RLIMIT_MEMLOCK "ERROR" line comes along, as in `bpftrace ... 2>&1 | isostack read`
    capture = res.stderr + res.stdout
    out = run_cli("read", "--format", "bcc", "--tool", "runqlat", "--json", "-", input=capture, data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["files"][0]["kinds"] == {"runq_latency": 1}
    q = run_cli("sql", "--json", "SELECT value, detail_json FROM kernel_events", data_dir=data_dir)
    row = json.loads(q.stdout)[0]
    detail = json.loads(row["detail_json"])
    assert detail["count"] > 100  # two seconds of a busy machine's context switches
    assert detail["map"] == "usecs" and all(lo < hi for lo, hi, _ in detail["hist"])
    assert 0 < detail["p50"] <= row["value"]


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=24),
       st.floats(min_value=0.01, max_value=1.0), st.sampled_from(["usecs", "msecs", "nsecs"]))
def test_bcc_histogram_text_round_trip_and_quantile_bounds(counts: list[int], q: float, unit: str) -> None:
    """Any bcc-printed log2 histogram reads back bucket for bucket; quantiles stay inside the buckets."""
    lines = [f"     {unit:<16}: count     distribution"]
    for i, c in enumerate(counts):
        lo, hi = (0, 1) if i == 0 else (1 << i, (1 << (i + 1)) - 1)
        lines.append(f"{lo:>10} -> {hi:<10}: {c:<8} |{'*' * min(c, 40):<40}|")
    table = bcc_text.parse_text("\n".join(lines) + "\n", tool="runqlat", base_ts_ns=BASE_NS)
    if sum(counts) == 0:
        assert table.num_rows == 0
        return
    detail = json.loads(table.column("detail_json")[0].as_py())
    scale = {"usecs": 1_000, "msecs": 1_000_000, "nsecs": 1}[unit]
    expected = [[(0 if i == 0 else 1 << i) * scale, (2 if i == 0 else 1 << (i + 1)) * scale, c]
                for i, c in enumerate(counts) if c]
    assert detail["hist"] == expected and detail["count"] == sum(counts)
    buckets = [(float(lo), float(hi), c) for lo, hi, c in expected]
    value = bcc_text.log2_quantile(buckets, q)
    assert buckets[0][0] <= value <= buckets[-1][1]
    assert bcc_text.log2_quantile(buckets, min(1.0, q + 0.01)) >= value  # monotone in q


def _bt_num(n: int) -> str:
    for suffix, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=3, max_size=34))
def test_bpftrace_histogram_text_round_trip(counts: list[int]) -> None:
    """bpftrace's [0], [1], [2, 4) ... [1K, 2K) ... [1G, 2G) rows read back bucket for bucket."""
    lines = ["@usecs:"]
    bounds = [(0, 1), (1, 2)] + [(1 << i, 1 << (i + 1)) for i in range(1, len(counts) - 1)]
    for (lo, hi), c in zip(bounds, counts, strict=True):
        label = f"[{lo}]" if hi == lo + 1 else f"[{_bt_num(lo)}, {_bt_num(hi)})"
        lines.append(f"{label:<20} {c:>4} |{'@' * min(c, 52):<52}|")
    table = bcc_text.parse_text("\n".join(lines) + "\n", tool="runqlat", base_ts_ns=BASE_NS)
    expected = [[lo * 1000, hi * 1000, c] for (lo, hi), c in zip(bounds, counts, strict=True) if c]
    if not expected:
        assert table.num_rows == 0
        return
    assert json.loads(table.column("detail_json")[0].as_py())["hist"] == expected


# ------------------------------------------------------------------ bpftrace maps of tools without a kind
# The output sections of bpftrace's own tools/*_example.txt (tests/fixtures/bcc/SOURCES: lines kept);
# every map shape bpftrace prints: hist, lhist, a count per key, stats, stack keys.
NEW_SAMPLES = ["bpftrace_bitesize_example.txt", "bpftrace_cpuwalk_example.txt", "bpftrace_runqlen_example.txt",
               "bpftrace_xfsdist_example.txt", "bpftrace_ssllatency_example.txt", "bpftrace_tcpsynbl_example.txt",
               "bpftrace_biostacks_example.txt", "bpftrace_syscount_example.txt", "bpftrace_vfsstat_example.txt",
               "bpftrace_swapin_example.txt", "memleak_example.txt"]


def _maps(name: str) -> list[dict]:
    """The rows of one sample, read strictly (they are output only), detail decoded."""
    rows = bcc_text.parse_file(BCC / name, strict=True, base_ts_ns=BASE_NS).to_pylist()
    for r in rows:
        r["detail"] = json.loads(r["detail_json"])
    return rows


@pytest.mark.parametrize("name", NEW_SAMPLES)
def test_every_map_sample_reads_strictly_into_the_store(name: str, tmp_path) -> None:
    rows = _maps(name)
    assert rows
    written = Store(tmp_path / "s").append("kernel_events", bcc_text.parse_file(BCC / name, base_ts_ns=BASE_NS))
    assert written == len(rows)


def test_hist_log2_with_k_suffixes_single_values_and_a_caption_unit() -> None:
    """bitesize: per-process hist(), "[0]"/"[1]" single-value buckets, K suffixes, bytes from the caption."""
    rows = {r["detail"]["key"]: r for r in _maps("bpftrace_bitesize_example.txt")}
    assert list(rows) == ["cleanup", "postdrop", "jps", "kworker/2:1H", "jbd2/nvme0n1-8", "dd"]
    dd = rows["dd"]["detail"]
    assert (rows["dd"]["kind"], rows["dd"]["value"]) == ("tool_map", 921)
    assert (dd["tool"], dd["map"], dd["shape"], dd["unit"], dd["hist"]) == ("bitesize", "hist", "hist", "bytes",
                                                                            [[16384, 32768, 921]])
    assert rows["kworker/2:1H"]["detail"]["hist"] == [[0, 1, 3], [65536, 131072, 1]]
    assert rows["jps"]["detail"]["hist"] == [[4096, 8192, 1], [32768, 65536, 2]]


def test_keyless_maps_of_linear_buckets() -> None:
    """cpuwalk's @cpu (one bucket per CPU) and runqlen's @runqlen: no key, no unit."""
    cpu = _maps("bpftrace_cpuwalk_example.txt")
    assert [r["detail"]["map"] for r in cpu] == ["cpu", "cpu"]
    assert cpu[1]["detail"]["hist"] == [[6, 7, 243], [20, 21, 1]] and cpu[1]["value"] == 244
    assert cpu[0]["detail"]["hist"][:2] == [[0, 1, 130], [1, 2, 137]] and len(cpu[0]["detail"]["hist"]) == 36
    (runq,) = _maps("bpftrace_runqlen_example.txt")
    assert (runq["detail"]["key"], runq["detail"]["unit"], runq["value"]) == ("", "", 2273)
    assert runq["detail"]["hist"] == [[0, 1, 1967], [3, 4, 306]]
    assert 3 <= runq["detail"]["p99"] < 4  # 306 of 2273 samples saw 3 tasks queued


def test_time_unit_from_the_map_name_is_scaled_to_ns() -> None:
    """xfsdist's @us[function]: microsecond buckets become ns, as the latency kinds keep them."""
    rows = {r["detail"]["key"]: r["detail"] for r in _maps("bpftrace_xfsdist_example.txt")}
    read = rows["xfs_file_read_iter"]
    assert (read["unit"], read["printed_unit"], read["count"]) == ("ns", "us", 1986)
    assert read["hist"][0] == [1000, 2000, 724] and read["hist"][-1] == [128 * 1024 * 1000, 256 * 1024 * 1000, 6]


def test_lhist_open_bucket_and_stats_lines() -> None:
    """ssllatency: lhist() rows with a "[1000, ...)" overflow bucket, and @stat "count, average, total" lines."""
    rows = _maps("bpftrace_ssllatency_example.txt")
    handshake = next(r["detail"] for r in rows if r["detail"]["map"] == "hist" and r["detail"]["key"] == "SSL_do_handshake")
    assert handshake["hist"] == [[600, 800, 1359], [800, 1000, 12], [1000, None, 32]]
    assert handshake["unit"] == "us"  # "Latency distribution in microsecond:"
    stat = next(r for r in rows if r["detail"]["map"] == "stat" and r["detail"]["key"] == "rsa_ossl_private_decrypt")
    assert stat["detail"]["shape"] == "stats" and stat["value"] == 1403
    assert (stat["detail"]["average"], stat["detail"]["total"]) == (643, 902780)


def test_a_printf_shaped_like_a_map_line_is_a_caption() -> None:
    (backlog,) = _maps("bpftrace_tcpsynbl_example.txt")
    assert (backlog["detail"]["map"], backlog["detail"]["key"]) == ("backlog", "500")
    assert backlog["detail"]["hist"] == [[0, 1, 2266], [1, 2, 3], [2, 4, 1]]


def test_stack_keys_over_several_lines() -> None:
    """biostacks: "@usecs[" + kernel frames + "]:" then the histogram."""
    first, second = _maps("bpftrace_biostacks_example.txt")
    assert first["detail"]["stack"][0] == "blk_account_io_start+1" and len(first["detail"]["stack"]) == 14
    assert first["detail"]["key"].startswith("blk_account_io_start+1;blk_mq_make_request+1102;")
    assert first["detail"]["hist"] == [[65536 * 1000, 131072 * 1000, 1]]
    assert second["value"] == 919 and second["detail"]["stack"][-1] == "ret_from_fork+53"


def test_value_maps_per_key_with_interval_clocks() -> None:
    counts = {(r["detail"]["map"], r["detail"]["key"]): r["value"] for r in _maps("bpftrace_syscount_example.txt")}
    assert counts[("syscall", "4")] == 326333 and counts[("process", "make")] == 1404065 and len(counts) == 20
    vfs = _maps("bpftrace_vfsstat_example.txt")
    assert [(r["detail"]["key"], r["value"]) for r in vfs[:3]] == [("vfs_write", 1274), ("vfs_open", 8675),
                                                                    ("vfs_read", 11515)]
    day = BASE_NS - (22 * 3600 + 13 * 60 + 20) * 10**9  # 2023-11-14 00:00 UTC
    assert vfs[0]["ts_ns"] == day + (21 * 3600 + 30 * 60 + 38) * 10**9
    assert vfs[3]["ts_ns"] == day + (21 * 3600 + 30 * 60 + 39) * 10**9
    swap = _maps("bpftrace_swapin_example.txt")
    assert (swap[0]["detail"]["key"], swap[0]["value"]) == ("chrome, 4536", 10809)


def test_memleak_outstanding_allocations_per_stack() -> None:
    """bcc memleak: user (-p) and kernel allocators, -a address lists, a report every interval."""
    rows = _maps("memleak_example.txt")
    assert [r["kind"] for r in rows] == ["memory_outstanding"] * 14
    first = rows[0]
    assert (first["pid"], first["value"], first["detail"]["allocations"]) == (5193, 80, 5)
    assert first["detail"]["stack"] == ["main+0x6d [allocs]", "__libc_start_main+0xf0 [libc-2.21.so]"]
    day = BASE_NS - (22 * 3600 + 13 * 60 + 20) * 10**9
    assert first["ts_ns"] == day + (11 * 3600 + 16 * 60 + 33) * 10**9
    assert [r["value"] for r in rows[:4]] == [80, 160, 64, 160]  # growing by 16 bytes a second: the leak
    kernel = rows[4]
    assert (kernel["pid"], kernel["value"], kernel["detail"]["allocator"]) == (None, 248, "kernel")
    redis = rows[-1]
    assert (redis["pid"], redis["value"], len(redis["detail"]["stack"])) == (2623, 45, 6)


@pytest.mark.slow
def test_real_bpftrace_open_buckets_stats_and_counts() -> None:
    """Run bpftrace itself: hist() of a negative value "(..., 0)", lhist() under and over its range,
    stats(), avg() and count() -- printed by this machine's bpftrace, read strictly."""
    from tests.conftest import require_ebpf

    require_ebpf()
    program = ("BEGIN { @h = hist(-5); @h = hist(3); @h = hist(0); @l = lhist(-1, 0, 10, 2); @l = lhist(50, 0, 10, 2);"
               " @l = lhist(4, 0, 10, 2); @s = stats(10); @s = stats(20); @a = avg(7); @c[\"x\"] = count(); exit(); }")
    res = subprocess.run(["bpftrace", "-e", program], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = bcc_text.parse_text(res.stderr + res.stdout, "<bpftrace>", tool="edges", strict=True).to_pylist()
    got = {json.loads(r["detail_json"])["map"]: (r["value"], json.loads(r["detail_json"])) for r in rows}
    assert got["h"][1]["hist"] == [[None, 0, 1], [0, 1, 1], [2, 4, 1]]
    assert got["l"][1]["hist"] == [[None, 0, 1], [4, 6, 1], [10, None, 1]]
    assert (got["s"][0], got["s"][1]["total"]) == (2, 30)
    assert got["a"][0] == 7 and got["c"][0] == 1
