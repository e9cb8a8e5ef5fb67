"""Tamper-evident, append-only archive of raw logs and events (spec 29.6.0.3 criterion 6, Q9).

Layout of an archive directory::

    keys/ed25519.key  keys/ed25519.pub      signing key (private key 0600) and its public half
    policy.json                              {"retention_days": 183}: pruning younger segments is refused
    segments/000001.jsonl                    one canonical JSON record per line (see below)
    segments/000001.seal.json                the segment's seal: counts, hashes, timestamp, signature
    HEAD.json                                signed pointer to the newest seal (catches tail truncation)

A record line is ``{"h":..,"i":..,"p":..,"r":..,"t":..}`` in canonical JSON (sorted keys, no spaces):
``i`` the archive-wide record index, ``t`` ingest time (unix ns), ``r`` the raw record, ``p`` the
previous record's hash and ``h = SHA-256(p || canonical({i, p, r, t}))``. The chain runs across
segments, so a removed, reordered or inserted record or segment breaks it at a named place. Each
seal is signed with Ed25519 over its canonical body and chained to the previous seal; its time is an
RFC 3161 token when a TSA URL is configured, otherwise the local clock, marked ``local-clock``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from isostack.errors import InputError, UsageError

GENESIS = "0" * 64
SIX_MONTHS_DAYS = 183
NS_PER_DAY = 86_400 * 1_000_000_000


def canonical(obj: Any) -> bytes:
    """The one byte form that is hashed and signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(prev_hex: str, index: int, ts_ns: int, raw: Any) -> str:
    """SHA-256 (hex) of a record chained to the previous record's hash."""
    body = canonical({"i": index, "p": prev_hex, "r": raw, "t": ts_ns})
    return hashlib.sha256(prev_hex.encode("ascii") + body).hexdigest()


def _seal_body(seal: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in seal.items() if k != "signature"})


def public_key_fingerprint(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a PEM Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
    return key


class Archive:
    """An archive directory: append records, seal segments, prune by policy."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.seg_dir = self.root / "segments"
        self.key_path = self.root / "keys" / "ed25519.key"
        self.pub_path = self.root / "keys" / "ed25519.pub"
        self.policy_path = self.root / "policy.json"
        self.head_path = self.root / "HEAD.json"

    # ------------------------------------------------------------ setup
    def init(self, retention_days: int = SIX_MONTHS_DAYS, tsa_url: str = "") -> None:
        """Create the directories, a fresh signing key and the retention policy (idempotent)."""
        if retention_days < SIX_MONTHS_DAYS:
            raise UsageError(f"retention_days={retention_days}: the audit policy requires >= {SIX_MONTHS_DAYS} (6 months)")
        self.seg_dir.mkdir(parents=True, exist_ok=True)
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.key_path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            self.pub_path.write_bytes(key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        if not self.policy_path.exists():
            self.policy_path.write_text(json.dumps({"retention_days": retention_days, "tsa_url": tsa_url}, indent=2))

    def policy(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.policy_path.read_text()))
        except FileNotFoundError as exc:
            raise UsageError(f"{self.root}: not an audit archive (no policy.json); run `isostack audit init`") from exc

    def _private_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key

    # ------------------------------------------------------------ state
    def seals(self) -> list[Path]:
        return sorted(self.seg_dir.glob("*.seal.json"))

    def segment_files(self) -> list[Path]:
        return sorted(self.seg_dir.glob("*.jsonl"))

    def _tail(self) -> tuple[int, str, int, Path]:
        """(next record index, last hash, open segment number, open segment path)."""
        seals = self.seals()
        if seals:
            last = json.loads(seals[-1].read_text())
            next_index, last_hash, seg_no = last["first_index"] + last["count"], last["last_hash"], last["segment"] + 1
        else:
            next_index, last_hash, seg_no = 0, GENESIS, 1
        path = self.seg_dir / f"{seg_no:06d}.jsonl"
        if path.exists():
            for line in path.read_bytes().splitlines():
                rec = json.loads(line)
                next_index, last_hash = rec["i"] + 1, rec["h"]
        return next_index, last_hash, seg_no, path

    # ------------------------------------------------------------ writing
    def append(self, raws: list[Any], ts_ns: int | None = None) -> int:
        """Append raw records (JSON values) to the open segment; returns the index of the first one."""
        self.policy()
        index, prev, _, path = self._tail()
        first = index
        now = ts_ns if ts_ns is not None else time.time_ns()
        lines = []
        for raw in raws:
            h = record_hash(prev, index, now, raw)
            lines.append(canonical({"h": h, "i": index, "p": prev, "r": raw, "t": now}) + b"\n")
            prev, index = h, index + 1
        with open(path, "ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        return first

    def seal(self, tsa_url: str | None = None, now_ns: int | None = None) -> dict[str, Any] | None:
        """Close the open segment: sign its summary and timestamp it. Returns the seal (None if empty)."""
        policy = self.policy()
        _, last_hash, seg_no, path = self._tail()
        if not path.exists() or path.stat().st_size == 0:
            return None
        data = path.read_bytes()
        recs = [json.loads(line) for line in data.splitlines()]
        seals = self.seals()
        prev_seal = hashlib.sha256(seals[-1].read_bytes()).hexdigest() if seals else GENESIS
        sealed_ns = now_ns if now_ns is not None else time.time_ns()
        digest = hashlib.sha256(data).digest()
        url = tsa_url if tsa_url is not None else str(policy.get("tsa_url") or "")
        timestamp: dict[str, Any]
        if url:
            from isostack.ops.audit import tsa

            timestamp = {"kind": "rfc3161", "tsa_url": url, "token_b64": base64.b64encode(tsa.request_token(url, digest)).decode()}
        else:
            timestamp = {"kind": "local-clock", "time_ns": sealed_ns}
        key = self._private_key()
        seal: dict[str, Any] = {
            "segment": seg_no, "file": path.name, "first_index": recs[0]["i"], "count": len(recs),
            "first_prev": recs[0]["p"], "last_hash": last_hash, "segment_sha256": digest.hex(),
            "prev_seal_sha256": prev_seal, "sealed_ns": sealed_ns, "timestamp": timestamp,
            "key_fingerprint": public_key_fingerprint(key.public_key()),
        }
        seal["signature"] = base64.b64encode(key.sign(_seal_body(seal))).decode()
        seal_path = self.seg_dir / f"{seg_no:06d}.seal.json"
        seal_bytes = canonical(seal)
        seal_path.write_bytes(seal_bytes)
        old = self.read_head() or {}
        self._write_head({"first_segment": old.get("first_segment", 1), "segments": seg_no,
                          "last_seal_sha256": hashlib.sha256(seal_bytes).hexdigest(), "records": recs[-1]["i"] + 1})
        return seal

    def read_head(self) -> dict[str, Any] | None:
        """HEAD without its signature (None before the first seal)."""
        if not self.head_path.exists():
            return None
        head = dict(json.loads(self.head_path.read_bytes()))
        head.pop("signature", None)
        return head

    def _write_head(self, head: dict[str, Any]) -> None:
        head = dict(head)
        head["signature"] = base64.b64encode(self._private_key().sign(canonical(head))).decode()
        self.head_path.write_bytes(canonical(head))

    def prune(self, before_ns: int, now_ns: int | None = None) -> list[str]:
        """Delete sealed segments sealed before ``before_ns`` -- refused if any is younger than the policy."""
        days = int(self.policy().get("retention_days", SIX_MONTHS_DAYS))
        now = now_ns if now_ns is not None else time.time_ns()
        floor_ns = now - days * NS_PER_DAY
        victims = [p for p in self.seals() if json.loads(p.read_text())["sealed_ns"] < before_ns]
        for p in victims:
            sealed = json.loads(p.read_text())["sealed_ns"]
            if sealed > floor_ns:
                age_d = (now - sealed) / NS_PER_DAY
                raise UsageError(f"{p.name}: sealed {age_d:.1f} days ago; policy.json retention_days={days} refuses deletion")
        removed = []
        for p in victims:
            (self.seg_dir / p.name.replace(".seal.json", ".jsonl")).unlink(missing_ok=True)
            p.unlink()
            removed.append(p.name)
        head = self.read_head()
        if removed and head is not None:
            # Pruning cuts the chain's start on purpose; HEAD records where the kept chain begins, so
            # any other missing head segment is still reported.
            left = self.seals()
            head["first_segment"] = int(left[0].name.split(".")[0]) if left else head["segments"] + 1
            self._write_head(head)
        return removed


# ---------------------------------------------------------------- verification
@dataclass
class Problem:
    """One detected tampering, named by segment and record."""

    segment: int | None
    record_index: int | None  # archive-wide index the position should hold
    line: int | None  # 1-based line in the segment file
    what: str

    def __str__(self) -> str:
        where = []
        if self.segment is not None:
            where.append(f"segment {self.segment:06d}")
        if self.record_index is not None:
            where.append(f"record {self.record_index}")
        if self.line is not None:
            where.append(f"line {self.line}")
        return f"{', '.join(where) or 'archive'}: {self.what}"


@dataclass
class VerifyReport:
    ok: bool
    segments: int = 0
    records: int = 0
    open_records: int = 0
    problems: list[Problem] = field(default_factory=list)
    timestamps: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "segments": self.segments, "records": self.records, "open_records": self.open_records,
                "timestamps": self.timestamps,
                "problems": [{"segment": p.segment, "record_index": p.record_index, "line": p.line, "what": p.what,
                              "text": str(p)} for p in self.problems]}


def _check_records(seg_no: int, data: bytes, expect_index: int, prev: str, problems: list[Problem]) -> tuple[int, str, int]:
    """Walk one segment's lines; returns (next index, last hash, records seen). Stops at the first break."""
    n = 0
    for line_no, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), start=1):
        try:
            rec = json.loads(line)
            ok_shape = isinstance(rec, dict) and set(rec) == {"h", "i", "p", "r", "t"}
        except (ValueError, UnicodeDecodeError):
            ok_shape = False
        if not ok_shape:
            problems.append(Problem(seg_no, expect_index, line_no, "not a record line (changed or inserted bytes)"))
            return expect_index, prev, n
        if canonical(rec) + b"" != line:
            problems.append(Problem(seg_no, expect_index, line_no, "record bytes changed (not in canonical form)"))
            return expect_index, prev, n
        if rec["i"] != expect_index:
            what = (f"record index {rec['i']} found where {expect_index} belongs: "
                    + ("record(s) removed" if isinstance(rec["i"], int) and rec["i"] > expect_index else "reordered or inserted record"))
            problems.append(Problem(seg_no, expect_index, line_no, what))
            return expect_index, prev, n
        if rec["p"] != prev:
            problems.append(Problem(seg_no, expect_index, line_no, "chain broken: previous-hash does not match (inserted or reordered)"))
            return expect_index, prev, n
        if not isinstance(rec["t"], int) or record_hash(prev, rec["i"], rec["t"], rec["r"]) != rec["h"]:
            problems.append(Problem(seg_no, expect_index, line_no, "content changed: hash mismatch"))
            return expect_index, prev, n
        prev, expect_index, n = rec["h"], expect_index + 1, n + 1
    return expect_index, prev, n


def verify_dir(seg_dir: Path, pub: Ed25519PublicKey, head: dict[str, Any] | None = None) -> VerifyReport:
    """Verify every sealed segment (signature, seal chain, record chain) and the open one, naming each fault.

    ``head`` (the signed HEAD or a bundle manifest) pins the newest seal so a removed last segment shows.
    """
    rep = VerifyReport(ok=True)
    problems = rep.problems
    seal_paths = sorted(seg_dir.glob("*.seal.json"))
    seg_paths = {p.name: p for p in seg_dir.glob("*.jsonl")}
    prev_seal = None
    expect_index: int | None = None
    prev_hash: str | None = None
    expect_seg: int | None = None
    last_seal_sha = None
    for sp in seal_paths:
        raw_seal = sp.read_bytes()
        try:
            seal = json.loads(raw_seal)
            seg_no = int(seal["segment"])
            sig = base64.b64decode(seal["signature"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(Problem(None, None, None, f"{sp.name}: unreadable seal ({exc})"))
            break
        try:
            pub.verify(sig, _seal_body(seal))
        except InvalidSignature:
            problems.append(Problem(seg_no, None, None, f"{sp.name}: seal signature invalid (seal changed or wrong key)"))
            break
        if sp.name != f"{seg_no:06d}.seal.json" or seal["file"] != f"{seg_no:06d}.jsonl":
            problems.append(Problem(seg_no, None, None, f"{sp.name}: seal belongs to segment {seg_no} (segments renamed/reordered)"))
            break
        if expect_seg is not None and seg_no != expect_seg:
            problems.append(Problem(expect_seg, expect_index, None, f"segment {expect_seg:06d} missing (next seal is {seg_no:06d})"))
            break
        if prev_seal is not None and seal["prev_seal_sha256"] != prev_seal:
            problems.append(Problem(seg_no, None, None, "seal chain broken: previous seal changed, removed or reordered"))
            break
        if expect_seg is None and head is not None and seg_no != head.get("first_segment", 1):
            problems.append(Problem(head.get("first_segment"), None, None,
                                    f"segment {head.get('first_segment')} missing: the kept chain starts at {seg_no:06d}"))
            break
        if expect_index is None:  # first kept segment: the anchor (earlier ones may be pruned by policy)
            expect_index, prev_hash = int(seal["first_index"]), str(seal["first_prev"])
        elif seal["first_index"] != expect_index or seal["first_prev"] != prev_hash:
            problems.append(Problem(seg_no, expect_index, None, "segment does not continue the previous one's chain"))
            break
        seg_path = seg_paths.pop(seal["file"], None)
        if seg_path is None:
            problems.append(Problem(seg_no, expect_index, None, f"{seal['file']} missing"))
            break
        data = seg_path.read_bytes()
        assert expect_index is not None and prev_hash is not None
        nxt, last, n = _check_records(seg_no, data, expect_index, prev_hash, problems)
        if problems:
            break
        if n != seal["count"] or last != seal["last_hash"]:
            problems.append(Problem(seg_no, nxt, n + 1, f"segment has {n} records, its seal says {seal['count']}: "
                                    + ("record(s) removed at the end" if n < seal["count"] else "record(s) appended after sealing")))
            break
        if hashlib.sha256(data).hexdigest() != seal["segment_sha256"]:
            problems.append(Problem(seg_no, None, None, "segment file bytes differ from the sealed digest"))
            break
        ts = seal["timestamp"]
        if ts.get("kind") == "rfc3161":
            from isostack.ops.audit import tsa

            try:
                tsa.check_token(base64.b64decode(ts.get("token_b64", "")), bytes.fromhex(seal["segment_sha256"]))
            except (ValueError, InputError) as exc:
                problems.append(Problem(seg_no, None, None, f"RFC 3161 token invalid: {exc}"))
                break
        rep.timestamps[ts.get("kind", "?")] = rep.timestamps.get(ts.get("kind", "?"), 0) + 1
        rep.segments += 1
        rep.records += n
        expect_index, prev_hash, expect_seg = nxt, last, seg_no + 1
        prev_seal = last_seal_sha = hashlib.sha256(raw_seal).hexdigest()
    if not problems and head is not None and (
            head.get("last_seal_sha256") != last_seal_sha or head.get("segments") != (expect_seg or 1) - 1):
        problems.append(Problem(head.get("segments"), None, None,
                                f"newest seal is not the one HEAD/manifest names (segment {head.get('segments')}): "
                                "sealed segment(s) removed or replaced at the end"))
    if not problems:
        # What remains: at most one open (unsealed) segment directly after the last seal.
        for name, p in sorted(seg_paths.items()):
            seg_no = int(name.split(".")[0])
            if expect_seg is not None and seg_no != expect_seg or expect_seg is None and seg_no != 1:
                problems.append(Problem(seg_no, None, None, f"{name}: unsealed segment out of sequence (inserted?)"))
                break
            _, _, n = _check_records(seg_no, p.read_bytes(), expect_index or 0, prev_hash or GENESIS, problems)
            rep.open_records = n
    rep.ok = not problems
    return rep


def verify(archive: Archive) -> VerifyReport:
    """Verify an archive in place with its own public key and signed HEAD."""
    pub = load_public_key(archive.pub_path)
    head = None
    if archive.head_path.exists():
        raw_head = archive.head_path.read_bytes()
        try:
            head = json.loads(raw_head)
            sig_text = head.pop("signature", "")
            sig = base64.b64decode(sig_text, validate=True)
            # The bytes themselves are pinned, not only their meaning: base64 and JSON both admit
            # other spellings of the same value.
            if base64.b64encode(sig).decode() != sig_text or canonical({**head, "signature": sig_text}) != raw_head:
                raise ValueError("HEAD.json is not in canonical form")
            pub.verify(sig, canonical(head))
        except (ValueError, AttributeError, TypeError, InvalidSignature):
            rep = VerifyReport(ok=False, problems=[Problem(None, None, None, "HEAD.json changed: signature or form invalid")])
            return rep
    elif archive.seals():
        return VerifyReport(ok=False, problems=[Problem(None, None, None, "HEAD.json missing")])
    return verify_dir(archive.seg_dir, pub, head)


# ---------------------------------------------------------------- third-party bundle
def export_bundle(archive: Archive, out: Path) -> dict[str, Any]:
    """Write ``out`` (.tar.gz): sealed segments + seals, the public key and a signed manifest."""
    import io
    import tarfile

    head = archive.read_head()
    if head is None:
        raise UsageError(f"{archive.root}: nothing sealed yet; run `isostack audit seal` first")
    files = []
    for sp in archive.seals():
        for p in (archive.seg_dir / sp.name.replace(".seal.json", ".jsonl"), sp):
            files.append({"path": f"segments/{p.name}", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    pub = load_public_key(archive.pub_path)
    manifest: dict[str, Any] = {"format": "isostack-audit-bundle/1", "head": head, "files": files,
                                "key_fingerprint": public_key_fingerprint(pub), "exported_ns": time.time_ns(),
                                "policy": archive.policy()}
    manifest["signature"] = base64.b64encode(archive._private_key().sign(canonical(manifest))).decode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        add("manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        add("public_key.pem", archive.pub_path.read_bytes())
        for f in files:
            add(f["path"], (archive.seg_dir / Path(f["path"]).name).read_bytes())
    return manifest


def verify_bundle(bundle: Path, expect_fingerprint: str | None = None) -> VerifyReport:
    """Verify an exported bundle without the archive: manifest signature, file list, then the chain."""
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="isostack-audit-") as tmp:
        root = Path(tmp)
        try:
            with tarfile.open(bundle, "r:gz") as tar:
                tar.extractall(root, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise InputError(f"{bundle}: not a readable .tar.gz bundle: {exc}") from exc
        pub = load_public_key(root / "public_key.pem")
        fp = public_key_fingerprint(pub)
        if expect_fingerprint and fp != expect_fingerprint:
            return VerifyReport(ok=False, problems=[Problem(None, None, None,
                                f"public key fingerprint {fp} is not the expected {expect_fingerprint}")])
        try:
            manifest = json.loads((root / "manifest.json").read_bytes())
            sig = base64.b64decode(manifest.pop("signature"))
            pub.verify(sig, canonical(manifest))
        except (OSError, ValueError, KeyError, InvalidSignature) as exc:
            return VerifyReport(ok=False, problems=[Problem(None, None, None, f"manifest.json invalid or not signed: {exc!r}")])
        listed = {f["path"] for f in manifest["files"]}
        present = {str(p.relative_to(root)) for p in (root / "segments").glob("*")}
        for extra in sorted(present - listed):
            (root / extra).unlink()  # not covered by the manifest: the chain check below ignores it
        report = verify_dir(root / "segments", pub, manifest["head"])
        for f in manifest["files"]:
            p = root / f["path"]
            if report.ok and p.exists() and hashlib.sha256(p.read_bytes()).hexdigest() != f["sha256"]:
                report.ok = False
                report.problems.append(Problem(None, None, None, f"{f['path']}: digest differs from the manifest"))
        report.timestamps["key_fingerprint_" + fp] = 1
        return report
