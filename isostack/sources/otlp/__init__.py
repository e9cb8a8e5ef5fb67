"""OTLP in: protobuf and JSON (the OTLP spec's JSON mapping) for traces, metrics and logs.

- :mod:`.decode` -- protobuf messages to Arrow (the hot path, shared by files, HTTP and gRPC);
- :mod:`.jsonmap` -- OTLP JSON to the same messages;
- :mod:`.files` -- trace files of every supported format (OTLP, Jaeger, Zipkin) to the store;
- :mod:`.columns` -- the column builders every span reader shares.
"""

from isostack.sources.otlp.columns import Decoded
from isostack.sources.otlp.decode import decode_proto, decode_request
from isostack.sources.otlp.files import FORMATS, decode_file, ingest_file
from isostack.sources.otlp.jsonmap import decode_json_bytes

__all__ = ["FORMATS", "Decoded", "decode_file", "decode_json_bytes", "decode_proto", "decode_request",
           "ingest_file"]
