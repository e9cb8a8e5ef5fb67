"""OTLP log records written by ``isostack agent`` -> ``kernel_events`` / ``workloads`` rows (and clock offsets).

The agent ships each row as one log record (``isostack/agent/otlp.py`` says why): ``isostack.table``
names the table, ``isostack.<column>`` carries each column, ``time_unix_nano`` the row's ``ts_ns`` and
the resource's ``host.name`` its host. The OTLP decoder has already made them ``log_records`` rows;
this reader takes the agent's out of ``log_records`` and rebuilds the rows, so a central
``isostack serve`` holds every node's kernel events exactly as a local agent would have stored
them. Records that are not the agent's stay log records, untouched.

Each request's resource may carry the agent's clock offset against the receiver
(``isostack.clock.offset_ns`` ± ``isostack.clock.uncertainty_ns``); it becomes one ``metric_points``
row ``isostack.agent.clock_offset`` (unit ns, host_name of the node), which diagnosis reads to widen
the join's skew tolerance between nodes.

Bad input: a record whose kind is unknown or whose column does not fit its type is refused with
one error naming the record's index, host and attribute; every good record is kept.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from isostack import records
from isostack.sources.otlp.columns import Decoded

TABLE_ATTR = "isostack.table"
PREFIX = "isostack."
CLOCK_METRIC = "isostack.agent.clock_offset"
CLOCK_OFFSET_ATTR = "isostack.clock.offset_ns"
CLOCK_UNCERTAINTY_ATTR = "isostack.clock.uncertainty_ns"
_INT64 = (-(2**63), 2**63 - 1)
_TABLES = ("kernel_events", "workloads")


def _coerce(value: Any, typ: pa.DataType) -> Any:
    """A JSON attribute value as the column type wants it; ValueError when it cannot be."""
    if value is None:
        return None
    if pa.types.is_integer(typ):
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, str):  # OTLP/JSON sends int64 as a string
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        lo, hi = (-(2**31), 2**31 - 1) if typ == pa.int32() else _INT64
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range for {typ}")
        return value
    if pa.types.is_floating(typ):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    return value if isinstance(value, str) else json.dumps(value)


def _refuse(decoded: Decoded, why: str) -> None:
    # the decoder counted the record as accepted (it was a well-formed log record)
    decoded.accepted = max(0, decoded.accepted - 1)
    decoded.rejected += 1
    decoded.errors.append(why)


def agent_records(decoded: Decoded) -> Decoded:
    """Move the agent's rows from ``decoded.tables["log_records"]`` into kernel_events / workloads.

    Returns ``decoded`` itself (changed in place). A request without agent records costs one vector
    scan of ``attributes_json``.
    """
    logs = decoded.tables.get("log_records")
    if logs is None or logs.num_rows == 0:
        return decoded
    marked = pc.match_substring(logs.column("attributes_json"), f'"{TABLE_ATTR}"')
    marked = pc.fill_null(marked, False)
    if not pc.any(marked).as_py():
        return decoded
    mine = logs.filter(marked)
    decoded.tables["log_records"] = logs.filter(pc.invert(marked))
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in _TABLES}
    clocks: dict[tuple[str, int, int], int] = {}
    for i, rec in enumerate(mine.to_pylist()):
        where = f"agent log record {i} (host {rec.get('host_name') or '?'})"
        try:
            attrs = json.loads(rec["attributes_json"] or "{}")
            resource = json.loads(rec["resource_json"] or "{}")
        except ValueError:
            _refuse(decoded, f"{where}: attributes are not JSON")
            continue
        table = attrs.get(TABLE_ATTR)
        if table not in _TABLES:
            _refuse(decoded, f"{where}: {TABLE_ATTR}={table!r}; expected one of {', '.join(_TABLES)}")
            continue
        schema = records.TABLES[table]
        row: dict[str, Any] = {"ts_ns": rec["ts_ns"], "host_name": rec.get("host_name") or ""}
        try:
            for f in schema:
                key = PREFIX + f.name
                if key in attrs and f.name != "ts_ns":
                    try:
                        row[f.name] = _coerce(attrs[key], f.type)
                    except ValueError as exc:
                        raise ValueError(f"attribute {key}: {exc}") from None
            if table == "kernel_events":
                kind = row.get("kind")
                if kind not in records.KERNEL_EVENT_KINDS:
                    raise ValueError(f"attribute isostack.kind: unknown kind {kind!r}")
                if row.get("value") is None:
                    raise ValueError("attribute isostack.value: missing")
                row.setdefault("duration_ns", 0)
                row.setdefault("detail_json", "{}")
                unit = attrs.get(PREFIX + "unit")
                if unit and unit != records.KERNEL_EVENT_KINDS[kind].unit:
                    raise ValueError(f"attribute isostack.unit: {unit!r}, but {kind} is in "
                                     f"{records.KERNEL_EVENT_KINDS[kind].unit!r}")
        except ValueError as exc:
            _refuse(decoded, f"{where}: {exc}")
            continue
        rows[table].append(row)
        if CLOCK_OFFSET_ATTR in resource:
            try:
                key = (row["host_name"], int(resource[CLOCK_OFFSET_ATTR]), int(resource.get(CLOCK_UNCERTAINTY_ATTR, 0)))
            except (TypeError, ValueError):
                continue
            clocks[key] = max(clocks.get(key, 0), int(rec["ts_ns"] or 0))
    for table, got in rows.items():
        if got:
            add = pa.Table.from_pylist(got, schema=records.TABLES[table])
            prev = decoded.tables.get(table)
            decoded.tables[table] = add if prev is None else pa.concat_tables([prev, add])
    if clocks:
        import time

        now = time.time_ns()
        clock_rows = records.conform("metric_points", pa.table({
            "ts_ns": [now] * len(clocks), "name": [CLOCK_METRIC] * len(clocks),
            "value": [float(k[1]) for k in clocks], "unit": ["ns"] * len(clocks),
            "metric_type": ["gauge"] * len(clocks), "service_name": ["isostack-agent"] * len(clocks),
            "host_name": [k[0] for k in clocks],
            "attributes_json": [json.dumps({"uncertainty_ns": k[2]}) for k in clocks],
            "resource_json": ["{}"] * len(clocks), "source": ["agent-clock"] * len(clocks)}))
        prev = decoded.tables.get("metric_points")
        decoded.tables["metric_points"] = clock_rows if prev is None else pa.concat_tables([prev, clock_rows])
    return decoded


__all__ = ["CLOCK_METRIC", "agent_records"]
