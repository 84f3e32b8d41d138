"""Identification (one face against a gallery of N people) with calibrated error rates.

    python bench/identification.py [--data ../shared/data] [--quick] [--repeats 20]

Verification (is A the same person as B?) at 0.6 is ~99 % right on LFW pairs, but a watchlist or
a case search compares one face with every person it holds: with N people, a stranger has N
chances to fall under the threshold. This bench measures, per threshold t:

- FPIR (false positive identification rate): share of searches by a person NOT in the gallery
  whose nearest gallery distance is below t, i.e. a stranger named as someone.
- FNIR (false negative identification rate): share of searches by a gallery person whose
  nearest gallery person is not them, or is them but at t or more (missed or named wrongly).

Data: every photo of faces/labels.csv (shared sources and LFW; 289 identities, 107 with two or
more photos). Each photo gets one descriptor (the central face for LFW's centred photos, the
largest face elsewhere), computed once and kept in memory only: descriptors are biometric data
even of public photos, so none is written anywhere.

Protocol. A gallery enrols one photo per person (a case subject usually has one); the probe is
always a different photo (enrol and probe photos are disjoint). Every photo is a stranger search
against a gallery of N people drawn from the other identities, and, where its identity has a
second photo, a mated search against a gallery of that other photo plus N-1 others. Galleries and
enrol photos are redrawn in each of `--repeats` random splits. The identities are split in two
halves each time: the threshold is chosen on one half (tuned) and its error rates are reported on
the other (held-out), so the chosen threshold is not graded on the faces it was fitted to.

Gallery sizes: 10, 100 and 1000 were asked for; the data hold 289 identities, so a stranger
search can use a gallery of at most 288 (all others) and a half at most ~143. Beyond what is
measured, FPIR at N is extrapolated from the single-comparison false match rate FMR(t) (share of
photo pairs of different people closer than t): FPIR_N(t) = 1 - (1 - FMR(t))^N, which treats a
stranger's distances to different gallery people as independent (checked below against the
measured sizes). FPIR 0.1 % at N=1000 needs FMR ~1e-6; the ~200k different-person pairs here
can resolve ~1e-5 at best, so below that FMR is read from a normal fitted to the lower tail of
the different-person distances (quantiles 1e-4..1e-2 against normal scores). That tail model is
the weakest link of the figure, and the bench prints how it compares with what is counted.

--quick: a subset of the photos and three splits, finishing in well under a minute (CI); its
numbers are a smoke test, not the benchmark's.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from custodes.faces import calibration
from custodes.vision.embedding import MATCH_THRESHOLD, FaceEmbedder
from custodes.vision.faces import Face, FaceDetector

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

STANDARD: Final = NormalDist()
SHARED_DATA: Final = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES: Final = (10, 100, 1000)
TARGET_FPIR: Final = 0.001  # a "match" names at most 1 stranger in 1000 at a 1000-person gallery
TARGET_SIZE: Final = 1000
GRID: Final = np.round(np.arange(0.30, 0.655, 0.01), 3)
# Photos larger than this (longest side) are shrunk before detection: the faces in them are
# hundreds of pixels, far above the 150 px chip, and detection cost grows with the pixels.
WORK_SIDE: Final = 800
# The lower tail used for the normal fit: below 1e-4 too few pairs are counted, above 1e-2 the
# body of the distribution (not its tail) would set the slope.
TAIL_FIT: Final = (1e-4, 1e-2)
QUICK_PHOTOS: Final = 220


@dataclass(frozen=True)
class Photos:
    paths: tuple[str, ...]
    identity: I64  # (n,) index into names
    names: tuple[str, ...]
    vectors: F32  # (n, 128)


def describe_all(root: Path, rows: Sequence[tuple[str, str]]) -> tuple[Photos, list[str]]:
    """One descriptor per photo; also the photos where no face was found (left out)."""
    detector = FaceDetector()
    embedder = FaceEmbedder("onnx", threads=1)
    paths, names, vectors, missed = [], [], [], []
    for path, name in rows:
        bgr = cv2.imread(str(root / path), cv2.IMREAD_COLOR)
        if bgr is None:
            missed.append(f"{path} (unreadable)")
            continue
        rgb: U8 = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
        scale = min(1.0, WORK_SIDE / max(rgb.shape[:2]))
        if scale < 1.0:
            rgb = np.ascontiguousarray(cv2.resize(
                rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                interpolation=cv2.INTER_AREA), dtype=np.uint8)
        face = pick_face(detector.detect(rgb), rgb.shape[1], rgb.shape[0],
                         centred=path.startswith("lfw/"))
        if face is None:
            missed.append(f"{path} (no face)")
            continue
        paths.append(path)
        names.append(name)
        vectors.append(embedder.embed(rgb, [face.dlib_shape()])[0])
    order = sorted(set(names))
    index = {n: i for i, n in enumerate(order)}
    return Photos(tuple(paths), np.array([index[n] for n in names], dtype=np.int64),
                  tuple(order), np.stack(vectors).astype(np.float32)), missed


def pick_face(faces: Sequence[Face], width: int, height: int, *, centred: bool) -> Face | None:
    """LFW centres the labelled person (others may show at the edges); elsewhere the labelled
    person is the photo's subject, taken as its largest face."""
    if not faces:
        return None
    if centred:
        return min(faces, key=lambda f: (f.box.center[0] - width / 2) ** 2
                   + (f.box.center[1] - height / 2) ** 2)
    return max(faces, key=lambda f: f.box.area)


@dataclass(frozen=True)
class Searches:
    """Nearest gallery distance of every search of one gallery size, over all splits."""

    stranger: F64  # nearest distance of each stranger search
    mated: F64  # distance to the probe's own enrolled photo
    mated_rival: F64  # nearest distance to anyone else in that gallery

    def fpir(self, t: float) -> float:
        return float(np.mean(self.stranger < t)) if len(self.stranger) else math.nan

    def fnir(self, t: float) -> float:
        """Missed (own distance >= t) or named wrongly (someone else nearer and below t)."""
        if not len(self.mated):
            return math.nan
        found = (self.mated < t) & (self.mated <= self.mated_rival)
        return float(1.0 - np.mean(found))


def search(photos: Photos, distances: F64, pool: I64, size: int, rng: np.random.Generator,
           ) -> tuple[list[float], list[float], list[float]]:
    """One split's searches within the identities of ``pool`` at gallery ``size``."""
    allowed = set(pool.tolist())
    members: dict[int, list[int]] = defaultdict(list)
    for i, ident in enumerate(photos.identity.tolist()):
        if ident in allowed:
            members[ident].append(i)
    idents = np.array(sorted(members), dtype=np.int64)
    # One enrol photo per identity for this split (the probe's own identity re-drawn below).
    enrol = {ident: int(rng.choice(members[ident])) for ident in members}
    stranger, mated, rival = [], [], []
    for ident in idents:
        others = idents[idents != ident]
        if len(others) < size:
            continue
        for probe in members[int(ident)]:
            gallery = rng.choice(others, size=size, replace=False)
            cols = np.array([enrol[int(g)] for g in gallery])
            stranger.append(float(distances[probe, cols].min()))
            own = [p for p in members[int(ident)] if p != probe]
            if own:
                mate = int(rng.choice(own))
                cols = cols[:size - 1]
                mated.append(float(distances[probe, mate]))
                rival.append(float(distances[probe, cols].min()) if len(cols) else math.inf)
    return stranger, mated, rival


def impostor_distances(photos: Photos, distances: F64, pool: I64) -> F64:
    """Distances of every pair of photos of two different people within ``pool``."""
    inside = np.isin(photos.identity, pool)
    idx = np.flatnonzero(inside)
    sub = distances[np.ix_(idx, idx)]
    ids = photos.identity[idx]
    upper = np.triu(np.ones(sub.shape, dtype=bool), k=1) & (ids[:, None] != ids[None, :])
    return np.sort(sub[upper])


@dataclass(frozen=True)
class TailFit:
    """Distance d at false match rate p: d = mean + sd * Phi^-1(p), fitted on the lower tail."""

    mean: float
    sd: float

    @classmethod
    def fit(cls, impostors: F64) -> TailFit:
        n = len(impostors)
        ranks = np.arange(1, n + 1)
        p = (ranks - 0.5) / n
        tail = (p >= TAIL_FIT[0]) & (p <= TAIL_FIT[1])
        if tail.sum() < 3:  # too few pairs (quick runs): fit the lowest tenth instead
            tail = p <= 0.1
        scores = np.array([STANDARD.inv_cdf(float(x)) for x in p[tail]])
        sd, mean = np.polyfit(scores, impostors[tail], 1)
        return cls(float(mean), float(sd))

    def fmr(self, t: float) -> float:
        return STANDARD.cdf((t - self.mean) / self.sd)

    def fpir(self, t: float, size: int) -> float:
        return 1.0 - (1.0 - self.fmr(t)) ** size

    def threshold(self, fpir: float, size: int) -> float:
        """The largest distance whose predicted FPIR at ``size`` is at most ``fpir``."""
        fmr = 1.0 - (1.0 - fpir) ** (1.0 / size)
        return self.mean + self.sd * STANDARD.inv_cdf(fmr)


def counted_fpir(impostors: F64, t: float, size: int) -> float:
    fmr = float(np.searchsorted(impostors, t, side="left")) / len(impostors)
    return 1.0 - (1.0 - fmr) ** size


def halves(photos: Photos, rng: np.random.Generator) -> tuple[I64, I64]:
    """Identities split in two, each half with as many multi-photo identities as the other."""
    counts = np.bincount(photos.identity, minlength=len(photos.names))
    multi = rng.permutation(np.flatnonzero(counts >= 2))
    single = rng.permutation(np.flatnonzero(counts == 1))
    a = np.concatenate([multi[0::2], single[1::2]])
    b = np.concatenate([multi[1::2], single[0::2]])
    return np.sort(a), np.sort(b)


def pct(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.2f} %" if x >= 0.0001 or x == 0 else f"{100 * x:.1e} %"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--quick", action="store_true", help="a subset, for a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="random splits (20; quick 3)")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 20)
    rng = np.random.default_rng(args.seed)

    root = args.data / "faces"
    with open(root / "labels.csv", newline="") as f:
        rows = [(r["path"], r["identity"]) for r in csv.DictReader(f)]
    if args.quick:
        # LFW's small photos only (cheap to describe): the first ones in path order, a fixed
        # subset (alphabetical, so not a fair sample of the people: smoke figures only).
        rows = sorted(r for r in rows if r[0].startswith("lfw/"))[:QUICK_PHOTOS]
    started = time.perf_counter()
    photos, missed = describe_all(root, rows)
    described = time.perf_counter() - started
    n_ids = len(photos.names)
    counts = np.bincount(photos.identity)
    print(f"# Identification: {len(photos.paths)} photos described in {described:.0f} s, "
          f"{n_ids} identities ({int((counts >= 2).sum())} with 2+ photos), "
          f"{len(missed)} photos without a face{': ' + ', '.join(missed) if missed else ''}\n")
    largest = n_ids - 1
    if largest < max(SIZES):
        print(f"Only {n_ids} identities exist: the largest gallery a stranger can be searched "
              f"against is {largest} people (all others); a half holds ~{n_ids // 2}. FPIR at "
              f"{TARGET_SIZE} is extrapolated (see the module doc).\n")

    diff = photos.vectors[:, None, :] - photos.vectors[None, :, :]
    distances = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)).astype(np.float64)
    everyone = np.arange(n_ids, dtype=np.int64)

    # -- all identities: measured FPIR/FNIR per threshold and gallery size --------------------
    sizes = sorted({s for s in SIZES if s <= largest} | {largest})
    full: dict[int, Searches] = {}
    for size in sizes:
        s_all, m_all, r_all = [], [], []
        for _ in range(repeats):
            s, m, r = search(photos, distances, everyone, size, rng)
            s_all += s
            m_all += m
            r_all += r
        full[size] = Searches(np.array(s_all), np.array(m_all), np.array(r_all))
    impostors = impostor_distances(photos, distances, everyone)
    fit = TailFit.fit(impostors)
    genuine = distances[np.triu(photos.identity[:, None] == photos.identity[None, :], k=1)]
    print(f"{len(impostors)} different-person pairs: min {impostors[0]:.3f}, 0.01 % "
          f"{np.quantile(impostors, 1e-4):.3f}, 0.1 % {np.quantile(impostors, 1e-3):.3f}, "
          f"1 % {np.quantile(impostors, 1e-2):.3f}, median {np.median(impostors):.3f}; "
          f"lower-tail normal fit mean {fit.mean:.3f} sd {fit.sd:.3f}. "
          f"{len(genuine)} same-person pairs: median {np.median(genuine):.3f}, "
          f"99 % below {np.quantile(genuine, 0.99):.3f}, max {genuine.max():.3f}.\n")
    closest = np.argsort(np.where(
        photos.identity[:, None] != photos.identity[None, :],
        np.triu(distances, k=1) + np.tril(np.full_like(distances, np.inf)), np.inf),
        axis=None)[:5]
    print("Closest different-person pairs (a label error would show here): " + "; ".join(
        f"{photos.paths[i // len(distances)]} ~ {photos.paths[i % len(distances)]} "
        f"{distances[i // len(distances), i % len(distances)]:.3f}" for i in closest) + "\n")

    print(f"## FPIR / FNIR per threshold, all identities, {repeats} random galleries per size "
          f"(measured), and FPIR at {TARGET_SIZE} (extrapolated)\n")
    header = ["t"]
    for size in sizes:
        header += [f"FPIR@{size}", f"FNIR@{size}"]
    header += [f"FPIR@{TARGET_SIZE} from counted FMR", f"FPIR@{TARGET_SIZE} from tail fit"]
    rows_out = []
    for t in GRID[::2] if not args.quick else GRID[::5]:
        row: list[object] = [f"{t:.2f}"]
        for size in sizes:
            row += [pct(full[size].fpir(t)), pct(full[size].fnir(t))]
        row += [pct(counted_fpir(impostors, t, TARGET_SIZE)), pct(fit.fpir(t, TARGET_SIZE))]
        rows_out.append(row)
    table(header, rows_out)
    print("Searches per size (stranger / mated): " + ", ".join(
        f"{s}: {len(full[s].stranger)}/{len(full[s].mated)}" for s in sizes) + "\n")
    print("Check of the extrapolation at the measured sizes, t = 0.55 and 0.60: "
          + "; ".join(f"N={s} t={t}: measured {pct(full[s].fpir(t))}, from counted FMR "
                      f"{pct(counted_fpir(impostors, t, s))}, tail fit {pct(fit.fpir(t, s))}"
                      for s in sizes for t in (0.55, 0.60)) + "\n")

    # -- tuned on one half of the identities, reported on the other ---------------------------
    print(f"## Tuned vs held-out: the threshold for FPIR <= {pct(TARGET_FPIR)} at "
          f"{TARGET_SIZE} (tail fit) chosen on half the identities, graded on the other half "
          f"({repeats} splits)\n")
    split_rows = []
    chosen: list[float] = []
    held: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        a, b = halves(photos, rng)
        t_a = TailFit.fit(impostor_distances(photos, distances, a)).threshold(
            TARGET_FPIR, TARGET_SIZE)
        chosen.append(t_a)
        imp_b = impostor_distances(photos, distances, b)
        fit_b = TailFit.fit(imp_b)
        row = [f"{t_a:.3f}"]
        half_largest = len(b) - 1
        for size, name in ((10, "10"), (min(100, half_largest), "100"),
                           (half_largest, "largest")):
            got = Searches(*(np.array(x) for x in search(photos, distances, b, size, rng)))
            tuned = Searches(*(np.array(x) for x in search(photos, distances, a,
                                                           min(size, len(a) - 1), rng)))
            for label, value in ((f"tuned FPIR@{name}", tuned.fpir(t_a)),
                                 (f"held-out FPIR@{name}", got.fpir(t_a)),
                                 (f"held-out FNIR@{name}", got.fnir(t_a))):
                held[label].append(value)
            row += [pct(got.fpir(t_a)), pct(got.fnir(t_a))]
        # The shipped match distance, graded the same way on each held-out half.
        shipped = calibration.MATCH_DISTANCE
        held[f"shipped {shipped}: held-out FPIR@1000 (tail fit)"].append(
            fit_b.fpir(shipped, TARGET_SIZE))
        held[f"shipped {shipped}: held-out FPIR@1000 (counted FMR)"].append(
            counted_fpir(imp_b, shipped, TARGET_SIZE))
        held["held-out FPIR@1000 (tail fit of held-out)"].append(fit_b.fpir(t_a, TARGET_SIZE))
        held["held-out FPIR@1000 (counted FMR)"].append(counted_fpir(imp_b, t_a, TARGET_SIZE))
        row += [pct(fit_b.fpir(t_a, TARGET_SIZE)), pct(counted_fpir(imp_b, t_a, TARGET_SIZE))]
        split_rows.append(row)
    table(["t tuned on A", "B FPIR@10", "B FNIR@10", "B FPIR@100", "B FNIR@100",
           "B FPIR@largest", "B FNIR@largest", "B FPIR@1000 tail fit", "B FPIR@1000 counted"],
          split_rows)
    table(["figure", "mean", "min", "max"],
          [[k, pct(statistics.fmean(v)), pct(min(v)), pct(max(v))] for k, v in held.items()])
    print(f"Threshold tuned per split: median {statistics.median(chosen):.3f}, "
          f"min {min(chosen):.3f}, max {max(chosen):.3f}. Whole data: "
          f"{fit.threshold(TARGET_FPIR, TARGET_SIZE):.3f}.\n")

    # -- what custodes ships ------------------------------------------------------------------
    match, possible = calibration.MATCH_DISTANCE, calibration.POSSIBLE_DISTANCE
    print(f"## custodes' levels (custodes.faces.calibration): match < {match}, "
          f"possible < {possible} (= MATCH_THRESHOLD {MATCH_THRESHOLD})\n")
    level_rows = []
    for t in (match, possible):
        row = [f"{t:.2f}"]
        for size in sizes:
            row += [pct(full[size].fpir(t)), pct(full[size].fnir(t))]
        row += [pct(fit.fpir(t, TARGET_SIZE))]
        level_rows.append(row)
    table(["t", *[f"{k}@{s}" for s in sizes for k in ("FPIR", "FNIR")],
           f"FPIR@{TARGET_SIZE} (tail fit)"], level_rows)
    if match > min(chosen):
        print(f"WARNING: the shipped match distance {match} is above a threshold tuned in "
              f"one split ({min(chosen):.3f}).")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
