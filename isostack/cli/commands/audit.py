"""``isostack audit``: the tamper-evident archive of raw logs and events."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from isostack.cli.common import console, emit_json, json_option
from isostack.errors import InputError

archive_option = click.option("--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path),
                              default=None, help="Archive directory. Default: <data-dir>/audit.")


def _archive(ctx: click.Context, archive_dir: Path | None):  # -> Archive (lazy import keeps startup fast)
    from isostack.ops.audit import Archive

    root = ctx.find_root()
    return Archive(archive_dir or Path(root.obj["data_dir"]) / "audit")


@click.group("audit")
def command() -> None:
    """Append-only, hash-chained, Ed25519-signed archive a third party can verify.

    \b
    Examples:
      journalctl -o json | isostack audit append -
      isostack audit seal                        # sign + timestamp the open segment
      isostack audit verify                      # names any changed/removed/reordered record
      isostack audit export bundle.tar.gz && isostack audit verify --bundle bundle.tar.gz
    """


@command.command("init")
@archive_option
@click.option("--retention-days", type=int, default=183, show_default=True, help="Policy: minimum age before pruning (>= 183).")
@click.option("--tsa-url", default="", help="RFC 3161 Time-Stamp Authority URL used by `seal` (default: local clock).")
@json_option
@click.pass_context
def init_cmd(ctx: click.Context, archive_dir: Path | None, retention_days: int, tsa_url: str, as_json: bool) -> None:
    """Create the archive: signing key, retention policy."""
    a = _archive(ctx, archive_dir)
    a.init(retention_days, tsa_url)
    out = {"archive": str(a.root), "public_key": str(a.pub_path), "policy": a.policy()}
    emit_json(out) if as_json else console.print(f"archive {a.root} ready; public key {a.pub_path}")


@command.command("append")
@archive_option
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--text", is_flag=True, help="Each line is a raw text record (default: JSON per line, else text).")
@click.option("--table", "table_name", type=click.Choice(["log_records", "kernel_events", "spans", "workloads"]),
              default=None, help="Archive rows of this store table instead of reading SOURCE.")
@click.option("--since-ns", type=int, default=0, show_default=True,
              help="With --table: only rows at or after this time (unix ns), e.g. the previous run's end.")
@json_option
@click.pass_context
def append_cmd(ctx: click.Context, archive_dir: Path | None, source, text: bool, table_name: str | None,
               since_ns: int, as_json: bool) -> None:
    """Append records (JSON Lines, or raw text lines) from SOURCE ('-' = stdin), or a store table's rows.

    
    Examples:
      tail -n 1000 /var/log/kern.log | isostack audit append --text -
      isostack audit append --table kernel_events --since-ns 1764050000000000000
    """
    a = _archive(ctx, archive_dir)
    if not a.policy_path.exists():
        a.init()
    raws: list = []
    if table_name is not None:
        from isostack import records
        from isostack.cli.common import get_store

        col = records.TIME_COLUMN[table_name]
        rows = get_store(ctx).query(f"SELECT * FROM {table_name} WHERE {col} >= ? ORDER BY {col}", [since_ns])
        raws = [{"table": table_name, "row": r} for r in rows.to_pylist()]
        source = []
    for line in source:
        line = line.rstrip("\n")
        if not line:
            continue
        if text:
            raws.append(line)
            continue
        try:
            raws.append(json.loads(line))
        except ValueError:
            raws.append(line)
    first = a.append(raws) if raws else None
    out = {"appended": len(raws), "first_index": first}
    emit_json(out) if as_json else console.print(f"appended {len(raws)} record(s) from index {first}")


@command.command("seal")
@archive_option
@click.option("--tsa-url", default=None, help="Override the policy's RFC 3161 TSA URL for this seal.")
@json_option
@click.pass_context
def seal_cmd(ctx: click.Context, archive_dir: Path | None, tsa_url: str | None, as_json: bool) -> None:
    """Sign and timestamp the open segment; the next append starts a new one."""
    seal = _archive(ctx, archive_dir).seal(tsa_url)
    if as_json:
        emit_json(seal)
    elif seal is None:
        console.print("nothing to seal")
    else:
        console.print(f"sealed segment {seal['segment']:06d}: {seal['count']} records, "
                      f"timestamp {seal['timestamp']['kind']}, last hash {seal['last_hash'][:16]}")


@command.command("verify")
@archive_option
@click.option("--bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Verify an exported bundle instead of the archive.")
@click.option("--fingerprint", default=None, help="Expected public-key fingerprint (from the archive owner).")
@json_option
@click.pass_context
def verify_cmd(ctx: click.Context, archive_dir: Path | None, bundle: Path | None, fingerprint: str | None,
               as_json: bool) -> None:
    """Check signatures and both hash chains; exit 1 naming each tampered segment/record."""
    from isostack.ops import audit

    rep = audit.verify_bundle(bundle, fingerprint) if bundle else audit.verify(_archive(ctx, archive_dir))
    if as_json:
        emit_json(rep.to_dict())
    elif rep.ok:
        console.print(f"[green]OK[/] {rep.segments} sealed segment(s), {rep.records} record(s), "
                      f"{rep.open_records} unsealed; timestamps {rep.timestamps}")
    else:
        for p in rep.problems:
            console.print(f"[red]TAMPERED[/] {p}")
    if not rep.ok:
        sys.exit(1)


@command.command("export")
@archive_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def export_cmd(ctx: click.Context, archive_dir: Path | None, out: Path, as_json: bool) -> None:
    """Write a verifiable bundle (.tar.gz: segments, seals, public key, signed manifest)."""
    from isostack.ops import audit

    manifest = audit.export_bundle(_archive(ctx, archive_dir), out)
    if as_json:
        emit_json({"bundle": str(out), "manifest": manifest})
    else:
        console.print(f"wrote {out}: {len(manifest['files'])} files, key fingerprint {manifest['key_fingerprint']}")


@command.command("prune")
@archive_option
@click.option("--older-than-days", type=float, required=True, help="Delete sealed segments older than this.")
@json_option
@click.pass_context
def prune_cmd(ctx: click.Context, archive_dir: Path | None, older_than_days: float, as_json: bool) -> None:
    """Delete old sealed segments -- refused for anything younger than the policy's retention."""
    if older_than_days <= 0:
        raise InputError("--older-than-days: expected a positive number of days")
    removed = _archive(ctx, archive_dir).prune(time.time_ns() - int(older_than_days * 86400e9))
    emit_json({"removed": removed}) if as_json else console.print(f"removed {len(removed)} segment(s)")
