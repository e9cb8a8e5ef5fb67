"""Readers: one per input format, each turning bytes into typed Arrow records (isostack.records)."""

from __future__ import annotations

from pathlib import Path

from isostack.errors import InputError


def read_capture(path: str | Path) -> tuple[str, int]:
    """A text capture and its modification time (unix ns: when the capture was written).

    Undecodable bytes become U+FFFD rather than failing the file; a missing or unreadable file is
    one InputError naming it.
    """
    p = Path(path)
    try:
        return p.read_text(errors="replace"), p.stat().st_mtime_ns
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}") from exc
