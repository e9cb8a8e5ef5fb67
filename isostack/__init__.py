"""isostack: which hop is slow, and which isolation layer under it.

Data flows through the package in this order:
``sources`` (bytes -> typed Arrow records) -> ``store`` (embedded DuckDB over Parquet segments)
-> ``locate`` (slow hop on the X axis, per-layer checks on the Y axis, the join and the chain)
-> ``report`` (text, JSON, HTML). ``kb`` holds the isolation-stack knowledge base as data files.
"""

__version__ = "0.1.0"
