"""The signed manifest that makes an export folder evidence.

An export folder holds the exported files and:

- ``manifest.json``: what was exported (node, camera, time range), when, by whom, for which
  case, what redaction was applied, and the name, SHA-256 and size of every file;
- ``manifest.sig``: the node's Ed25519 signature over the exact bytes of ``manifest.json``
  (64 raw bytes, so that ``openssl pkeyutl -verify -pubin -inkey signing.pub -rawin
  -in manifest.json -sigfile manifest.sig`` checks it without custodes);
- ``signing.pub``: the node's public key, for convenience only. Whoever altered the folder
  could have replaced it too (and re-signed the manifest with their own key), so only a key
  the verifier brings proves anything: without one, verification says UNVERIFIED.

The manifest also carries ``audit_anchor``, the node's latest signature over its audit log
(``custodes.audit.anchor``) when the export was made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives import serialization

from custodes.audit.anchor import Anchor, AnchorFileError
from custodes.keys import PUBLIC_KEY, KeyFileError, NodeKeys, public_key_from_pem, verify_signature

FORMAT = "custodes-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# The files that describe the export rather than being part of it.
OWN_FILES = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative to the export folder, with "/" between folders
    sha256: str
    bytes: int

    @classmethod
    def of(cls, folder: Path, name: str) -> FileEntry:
        digest = hashlib.sha256()
        size = 0
        with (folder / name).open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return cls(name, digest.hexdigest(), size)


def key_fingerprint(public_pem: bytes) -> str:
    """SHA-256 of the raw public key: the same for any PEM spelling of the same key."""
    raw = public_key_from_pem(public_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def iso(t: float) -> str:
    """UTC time as ISO 8601 with milliseconds: 2023-11-14T22:13:20.000Z."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def build_manifest(
    *,
    node: str,
    camera: str,
    start: float,
    end: float,
    created_by: str,
    files: list[FileEntry],
    public_pem: bytes,
    case: str | None = None,
    redaction: dict[str, Any] | None = None,
    created_at: float,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "node": node,
        "camera": camera,
        "start": iso(start),
        "end": iso(end),
        "created_at": iso(created_at),
        "created_by": created_by,
        "case": case,
        "redaction": redaction if redaction is not None else {"applied": False},
        "files": [{"name": f.name, "sha256": f.sha256, "bytes": f.bytes} for f in files],
        "public_key_fingerprint": key_fingerprint(public_pem),
    }


def write_manifest(folder: Path, manifest: dict[str, Any], keys: NodeKeys) -> bytes:
    """Write manifest.json, its signature and the public key into ``folder``; return the
    manifest's bytes (what the signature covers)."""
    data = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    (folder / MANIFEST).write_bytes(data)
    (folder / SIGNATURE).write_bytes(keys.sign(data))
    (folder / PUBLIC_KEY).write_bytes(keys.public_pem)
    return data


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleReport:
    folder: Path
    key_source: str  # "supplied" or "embedded" (the folder's own signing.pub) or "none"
    signature_ok: bool
    files_ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Nothing is wrong; with a key the verifier did not bring, this is not yet proof."""
        return not self.problems

    @property
    def verified(self) -> bool:
        """Signed by the key the verifier supplied, and unchanged since: proof of origin."""
        return self.ok and self.key_source == "supplied" and self.signature_ok


def verify_bundle(folder: Path, public_pem: bytes | None = None) -> BundleReport:
    """Check the manifest's signature and every file against it; name whatever differs.

    The files are checked even when the signature fails: the manifest may still say which
    file was changed, though it no longer proves anything by itself.
    """
    problems: list[str] = []
    notes: list[str] = []
    manifest_path, sig_path, pub_path = folder / MANIFEST, folder / SIGNATURE, folder / PUBLIC_KEY
    if not folder.is_dir():
        return BundleReport(folder, "none", False, problems=[f"{folder}: no such folder"])
    if not manifest_path.is_file():
        return BundleReport(folder, "none", False,
                            problems=[f"{MANIFEST}: missing; not an export folder"])
    data = manifest_path.read_bytes()
    signature = sig_path.read_bytes() if sig_path.is_file() else None
    embedded = pub_path.read_bytes() if pub_path.is_file() else None

    key_source, key = _choose_key(public_pem, embedded, problems, notes)
    signature_ok = False
    if signature is None:
        problems.append(f"{SIGNATURE}: missing; the manifest is unsigned")
    elif key is not None:
        signature_ok = verify_signature(key, data, signature)
        if not signature_ok:
            problems.append(_signature_problem(key_source, data, signature, embedded))

    try:
        manifest = json.loads(data)
        listed = _listed_files(manifest)
    except (ValueError, TypeError, KeyError) as exc:
        problems.append(f"{MANIFEST}: not a valid export manifest ({exc})")
        return BundleReport(folder, key_source, signature_ok, problems=problems, notes=notes)
    if signature_ok and key_source == "supplied" and embedded is not None and (
        embedded.strip() != (key or b"").strip()
    ):
        problems.append(f"{PUBLIC_KEY}: replaced (it is not the key that signed the manifest)")
    if key is not None and signature_ok:
        fingerprint = manifest.get("public_key_fingerprint")
        if fingerprint != key_fingerprint(key):
            problems.append(f"{MANIFEST}: names the key {fingerprint}, but was signed with "
                            f"{key_fingerprint(key)}")

    if key is not None and signature_ok:
        problems.extend(_anchor_problems(manifest, key))
    files_ok = _check_files(folder, listed, problems)
    return BundleReport(folder, key_source, signature_ok, files_ok, problems, notes, manifest)


def _choose_key(
    supplied: bytes | None, embedded: bytes | None, problems: list[str], notes: list[str]
) -> tuple[str, bytes | None]:
    if supplied is not None:
        try:
            key_fingerprint(supplied)
        except (ValueError, KeyFileError) as exc:
            problems.append(f"the key supplied is not an Ed25519 public key ({exc})")
            return "supplied", None
        return "supplied", supplied
    if embedded is None:
        problems.append(f"{PUBLIC_KEY}: missing, and no key supplied; cannot check the signature")
        return "none", None
    try:
        key_fingerprint(embedded)
    except (ValueError, KeyFileError) as exc:
        problems.append(f"{PUBLIC_KEY}: not an Ed25519 public key ({exc})")
        return "embedded", None
    notes.append(f"checked with the folder's own {PUBLIC_KEY} ({key_fingerprint(embedded)}): "
                 "this shows the folder is unchanged since it was signed with that key, not "
                 "which node signed it; supply the node's key to know that")
    return "embedded", embedded


def _signature_problem(
    key_source: str, data: bytes, signature: bytes, embedded: bytes | None
) -> str:
    if key_source == "supplied" and embedded is not None:
        try:
            signed_by_embedded = verify_signature(embedded, data, signature)
        except (ValueError, KeyFileError):
            signed_by_embedded = False
        if signed_by_embedded:
            return (f"wrong key: the manifest was signed with another key "
                    f"({key_fingerprint(embedded)}), not the one supplied")
    if key_source == "embedded":
        return f"{MANIFEST}: altered (its signature does not verify)"
    return (f"{MANIFEST}: altered, or signed with another key (its signature does not verify "
            "with the key supplied)")


def _anchor_problems(manifest: Any, key: bytes) -> list[str]:
    """The audit anchor a manifest carries must be the node's own signature over its log."""
    raw = manifest.get("audit_anchor") if isinstance(manifest, dict) else None
    if raw is None:
        return []
    try:
        anchor = Anchor.from_json(raw)
    except AnchorFileError as exc:
        return [f"{MANIFEST}: the audit anchor is unreadable ({exc})"]
    if not verify_signature(key, anchor.message, anchor.signature):
        return [f"{MANIFEST}: the audit anchor (entry {anchor.seq}) does not carry the node's "
                "signature"]
    return []


def _listed_files(manifest: Any) -> list[FileEntry]:
    files = [FileEntry(str(f["name"]), str(f["sha256"]), int(f["bytes"]))
             for f in manifest["files"]]
    for f in files:
        path = PurePosixPath(f.name)
        # A manifest must not send the verifier outside the folder.
        if path.is_absolute() or ".." in path.parts or f.name in OWN_FILES:
            raise ValueError(f"file name {f.name!r} not allowed")
    return files


def _check_files(folder: Path, listed: list[FileEntry], problems: list[str]) -> list[str]:
    """Check each listed file, add what differs to ``problems``; return the names that match."""
    files_ok: list[str] = []
    for entry in listed:
        problem = _file_problem(folder, entry)
        if problem is None:
            files_ok.append(entry.name)
        else:
            problems.append(problem)
    names = {entry.name for entry in listed} | OWN_FILES
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in names:
            problems.append(f"{name}: extra file, not in the manifest")
    return files_ok


def _file_problem(folder: Path, entry: FileEntry) -> str | None:
    path = folder / entry.name
    if not path.is_file():
        return f"{entry.name}: missing"
    found = FileEntry.of(folder, entry.name)
    if found.sha256 != entry.sha256:
        size = "" if found.bytes == entry.bytes else (
            f"; {found.bytes} bytes, the manifest says {entry.bytes}"
        )
        return f"{entry.name}: altered (SHA-256 differs from the manifest{size})"
    return None
