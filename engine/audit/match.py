"""One-to-one matching of generated masks to reference masks of one image, by IoU.

We use the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the RLE IoU
matrix (``engine.masks.rle_iou``), maximising the total IoU. Why not greedy: the engine's
masks are nested (sub-part ⊂ part ⊂ whole), so one generated mask often overlaps several
references well; greedy matching in IoU order can give a reference's best partner away to a
neighbour and leave both worse off, and its result depends on tie order. The optimal
assignment is order-independent and never has a lower total IoU. Pairs the assignment makes
with IoU 0 are dropped: they are not matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine import masks as mask_ops


@dataclass
class Matching:
    """The result for one image with ``n_generated`` masks and ``n_reference`` references.

    ``generated_index[i]`` ↔ ``reference_index[i]`` is the ``i``-th matched pair, with IoU
    ``iou[i] > 0``. ``best_iou[g]`` is generated mask ``g``'s largest IoU with any reference
    (its "actual IoU" for predicted-IoU calibration); ``reference_iou[r]`` is reference ``r``'s
    matched IoU (0 when unmatched).
    """

    n_generated: int
    n_reference: int
    generated_index: np.ndarray
    reference_index: np.ndarray
    iou: np.ndarray
    best_iou: np.ndarray
    reference_iou: np.ndarray


def match_iou_matrix(iou: np.ndarray) -> Matching:
    """Hungarian matching on a ``G×R`` IoU matrix (generated × reference)."""
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise ValueError(f"iou must be a G×R matrix, got shape {iou.shape}")
    n_gen, n_ref = iou.shape
    empty = np.zeros(0, dtype=np.int64)
    if n_gen == 0 or n_ref == 0:
        return Matching(n_gen, n_ref, empty, empty, np.zeros(0), np.zeros(n_gen), np.zeros(n_ref))
    rows, cols = linear_sum_assignment(iou, maximize=True)
    pair_iou = iou[rows, cols]
    keep = pair_iou > 0
    rows, cols, pair_iou = rows[keep], cols[keep], pair_iou[keep]
    reference_iou = np.zeros(n_ref)
    reference_iou[cols] = pair_iou
    return Matching(
        n_generated=n_gen,
        n_reference=n_ref,
        generated_index=rows.astype(np.int64),
        reference_index=cols.astype(np.int64),
        iou=pair_iou,
        best_iou=iou.max(axis=1),
        reference_iou=reference_iou,
    )


def match_masks(generated: list[dict], reference: list[dict]) -> Matching:
    """Match RLE lists (same ``[h, w]``) one-to-one by IoU; see ``match_iou_matrix``."""
    return match_iou_matrix(mask_ops.rle_iou(generated, reference))
