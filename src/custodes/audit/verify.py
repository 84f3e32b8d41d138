"""Verifying the audit log: is every entry the one that was written, in its place, none missing?

Four things protect the log, and verification checks each:

- every entry's ``hash`` covers its content and the hash of the entry before it, so a modified
  entry no longer matches its hash, and a deleted, inserted or moved one breaks a link;
- signed checkpoints cover the hash of the entry at their ``seq``, so someone who rewrites the
  chain from some point on and recomputes every hash is caught at the next checkpoint: they
  cannot sign without the node's key;
- a checkpoint is due at every multiple of ``checkpoint_every``, so deleting checkpoints to
  hide such a rewrite is noticed too;
- the anchors (``custodes.audit.anchor``): a copy of every checkpoint the node signed, kept
  outside the database in its key folder and carried by exports and inspection packs. Who
  deletes the end of the log together with its checkpoints (which the rules above cannot
  see: the log is merely shorter) is caught by them, as is any rewrite of an anchored entry.

What no check can see: entries after the last anchor are protected by the chain alone.
Someone with write access to the database could delete or rewrite that tail without a trace;
the report says how many entries that concerns, and the node anchors the head at start, at
stop and before every export, so it stays short.

``verify_entries`` is a pure function of what it is given, used for the live database and for
an exported file alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import pairwise

from sqlalchemy import select

from custodes.audit.anchor import Anchor, AnchorFile, AnchorFileError
from custodes.audit.log import CHECKPOINT_EVERY, GENESIS, Checkpoint, Entry
from custodes.keys import verify_signature
from custodes.record.manifest import iso
from custodes.store import schema
from custodes.store.db import Store

# How far a moved entry is searched for: an entry renumbered by more places than this is
# reported as modified, which is still a failure, only a less precise one.
_MOVE_SEARCH = 8


class Kind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"
    BROKEN_LINK = "broken link"
    BAD_SIGNATURE = "bad signature"
    REWRITTEN = "rewritten"  # a signed checkpoint no longer matches its entry
    TRUNCATED = "truncated"
    CHECKPOINT_MISSING = "checkpoint missing"
    ANCHOR_MISSING = "anchor file missing"


@dataclass(frozen=True)
class Problem:
    seq: int | None  # the entry (or checkpoint) concerned; None: the log as a whole
    kind: Kind
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    checkpoints: int  # checkpoints whose signature verifies
    first_seq: int | None
    last_seq: int | None
    signed_through: int | None  # seq of the last checkpoint that verifies and matches
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # true, but not failures
    anchors: int | None = None  # anchors that verify and match; None: none were given
    anchored_through: int | None = None  # seq of the latest of them

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsigned(self) -> int:
        """Entries after the last good checkpoint: protected by the chain alone."""
        if self.last_seq is None:
            return 0
        if self.signed_through is None:
            return self.entries
        return max(0, self.last_seq - self.signed_through)

    def summary(self) -> str:
        span = "" if self.first_seq is None else f" (entries {self.first_seq}..{self.last_seq})"
        signed = (
            "none signed" if self.signed_through is None
            else f"signed through entry {self.signed_through}"
        )
        anchored = "" if self.anchors is None else (
            f"; {self.anchors} anchors outside the database" + (
                "" if self.anchored_through is None
                else f", the last at entry {self.anchored_through}"))
        return (f"{self.entries} entries{span}, {self.checkpoints} checkpoints, {signed}, "
                f"{self.unsigned} unsigned after the last checkpoint{anchored}")


def verify_entries(
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint],
    public_pem: bytes,
    *,
    first_seq: int = 1,
    first_prev: str = GENESIS,
    checkpoint_every: int | None = CHECKPOINT_EVERY,
    anchors: Sequence[tuple[str, Anchor]] | None = None,
    reaches_anchors: bool = True,
) -> VerifyReport:
    """Check ``entries`` (in the order given) and ``checkpoints`` against each other and the key.

    ``first_seq`` and ``first_prev`` are where the chain must start: the beginning of the log,
    or, for an excerpt, what the excerpt's signed header says. ``checkpoint_every`` (None: no
    periodic checkpoints expected) is the writer's interval. ``anchors`` are (where from,
    anchor) pairs kept outside the log; ``reaches_anchors``: whether the entries must reach
    every anchor (the whole log) or only those in their range (an excerpt that stops early).
    """
    given = list(entries)
    problems: list[Problem] = []

    # Order as given: a file's lines can be shuffled without touching any entry.
    for before, after in pairwise(given):
        if after.seq < before.seq:
            problems.append(Problem(after.seq, Kind.REORDERED,
                                    f"entry {after.seq}: out of order (it comes after entry "
                                    f"{before.seq})"))
    ordered = _unique(sorted(given, key=lambda e: e.seq), problems)

    content: dict[int, Problem] = {}  # entries that do not match their own hash
    moved: dict[int, int] = {}  # seq -> the seq its content was written under
    for n, entry in enumerate(ordered):
        found = _content_problem(
            entry, ordered[n - 1] if n else None, ordered[n + 1] if n + 1 < len(ordered) else None
        )
        if isinstance(found, int):
            moved[entry.seq] = found
        elif found is not None:
            content[entry.seq] = found
    # Links first: at the same seq, "deleted here" reads before "moved from there".
    problems.extend(_start_problems(ordered, first_seq, first_prev))
    known = {e.hash for e in ordered}
    for before, after in pairwise(ordered):
        problems.extend(_link_problems(before, after, known, content.keys() | moved.keys(),
                                       moved))
    problems.extend(content.values())
    problems.extend(_moved_problems(moved))

    signed_through, good, checkpoint_problems = _check_checkpoints(
        ordered, list(checkpoints), public_pem, first_seq, checkpoint_every
    )
    problems.extend(checkpoint_problems)
    matched: list[int] = []
    if anchors is not None:
        problems, matched = _with_anchor_problems(
            ordered, list(checkpoints), anchors, public_pem, first_seq, reaches_anchors, problems
        )
        signed_through = max([*matched, *([] if signed_through is None else [signed_through])],
                             default=None)

    report = VerifyReport(
        entries=len(ordered),
        checkpoints=good,
        first_seq=ordered[0].seq if ordered else None,
        last_seq=ordered[-1].seq if ordered else None,
        signed_through=signed_through,
        problems=sorted(problems, key=lambda p: (p.seq is None, p.seq or 0)),
        anchors=None if anchors is None else len(matched),
        anchored_through=max(matched, default=None),
    )
    if report.unsigned:
        tail = "" if signed_through is None else f" after entry {signed_through}"
        report.notes.append(
            f"{report.unsigned} entries{tail} are not covered by a signed checkpoint: the hash "
            "chain alone protects them, and it cannot show entries deleted from or rewritten "
            "at the end of the log"
        )
    return report


def verify_store(
    store: Store,
    public_pem: bytes,
    *,
    checkpoint_every: int | None = CHECKPOINT_EVERY,
    anchors: AnchorFile | None = None,
    witnesses: Sequence[tuple[str, Anchor]] = (),
) -> VerifyReport:
    """Verify the node's own database, against its anchor file (the node's key folder) and
    the anchors of copies kept elsewhere (``witnesses``) when given."""
    with store.read() as conn:
        entries = [Entry.from_row(row) for row in conn.execute(
            select(schema.audit_log).order_by(schema.audit_log.c.seq)
        )]
        checkpoints = [Checkpoint.from_row(row) for row in conn.execute(
            select(schema.audit_checkpoints).order_by(schema.audit_checkpoints.c.id)
        )]
    if anchors is None and not witnesses:
        return verify_entries(entries, checkpoints, public_pem,
                              checkpoint_every=checkpoint_every)
    problems: list[Problem] = []
    given: list[tuple[str, Anchor]] = list(witnesses)
    if anchors is not None:
        try:
            kept = anchors.read()
        except AnchorFileError as exc:
            kept = []
            problems.append(Problem(None, Kind.ANCHOR_MISSING,
                                    f"the anchor file cannot be read: {exc}"))
        if not anchors.exists() and checkpoints:
            # The node writes its anchor with every checkpoint; checkpoints without the file
            # mean it was deleted (or the log predates anchors and the node has not run since).
            problems.append(Problem(None, Kind.ANCHOR_MISSING,
                                    f"{anchors.path}: missing, yet the log holds "
                                    f"{len(checkpoints)} signed checkpoints: the node's own "
                                    "record of what it signed was deleted"))
        problems.extend(_order_problems(kept, anchors))
        given = [("the anchor file", a) for a in kept] + given
    report = verify_entries(entries, checkpoints, public_pem, checkpoint_every=checkpoint_every,
                            anchors=given)
    return replace(report, problems=problems + report.problems)


def _order_problems(kept: list[Anchor], anchors: AnchorFile) -> list[Problem]:
    """The node appends only newer anchors: any other order is an edited file."""
    for before, after in pairwise(kept):
        if after.seq <= before.seq:
            return [Problem(None, Kind.REORDERED,
                            f"{anchors.path}: the anchor for entry {after.seq} follows the one "
                            f"for entry {before.seq}; the node only appends newer anchors, so "
                            "the file was edited")]
    return []


# -- the parts ----------------------------------------------------------------------------


def _unique(ordered: list[Entry], problems: list[Problem]) -> list[Entry]:
    """One entry per seq; a seq that occurs twice (possible in a file) is a problem."""
    out: list[Entry] = []
    for entry in ordered:
        if out and out[-1].seq == entry.seq:
            if out[-1] != entry:
                problems.append(Problem(entry.seq, Kind.DUPLICATED,
                                        f"entry {entry.seq}: occurs twice, with different "
                                        "content"))
            else:
                problems.append(Problem(entry.seq, Kind.DUPLICATED,
                                        f"entry {entry.seq}: occurs twice"))
            # Keep the copy that matches its own hash, if one does.
            if out[-1].computed_hash() != out[-1].hash and entry.computed_hash() == entry.hash:
                out[-1] = entry
            continue
        out.append(entry)
    return out


def _content_problem(
    entry: Entry, before: Entry | None, after: Entry | None
) -> Problem | int | None:
    """Whether ``entry`` matches its own hash; if not, as precisely as can be said why.

    An int is the seq the entry's content was written under: the entry was moved.
    """
    if entry.computed_hash() == entry.hash:
        return None
    seq = entry.seq
    # Moved: the content hashes correctly under another number (rows renumbered to make room
    # for an inserted entry or to close the gap of a deleted one, or two rows swapped).
    for offset in range(1, _MOVE_SEARCH + 1):
        for other in (seq - offset, seq + offset):
            if other > 0 and replace(entry, seq=other).computed_hash() == entry.hash:
                return other
    if after is not None and after.seq == seq + 1 and entry.computed_hash() == after.prev_hash:
        return Problem(seq, Kind.MODIFIED,
                       f"entry {seq}: modified (its hash field was changed; its content still "
                       "matches the chain)")
    if before is not None and replace(entry, prev_hash=before.hash).computed_hash() == entry.hash:
        return Problem(seq, Kind.MODIFIED,
                       f"entry {seq}: modified (its prev_hash field was changed)")
    return Problem(seq, Kind.MODIFIED, f"entry {seq}: modified (hash does not match its content)")


def _moved_problems(moved: dict[int, int]) -> list[Problem]:
    """One problem per run of entries moved by the same offset (renumbering moves many)."""
    problems: list[Problem] = []
    run: list[int] = []

    def flush() -> None:
        if not run:
            return
        first, last, offset = run[0], run[-1], moved[run[0]] - run[0]
        if first == last:
            text = f"entry {first}: moved (its content was written as entry {moved[first]})"
        else:
            text = (f"entries {first}..{last}: moved (each was written as the entry "
                    f"{abs(offset)} {'after' if offset > 0 else 'before'} it)")
        problems.append(Problem(first, Kind.REORDERED, text))
        run.clear()

    for seq in sorted(moved):
        if run and (seq != run[-1] + 1 or moved[seq] - seq != moved[run[0]] - run[0]):
            flush()
        run.append(seq)
    flush()
    return problems


def _start_problems(ordered: list[Entry], first_seq: int, first_prev: str) -> list[Problem]:
    if not ordered:
        return []
    first = ordered[0]
    if first.seq > first_seq:
        return [Problem(first_seq, Kind.DELETED,
                        f"{entries_text(first_seq, first.seq - 1)}: deleted (the log starts "
                        f"at entry {first.seq})")]
    if first.seq < first_seq:
        return [Problem(first.seq, Kind.INSERTED,
                        f"entry {first.seq}: inserted (the log should start at entry "
                        f"{first_seq})")]
    if first.prev_hash != first_prev:
        return [Problem(first.seq, Kind.BROKEN_LINK,
                        f"entry {first.seq}: does not link to the start of the log (an entry "
                        "was inserted or deleted before it)")]
    return []


def _link_problems(
    before: Entry, after: Entry, known: set[str], inconsistent: set[int], moved: dict[int, int]
) -> list[Problem]:
    """Whether ``after`` follows ``before`` in the chain, and if not, why as far as can be said.

    A broken link next to an entry already reported (modified, moved) is that entry's doing
    and is not reported again, except where it tells what happened around it.
    """
    if after.seq > before.seq + 1:
        return [Problem(before.seq + 1, Kind.DELETED,
                        f"{entries_text(before.seq + 1, after.seq - 1)}: deleted (missing between "
                        f"entry {before.seq} and entry {after.seq})")]
    if after.prev_hash == before.hash:
        return []
    if after.prev_hash == before.prev_hash:
        # Both point at the same predecessor: ``before`` was slipped in between.
        return [Problem(before.seq, Kind.INSERTED,
                        f"entry {before.seq}: inserted (entry {after.seq} links past it to the "
                        "entry before)")]
    if after.prev_hash not in known and moved.get(after.seq, after.seq) > after.seq:
        gone = moved[after.seq] - after.seq
        return [Problem(after.seq, Kind.DELETED,
                        f"{gone} {'entry' if gone == 1 else 'entries'} deleted between entry "
                        f"{before.seq} and entry {after.seq} (the entries after were renumbered "
                        "to close the gap)")]
    if before.seq in inconsistent or after.seq in inconsistent:
        return []
    if after.prev_hash not in known:
        # Both are consistent in themselves, yet ``after`` remembers another predecessor.
        return [Problem(before.seq, Kind.MODIFIED,
                        f"entry {before.seq}: modified (its hash was recomputed, but entry "
                        f"{after.seq} still links to the original)")]
    return [Problem(after.seq, Kind.BROKEN_LINK,
                    f"entry {after.seq}: does not link to entry {before.seq}")]


def _check_checkpoints(
    ordered: list[Entry],
    checkpoints: list[Checkpoint],
    public_pem: bytes,
    first_seq: int,
    checkpoint_every: int | None,
) -> tuple[int | None, int, list[Problem]]:
    """(last seq signed by a good checkpoint, good checkpoints, problems)."""
    by_seq = {e.seq: e for e in ordered}
    last = ordered[-1].seq if ordered else first_seq - 1
    problems: list[Problem] = []
    signed_through: int | None = None
    good = 0
    last_match = first_seq - 1  # the latest entry a good checkpoint vouches for, so far
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if not verify_signature(public_pem, cp.message, cp.signature):
            problems.append(Problem(cp.seq, Kind.BAD_SIGNATURE,
                                    f"checkpoint at entry {cp.seq}: signature does not verify "
                                    "(forged or altered, or signed with another key)"))
            continue
        good += 1
        entry = by_seq.get(cp.seq)
        if entry is None:
            if cp.seq > last:
                # Checkpoints are sorted: the last one tells how far the log reached.
                problems[:] = [p for p in problems if p.kind != Kind.TRUNCATED]
                ends = "is empty" if not ordered else f"ends at entry {last}"
                problems.append(Problem(last + 1, Kind.TRUNCATED,
                                        f"{entries_text(last + 1, cp.seq)}: deleted from the "
                                        f"end of the log (a signed checkpoint covers entry "
                                        f"{cp.seq}, the log {ends})"))
            elif cp.seq >= first_seq:
                problems.append(Problem(cp.seq, Kind.DELETED,
                                        f"entry {cp.seq}: deleted (a signed checkpoint covers "
                                        "it)"))
            continue
        if entry.hash != cp.hash:
            problems.append(Problem(cp.seq, Kind.REWRITTEN,
                                    f"checkpoint at entry {cp.seq}: the signed hash does not "
                                    f"match entry {cp.seq}: the chain between entry "
                                    f"{last_match + 1} and entry {cp.seq} was rewritten after "
                                    "it was signed"))
            continue
        last_match = cp.seq
        signed_through = cp.seq if signed_through is None else max(signed_through, cp.seq)
    if checkpoint_every:
        present = {cp.seq for cp in checkpoints}
        first_due = -(-first_seq // checkpoint_every) * checkpoint_every  # rounded up
        due = range(first_due, last + 1, checkpoint_every)
        missing = [seq for seq in due if seq not in present]
        for seq in missing:
            problems.append(Problem(seq, Kind.CHECKPOINT_MISSING,
                                    f"checkpoint at entry {seq}: missing (one is signed every "
                                    f"{checkpoint_every} entries; deleted?)"))
    return signed_through, good, problems


def _with_anchor_problems(  # noqa: PLR0917
    ordered: list[Entry],
    checkpoints: list[Checkpoint],
    anchors: Sequence[tuple[str, Anchor]],
    public_pem: bytes,
    first_seq: int,
    reaches_anchors: bool,
    problems: list[Problem],
) -> tuple[list[Problem], list[int]]:
    """``problems`` with what the anchors add; and the seqs of the anchors that match.

    An anchor that is also a checkpoint in the log tells nothing the checkpoint did not; the
    others are what someone who deleted checkpoints could not delete.
    """
    in_log = {(c.seq, c.hash, c.signature) for c in checkpoints}
    by_seq = {e.seq: e for e in ordered}
    last = ordered[-1].seq if ordered else first_seq - 1
    found: list[Problem] = []
    matched: list[int] = []
    furthest: Anchor | None = None
    where_furthest = ""
    for where, anchor in sorted(anchors, key=lambda pair: pair[1].seq):
        if not verify_signature(public_pem, anchor.message, anchor.signature):
            found.append(Problem(anchor.seq, Kind.BAD_SIGNATURE,
                                 f"anchor for entry {anchor.seq} in {where}: signature does not "
                                 "verify (forged or altered, or signed with another key)"))
            continue
        signed = f"at {iso(anchor.at)} ({where})"
        entry = by_seq.get(anchor.seq)
        if entry is None:
            if anchor.seq > last:
                if reaches_anchors:
                    furthest, where_furthest = anchor, where
            elif anchor.seq >= first_seq and (anchor.seq, anchor.hash, anchor.signature) \
                    not in in_log:
                found.append(Problem(anchor.seq, Kind.DELETED,
                                     f"entry {anchor.seq}: deleted (the node signed it {signed})"))
            continue
        if entry.hash != anchor.hash:
            if (anchor.seq, anchor.hash, anchor.signature) not in in_log:
                found.append(Problem(anchor.seq, Kind.REWRITTEN,
                                     f"entry {anchor.seq}: not the one the node signed "
                                     f"{signed}: the log up to it was rewritten"))
            continue
        matched.append(anchor.seq)
    signed_beyond = max((c.seq for c in checkpoints if c.seq > last
                         and verify_signature(public_pem, c.message, c.signature)), default=0)
    if furthest is not None and furthest.seq > signed_beyond:
        # Only the furthest truncation is worth saying; a checkpoint said less, if anything.
        problems = [p for p in problems if p.kind != Kind.TRUNCATED]
        ends = "is empty" if not ordered else f"ends at entry {last}"
        found.append(Problem(last + 1, Kind.TRUNCATED,
                             f"{entries_text(last + 1, furthest.seq)}: deleted from the end of "
                             f"the log (the node signed entry {furthest.seq} at "
                             f"{iso(furthest.at)}, kept in {where_furthest}; the log {ends})"))
    return problems + found, matched


def entries_text(first: int, last: int) -> str:
    """ "entry 7" or "entries 7..9", as the messages say it."""
    return f"entry {first}" if first == last else f"entries {first}..{last}"
