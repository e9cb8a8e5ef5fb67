"""One exception family, so every command can fail with a single clear line and a known exit code."""

from __future__ import annotations


class IsostackError(Exception):
    """A user-facing failure: the message is printed as one line, the process exits with ``exit_code``.

    Messages name the file (and line/offset/field where known) and what was expected.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(IsostackError):
    """Bad arguments or options (exit 2, like click's own usage errors)."""

    exit_code = 2


class InputError(IsostackError):
    """Malformed input data: the good records before the fault are kept, the command exits 1."""


class CapabilityError(IsostackError):
    """The machine lacks something needed (root, tracefs, BTF, a binary): names what is missing."""
