"""Cuts: the picture changing to another shot between two analysed frames.

    before = Thumbnail.of(rgb)
    if Thumbnail.of(next_rgb).cut_from(before): tracker.flush()

A cut ends every face track, so that a face of the new shot is not joined to someone else's
track where the two happen to sit in the same place (in subject access it would be shown as the
subject; in analytics two people would share one record). A broadcast clip cuts; a fixed camera
"cuts" when it is moved, masked or its lights switch.

A cut changes both the picture (mean difference of SIZE thumbnails over DIFF grey levels) and
its colours (L1 distance of 64-bin colour histograms over COLOURS). On the shared clips a cut
gives 24 and 0.17; a fast pan 15-17 but 0.08; the night crowd's flicker up to 0.39 but 7.
A thumbnail costs ~0.2 ms from a 640x360 picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

DIFF: Final = 15.0
COLOURS: Final = 0.12
SIZE: Final = (64, 36)


@dataclass(frozen=True, slots=True, eq=False)
class Thumbnail:
    grey: npt.NDArray[np.float32]  # SIZE, 0..255
    colours: npt.NDArray[np.float64]  # 64 bins (4 levels a channel), summing to 1

    @classmethod
    def of(cls, rgb: U8) -> Thumbnail:
        """The thumbnail of an RGB (H, W, 3) uint8 picture of any size."""
        small = rgb if rgb.shape[1::-1] == SIZE else np.asarray(
            cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        levels = (small // 64).reshape(-1, 3).astype(np.int64)
        counts = np.bincount(levels[:, 0] * 16 + levels[:, 1] * 4 + levels[:, 2], minlength=64)
        return cls(small.astype(np.float32).mean(axis=2), counts / len(levels))

    def cut_from(self, before: Thumbnail) -> bool:
        """Whether this picture is another shot than `before`."""
        return (float(np.abs(self.grey - before.grey).mean()) > DIFF
                and float(np.abs(self.colours - before.colours).sum()) > COLOURS)
