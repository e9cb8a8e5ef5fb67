"""Type stub of the compiled OTLP span decoder (_wire.pyx)."""

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

class Decoder:
    def __init__(
        self,
        attr: Callable[[bytes], tuple[str, Any, int, str] | None],
        key_class: Callable[[bytes], int],
        resolve_net: Callable[[int, list[bytes], list[bytes]], Any],
        resource: Callable[[bytes], tuple[Any, ...] | None],
        scope: Callable[[bytes], str | None],
        extras: Callable[[Any, str, str, list[bytes], list[bytes]], bool],
        kinds: Sequence[str],
        statuses: Sequence[str],
        max_entries: int,
    ) -> None: ...
    def clear(self) -> None: ...
    @property
    def n_attrs(self) -> int: ...
    def decode(self, data: bytes, source: str, cols: Any) -> dict[str, pa.Array] | None: ...
