"""Changes to the configuration file made by the node itself (the web UI), written back
without losing what a person wrote in it.

The file stays the single source of truth: an edit is made on a round-trip copy of the YAML
(ruamel.yaml keeps comments, key order, quoting and the file's indentation), the result is
validated by exactly the code `custodes check-config` runs (`custodes.config.parse_config`)
and only a valid text is written. The write is atomic (a temporary file in the same folder,
synced, then renamed over the original, with the original's mode), and the previous text is
kept beside it as ``<file>.bak``. Values are written as given: a ``${ENV}`` reference stays a
reference, since the edit works on the text, not on the loaded (substituted) configuration.

Limits: one writer at a time within this process (a lock); another program editing the file
at the same moment is detected (the text changed since it was read) and the edit refused, not
merged.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from custodes.config import Config, ConfigError, ConfigIssue, parse_config

_LOCK = threading.Lock()

Document = Any  # ruamel's CommentedMap: a dict that remembers comments and order


@dataclass(frozen=True)
class Edit:
    """What an edit did: the file's digest before and after, and the validated result."""

    before: str  # sha256 of the file's bytes before
    after: str
    config: Config  # paths resolved against the file's folder, as load_config gives them
    backup: Path


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _yaml(indent: int, block_seq_indent: int) -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never fold a long URL or purpose onto a second line
    y.indent(mapping=indent, sequence=indent + block_seq_indent, offset=block_seq_indent)
    return y


def load_document(text: str, source: str) -> tuple[Document, YAML]:
    """The round-trip document of ``text`` and a dumper that writes it back in the same style."""
    try:
        doc, indent, block_seq_indent = load_yaml_guess_indent(text)
    except YAMLError as exc:
        raise ConfigError(source, [ConfigIssue(None, "", f"YAML syntax: {exc}")]) from None
    if not isinstance(doc, dict):
        raise ConfigError(source, [ConfigIssue(1, "", "the top level must be a mapping")])
    return doc, _yaml(indent or 2, block_seq_indent or 0)


def dump(doc: Document, y: YAML) -> str:
    out = io.StringIO()
    y.dump(doc, out)
    return out.getvalue()


def edit_config(path: Path, change: Callable[[Document], None], *,
                env: dict[str, str] | None = None) -> Edit:
    """Apply ``change`` to the document of the file at ``path``, validate, write atomically.

    Raises ConfigError (the file untouched) when the result is not a valid configuration,
    naming each key and why, exactly as `check-config` would; whatever ``change`` raises
    (a KeyError, a ValueError with the reason) also leaves the file untouched.
    """
    with _LOCK:
        raw = path.read_bytes()
        doc, y = load_document(raw.decode("utf-8"), str(path))
        change(doc)
        text = dump(doc, y)
        config = parse_config(text, str(path), env).resolve_paths(path.parent)
        if path.read_bytes() != raw:
            raise ConfigError(str(path), [ConfigIssue(
                None, "", "the file was changed by someone else while this edit was made: "
                          "nothing written; load it again")])
        backup = path.with_name(path.name + ".bak")
        mode = path.stat().st_mode & 0o7777
        _write_atomically(backup, raw, mode)
        _write_atomically(path, text.encode("utf-8"), mode)
        return Edit(digest(raw), digest(text.encode("utf-8")), config, backup)


def _write_atomically(target: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself survives a crash only once the folder is synced.
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
