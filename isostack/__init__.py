"""isostack: which hop is slow, and which isolation layer under it.

Data flows through the package in this order:
``sources`` (bytes -> typed Arrow records) -> ``store`` (embedded DuckDB over Parquet segments)
-> ``locate`` (slow hop on the X axis, per-layer checks on the Y axis, the join and the chain)
-> ``report`` (text, JSON, HTML). ``kb`` holds the isolation-stack knowledge base as data files.

The library API (everything the CLI does goes through these names)::

    from isostack import Store, ingest_file, diagnose, diagnose_all, to_json

    store = Store("/var/lib/isostack")                 # a directory of Parquet segments
    ingest_file(store, "traces.json")                  # OTLP JSON/protobuf, Jaeger, Zipkin (detected)
    d = diagnose(store, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")  # the worst slow hop of a trace
    for f in d.chain:                                  # root cause first
        print(f.layer, f.mechanism, f.explained_ns / 1e6, "ms", f.fix)
    doc = to_json(d)                                   # the `diagnose --json` document

    for d in diagnose_all(store, since_ns=t0, until_ns=t1, limit=5): ...   # every slow hop, worst first

``Layer`` is the layer vocabulary (``Layer.L3 == "L-3"``); ``all_checks()`` lists the check modules,
each with its declaration ``CHECK``. Names are imported on first use, so ``import isostack`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "Store": "isostack.store",
    "ingest_file": "isostack.sources.otlp.files",
    "diagnose": "isostack.locate.diagnose",
    "diagnose_all": "isostack.locate.diagnose",
    "Diagnosis": "isostack.locate.model",
    "Finding": "isostack.locate.model",
    "Evidence": "isostack.locate.model",
    "SlowHop": "isostack.locate.model",
    "to_json": "isostack.report.json_report",
    "Layer": "isostack.layers",
    "all_checks": "isostack.locate.checks",
}
__all__ = ["Diagnosis", "Evidence", "Finding", "Layer", "SlowHop", "Store", "__version__", "all_checks", "diagnose",
           "diagnose_all", "ingest_file", "to_json"]

if TYPE_CHECKING:
    from isostack.layers import Layer
    from isostack.locate.checks import all_checks
    from isostack.locate.diagnose import diagnose, diagnose_all
    from isostack.locate.model import Diagnosis, Evidence, Finding, SlowHop
    from isostack.report.json_report import to_json
    from isostack.sources.otlp.files import ingest_file
    from isostack.store import Store


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'isostack' has no attribute {name!r}")
