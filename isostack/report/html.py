"""A self-contained HTML report: the trace waterfall (X axis) beside the isolation stack (Y axis).

The spec's "两轴一交叉" picture: the slow span is marked on the waterfall, the implicated layers on
the stack, and the chain below reads root cause first. Inline CSS, inline SVG, ~10 lines of inline
JS (clicking a slow span shows its kernel evidence); no network access, one file to attach to a ticket.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from isostack import kb
from isostack.locate.chain import chain_line
from isostack.locate.model import Diagnosis
from isostack.report.text import evidence_line

# Top to bottom as the spec draws the stack; NET is the horizontal lifeline through every layer.
STACK = (
    ("APP", "application (the service's own code)"),
    ("L-4", "sandbox: gVisor · Firecracker · Kata · WASM"),
    ("L-3", "container: cgroups · namespaces · seccomp · veth · conntrack"),
    ("L-2", "paravirtual: virtio · Xen PV"),
    ("L-1", "full virtualisation: KVM · QEMU · ESXi"),
    ("L-0", "hardware assist: VT-x · EPT · SEV"),
    ("HOST", "host: disks · NICs"),
)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:32px;border-top:1px solid #ccc;padding-top:12px}
.axes{display:flex;gap:24px;align-items:flex-start}
.xaxis{flex:3;min-width:420px} .yaxis{flex:2;min-width:300px;position:relative}
.layer{border:1px solid #bbb;border-radius:4px;padding:6px 8px;margin:4px 0 4px 0;background:#f7f7f7}
.layer.implicated{background:#ffe1dc;border-color:#d33;font-weight:600}
.layer.root{outline:3px solid #d33}
.net{position:absolute;right:-14px;top:0;bottom:0;width:10px;border-radius:4px;background:#ddd}
.net.implicated{background:#d33}
.label{font-size:12px;color:#555}
rect.span{fill:#8ab4f8} rect.span.slow{fill:#d33;cursor:pointer}
.evidence{display:none;background:#fff8e1;border:1px solid #e0c36d;padding:8px;margin:8px 0;white-space:pre-wrap;
 font-family:ui-monospace,monospace;font-size:12px}
.evidence.open{display:block}
ol.chain li{margin-bottom:8px} .fix{color:#155724} .missing{color:#8a6d3b}
table.checked{border-collapse:collapse;font-size:12px} table.checked td,table.checked th{border:1px solid #ddd;padding:2px 6px}
"""

JS = """
document.querySelectorAll('rect.slow').forEach(function(r){
  r.addEventListener('click',function(){
    var el=document.getElementById('ev-'+r.getAttribute('data-span-id'));
    if(el){el.classList.toggle('open');}
  });
});
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _waterfall(spans: list[dict[str, Any]], slow_ids: set[str]) -> str:
    if not spans:
        return "<p class='label'>no spans of this trace in the store</p>"
    t0 = min(s["start_ns"] for s in spans)
    t1 = max(s["end_ns"] for s in spans)
    total = max(1, t1 - t0)
    depth = _depths(spans)
    spans = sorted(spans, key=lambda s: (s["start_ns"], depth.get(s["span_id"], 0)))
    row_h, label_w, bar_w = 22, 230, 420
    h = row_h * len(spans) + 24
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 90}' height='{h}' role='img'>"]
    for i, s in enumerate(spans):
        y = i * row_h + 4
        x = label_w + bar_w * (s["start_ns"] - t0) / total
        w = max(2.0, bar_w * (s["end_ns"] - s["start_ns"]) / total)
        slow = s["span_id"] in slow_ids
        indent = 8 * depth.get(s["span_id"], 0)
        label = f"{s.get('service_name') or '?'}: {s.get('name') or ''}"
        out.append(f"<text x='{indent}' y='{y + 14}' font-size='12'>{_e(label[:34])}</text>")
        cls = "span slow" if slow else "span"
        out.append(f"<rect class='{cls}' data-span-id='{_e(s['span_id'])}' x='{x:.1f}' y='{y}' width='{w:.1f}' "
                   f"height='{row_h - 6}'><title>{_e(label)} {(s['end_ns'] - s['start_ns']) / 1e6:.1f} ms</title></rect>")
        out.append(f"<text x='{x + w + 4:.1f}' y='{y + 14}' font-size='11' fill='#555'>"
                   f"{(s['end_ns'] - s['start_ns']) / 1e6:.0f} ms</text>")
    out.append(f"<text x='{label_w}' y='{h - 4}' font-size='11' fill='#555'>0</text>"
               f"<text x='{label_w + bar_w - 40}' y='{h - 4}' font-size='11' fill='#555'>{total / 1e6:.0f} ms</text>")
    out.append("</svg>")
    return "".join(out)


def _depths(spans: list[dict[str, Any]]) -> dict[str, int]:
    parent = {s["span_id"]: s.get("parent_span_id") or "" for s in spans}
    out: dict[str, int] = {}
    for sid in parent:
        d, cur, seen = 0, parent[sid], set()
        while cur and cur in parent and cur not in seen:
            seen.add(cur)
            d += 1
            cur = parent[cur]
        out[sid] = d
    return out


def _stack(d: Diagnosis) -> str:
    implicated = {f.layer for f in d.chain}
    root = d.chain[0].layer if d.chain else None
    parts = []
    for layer, desc in STACK:
        cls = "layer" + (" implicated" if layer in implicated else "") + (" root" if layer == root else "")
        mechs = ", ".join(kb.mechanism(f.mechanism).get("title", f.mechanism) for f in d.chain if f.layer == layer)
        parts.append(f"<div class='{cls}' data-layer='{layer}'><b>{layer}</b> <span class='label'>{_e(desc)}</span>"
                     + (f"<div>{_e(mechs)}</div>" if mechs else "") + "</div>")
    net_cls = "net" + (" implicated" if "NET" in implicated else "") + (" root" if root == "NET" else "")
    parts.append(f"<div class='{net_cls}' data-layer='NET' title='NET: the network slice through every layer'></div>")
    return "".join(parts)


def _events_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    t0 = min(r["ts_ns"] for r in rows)
    body = "".join(
        f"<tr><td>{(r['ts_ns'] - t0) / 1e6:+.1f} ms</td><td>{_e(r['kind'])}</td><td>{_e(r['coord'])}"
        f"{(' ' + _e(r['side'])) if r.get('side') else ''}</td><td>{r['value']:,.6g} {_e(r['unit'])}</td>"
        f"<td>{(r['duration_ns'] or 0) / 1e6:,.0f} ms</td><td>{_e(r['where'])}</td></tr>" for r in rows)
    return ("<table class='checked'><tr><th>t</th><th>kind</th><th>joined by</th><th>value</th><th>window</th>"
            f"<th>where</th></tr>{body}</table>")


def _section(i: int, d: Diagnosis, spans: list[dict[str, Any]],
             events: list[dict[str, Any]] | None = None) -> str:
    hop = d.slow_hop
    if hop is None:
        body = "<p><b>No slow hop found.</b></p>"
        return f"<section class='diagnosis' id='d{i}'><h2>Diagnosis {i + 1}</h2>{body}{_checked(d)}</section>"
    slow_ids = {hop.span_id} | ({hop.server_span_id} if hop.server_span_id else set())
    ev_lines = [f"{f.layer} {f.mechanism}: {f.summary}\n" + "\n".join("  " + evidence_line(e) for e in f.evidence)
                for f in d.chain] or ["no kernel evidence crossed a threshold for this span"]
    table = _events_table(events or [])
    panels = "".join(f"<div class='evidence' id='ev-{_e(sid)}'>{_e(chr(10).join(ev_lines))}"
                     f"{('<br>kernel events joined to this hop:' + table) if table else ''}</div>" for sid in slow_ids)
    head = (f"<h2>{_e(hop.service)} · {_e(hop.kind)} {_e(hop.operation)} → {_e(hop.peer)} · "
            f"{hop.duration_ns / 1e6:,.0f} ms</h2><p>{_e(chain_line(hop.service, hop.duration_ns, d.chain))}</p>"
            f"<p class='label'>trace {_e(hop.trace_id)} · {_e(str(hop.five_tuple))} · host {_e(hop.host_name)}"
            + (f" · baseline p50 {hop.baseline_p50_ns / 1e6:,.0f} ms" if hop.baseline_p50_ns else "") + "</p>")
    axes = (f"<div class='axes'><div class='xaxis'><div class='label'>X axis: the trace (click the red span)</div>"
            f"{_waterfall(spans, slow_ids)}{panels}</div><div class='yaxis'><div class='label'>Y axis: the isolation "
            f"stack</div>{_stack(d)}</div></div>")
    items = []
    for f in d.chain:
        title = kb.mechanism(f.mechanism).get("title", f.mechanism)
        why = f" <span class='label'>(symptom of {_e(f.caused_by)})</span>" if f.caused_by else ""
        ev = "".join(f"<li><code>{_e(evidence_line(e))}</code></li>" for e in f.evidence)
        items.append(f"<li data-layer='{f.layer}' data-mechanism='{_e(f.mechanism)}'><b>{f.layer}</b> {_e(title)}{why}"
                     f" · confidence {f.confidence:.0%}<br>{_e(f.summary)}<ul>{ev}</ul>"
                     f"<div class='fix'>fix: {_e(f.fix)}</div></li>")
    chain = f"<ol class='chain'>{''.join(items)}</ol>" if items else "<p><b>Nothing found</b> for this hop.</p>"
    missing = "".join(f"<li>{_e(m)}</li>" for m in d.missing)
    missing_html = f"<div class='missing'>missing data:<ul>{missing}</ul></div>" if missing else ""
    return f"<section class='diagnosis' id='d{i}'>{head}{axes}<h3>Chain, root cause first</h3>{chain}" \
           f"{missing_html}{_checked(d)}</section>"


def _checked(d: Diagnosis) -> str:
    rows = "".join(f"<tr><td>{_e(c.check)}</td><td>{c.layer}</td><td>{c.status}</td><td>{_e(c.note)}</td></tr>"
                   for c in d.checked)
    return f"<details><summary>checked ({len(d.checked)})</summary><table class='checked'>" \
           f"<tr><th>check</th><th>layer</th><th>status</th><th>note</th></tr>{rows}</table></details>"


def render_html(diagnoses: list[Diagnosis], spans_by_trace: dict[str, list[dict[str, Any]]],
                events_by_hop: dict[int, list[dict[str, Any]]] | None = None) -> str:
    """The whole report as one HTML string. ``spans_by_trace``: span rows (dicts) of each slow hop's
    trace; ``events_by_hop``: per diagnosis index, the kernel events joined to its hop (see
    :func:`hop_events`), shown when the slow span is clicked."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = "".join(_section(i, d, spans_by_trace.get(d.slow_hop.trace_id, []) if d.slow_hop else [],
                                (events_by_hop or {}).get(i))
                       for i, d in enumerate(diagnoses))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>isostack diagnosis</title>"
            f"<style>{CSS}</style></head><body><h1>isostack diagnosis</h1><p class='label'>generated {now} · "
            f"{len(diagnoses)} hop(s)</p>{sections}<script>{JS}</script></body></html>")


def trace_spans(con: Any, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The spans of the given traces from the store (for the waterfall), grouped by trace id."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in trace_ids}
    if not trace_ids:
        return out
    rows = con.execute(
        "SELECT trace_id, span_id, parent_span_id, name, kind, service_name, start_ns, end_ns FROM spans "
        "WHERE trace_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY start_ns LIMIT 5000", [trace_ids]
    ).fetchall()
    cols = ("trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "start_ns", "end_ns")
    for r in rows:
        out.setdefault(r[0], []).append(dict(zip(cols, r, strict=True)))
    return out


def hop_events(con: Any, diagnoses: list[Diagnosis], limit: int = 200) -> dict[int, list[dict[str, Any]]]:
    """The kernel events joined to each diagnosis's hop (the same join as the diagnosis), by index."""
    from isostack.locate.join import join
    from isostack.records import KERNEL_EVENT_KINDS

    idx = [i for i, d in enumerate(diagnoses) if d.slow_hop is not None]
    hops = [diagnoses[i].slow_hop for i in idx]
    if not hops:
        return {}
    res = join(con, [h for h in hops if h is not None]).evidence
    out: dict[int, list[dict[str, Any]]] = {}
    for r in res.to_pylist():
        rows = out.setdefault(idx[r["hop_idx"]], [])
        if len(rows) >= limit:
            continue
        where = r.get("cgroup_path") or r.get("device") or r.get("flow_key") or r.get("host_name") or ""
        kind = KERNEL_EVENT_KINDS.get(r["kind"])
        rows.append({"ts_ns": r["ts_ns"], "kind": r["kind"], "coord": r["coord"], "side": r.get("side") or "",
                     "value": r["value"] or 0.0, "unit": kind.unit if kind else "",
                     "duration_ns": r["duration_ns"], "where": where})
    return out
