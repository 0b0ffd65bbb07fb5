"""Agreement metrics: pixel overlap, object-level F1 and average precision, kappa, ICC.

Arrays in, numbers out. Every function that compares masks accepts an optional ``ignore`` mask: pixels
where it is true are left out of the score (for object metrics they are set to background **before**
the objects are labelled, as in Segebarth et al. 2020).

Undefined ratios are NaN, never silently 0 or 1: the Dice of two empty masks, the ROI-F1 of two images
without objects, the kappa of two raters who both put every pixel in one class.

Definitions
-----------
Pixel Dice
    ``2 |A ∩ B| / (|A| + |B|)`` on the raw binary masks (no size filter). These are the pixel Dice
    values of the study: with raw masks, expert vs ``est_GT`` reproduces its table to three decimals,
    with masks filtered by MIN_PIXEL it does not (e.g. lab-mue expert 1: 0.553 raw vs 0.554 filtered).
ROI-F1 (Segebarth et al. 2020)
    Binarise (``> 0.5``), label with 8-connectivity, drop objects with area ``< min_size``, Hungarian
    assignment maximising total IoU, matches = assigned pairs with IoU **> 0.5**;
    ``F1 = 2 matches / (n_reference + n_candidate)``.
Average precision
    ``AP(t) = TP / (TP + FP + FN)`` at IoU threshold ``t`` (the definition of stardist, cellpose and
    deepflash2, from the 2018 Data Science Bowl), averaged over thresholds.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from fiji_consensus._validate import as_binary, as_mask_stack, check_same_shape
from fiji_consensus._validate import ignore_mask as _ignore_mask
from fiji_consensus.matching import _assign_objects, _check_threshold, _label_objects

__all__ = [
    "dice",
    "iou",
    "sensitivity_specificity",
    "roi_f1",
    "object_scores",
    "average_precision",
    "fleiss_kappa",
    "fleiss_kappa_from_counts",
    "cohen_kappa",
    "icc",
    "pairwise_matrix",
    "count_objects",
    "PAIRWISE_METRICS",
    "AP_THRESHOLDS",
]

#: Default IoU thresholds of :func:`average_precision`: 0.50, 0.55, ..., 0.95.
AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Metrics understood by :func:`pairwise_matrix`.
PAIRWISE_METRICS = ("dice", "iou", "roi_f1", "kappa")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


# --------------------------------------------------------------------------------------------------
# pixel metrics


def _pixel_pair(a: Any, b: Any, ignore: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate two binary masks (+ ignore) and return the scored pixels of each as 1-D bool arrays."""
    a_ = as_binary(a, name=names[0])
    b_ = as_binary(b, name=names[1])
    check_same_shape(a_, b_, names=names)
    ign = _ignore_mask(ignore, a_.shape)
    if ign is None:
        return a_.ravel(), b_.ravel()
    keep = ~ign
    return a_[keep], b_[keep]


def _dice_counts(inter: int, sa: int, sb: int) -> float:
    return _ratio(2 * inter, sa + sb)


def _iou_counts(inter: int, sa: int, sb: int) -> float:
    return _ratio(inter, sa + sb - inter)


def _kappa_counts(n: int, inter: int, sa: int, sb: int) -> float:
    """Cohen's kappa of two binary raters from the pixel count ``n``, ``|A∩B|``, ``|A|`` and ``|B|``."""
    if n == 0:
        return math.nan
    if (sa == 0 and sb == 0) or (sa == n and sb == n):
        return math.nan  # chance agreement p_e = 1: kappa is 0/0
    both_neg = n - sa - sb + inter
    po = (inter + both_neg) / n
    pa, pb = sa / n, sb / n
    pe = pa * pb + (1.0 - pa) * (1.0 - pb)
    return (po - pe) / (1.0 - pe)


def dice(a: Any, b: Any, *, ignore: Any = None) -> float:
    """Pixel Dice coefficient of two binary masks.

    ``2 |A ∩ B| / (|A| + |B|)``, computed on the raw masks (no object size filter).

    Parameters
    ----------
    a, b : array_like, shape (Y, X)
        Binary masks (bool, 0/1 or 0/255).
    ignore : array_like of bool, shape (Y, X), optional
        Pixels left out of the score.

    Returns
    -------
    float
        In [0, 1]; **NaN when both masks are empty** (0/0: there is nothing to agree or disagree on).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[1, 1, 0, 0]])
    >>> b = np.array([[0, 1, 1, 0]])
    >>> dice(a, b)
    0.5
    >>> dice(a, b, ignore=np.array([[0, 0, 1, 0]], bool))
    0.6666666666666666
    >>> dice(np.zeros((2, 2)), np.zeros((2, 2)))
    nan
    """
    x, y = _pixel_pair(a, b, ignore, ("a", "b"))
    inter = int(np.count_nonzero(x & y))
    return _dice_counts(inter, int(np.count_nonzero(x)), int(np.count_nonzero(y)))


def iou(a: Any, b: Any, *, ignore: Any = None) -> float:
    """Pixel intersection over union (Jaccard index) of two binary masks ``a``, ``b`` (as :func:`dice`).

    Returns
    -------
    float
        ``|A ∩ B| / |A ∪ B|`` in [0, 1]; NaN when both masks are empty.

    Examples
    --------
    >>> import numpy as np
    >>> iou(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    0.3333333333333333
    """
    x, y = _pixel_pair(a, b, ignore, ("a", "b"))
    inter = int(np.count_nonzero(x & y))
    return _iou_counts(inter, int(np.count_nonzero(x)), int(np.count_nonzero(y)))


def sensitivity_specificity(reference: Any, candidate: Any, *, ignore: Any = None) -> tuple[float, float]:
    """Pixel sensitivity ``TP / (TP + FN)`` and specificity ``TN / (TN + FP)`` of a mask against a reference.

    ``reference`` and ``candidate`` are binary masks and ``ignore`` the pixels left out, as in :func:`dice`.

    Returns
    -------
    (float, float)
        Each NaN where its denominator is 0 (no reference foreground, or no reference background).

    Examples
    --------
    >>> import numpy as np
    >>> sensitivity_specificity(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    (0.5, 0.5)
    """
    r, c = _pixel_pair(reference, candidate, ignore, ("reference", "candidate"))
    tp = int(np.count_nonzero(c & r))
    fn = int(np.count_nonzero(~c & r))
    fp = int(np.count_nonzero(c & ~r))
    tn = c.size - tp - fn - fp
    return _ratio(tp, tp + fn), _ratio(tn, tn + fp)


def cohen_kappa(a: Any, b: Any, *, ignore: Any = None) -> float:
    """Cohen's kappa of two binary masks, pixels as subjects.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with the observed agreement ``p_o`` and the chance agreement
    ``p_e = p_a p_b + (1 - p_a)(1 - p_b)`` from each rater's own foreground fraction.

    ``a``, ``b``: binary masks; ``ignore``: pixels left out (as in :func:`dice`).

    Returns
    -------
    float
        In [-1, 1]; NaN when ``p_e = 1`` (both masks constant and equal) or no pixel is scored.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([1, 1, 1, 1, 0, 0, 0, 0])[None]
    >>> b = np.array([1, 1, 1, 0, 0, 0, 0, 1])[None]
    >>> cohen_kappa(a, b)
    0.5
    """
    x, y = _pixel_pair(a, b, ignore, ("a", "b"))
    inter = int(np.count_nonzero(x & y))
    return _kappa_counts(x.size, inter, int(np.count_nonzero(x)), int(np.count_nonzero(y)))


def fleiss_kappa_from_counts(counts: Any) -> float:
    """Fleiss' kappa from a subjects × categories table of rating counts.

    Parameters
    ----------
    counts : array_like of int, shape (n_subjects, n_categories)
        ``counts[i, j]`` = number of raters who put subject ``i`` in category ``j``; every row must sum
        to the same number of raters ``n >= 2``.

    Returns
    -------
    float
        ``(P̄ - P̄_e) / (1 - P̄_e)``; NaN when ``P̄_e = 1`` (every rating in one category).

    Examples
    --------
    >>> fleiss_kappa_from_counts([[2, 0], [0, 2], [1, 1], [2, 0]])
    0.4666666666666667
    """
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(
            f"counts must be a non-empty (n_subjects, n_categories) table; got shape {c.shape}"
        )
    if not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
        raise ValueError(f"counts must hold non-negative integers; got dtype {c.dtype}")
    c = c.astype(np.float64)
    n_per = c.sum(axis=1)
    n = n_per[0]
    if not np.all(n_per == n) or n < 2:
        raise ValueError(
            "every subject (row of counts) must be rated by the same number (>= 2) of raters; got "
            f"row sums from {n_per.min():g} to {n_per.max():g}"
        )
    n_sub = c.shape[0]
    p_j = c.sum(axis=0) / (n_sub * n)
    p_bar = float(((c * (c - 1)).sum(axis=1) / (n * (n - 1))).mean())
    if np.any(p_j == 1.0):
        return math.nan  # every rating in one category: chance agreement 1, kappa is 0/0
    p_e = float((p_j**2).sum())
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_kappa(masks: Any, *, ignore: Any = None) -> float:
    """Fleiss' kappa of several binary masks: pixels are the subjects, two categories.

    Parameters
    ----------
    masks : array_like, shape (R, Y, X)
        ``R >= 2`` binary masks (bool, 0/1 or 0/255) of one image, one per rater.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels left out.

    Returns
    -------
    float
        Fleiss' kappa; NaN when every scored pixel of every mask has one value (chance agreement 1)
        or no pixel is scored.

    Notes
    -----
    With two raters Fleiss' kappa equals Scott's pi, not Cohen's kappa (chance agreement from the
    pooled, not the per-rater, foreground fraction).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[[1, 0, 1, 1]], [[1, 0, 0, 1]]])
    >>> round(fleiss_kappa(m), 4)
    0.4667
    """
    stack = as_mask_stack(masks, name="masks", min_raters=2)
    r = stack.shape[0]
    votes = stack.sum(axis=0, dtype=np.int64)
    ign = _ignore_mask(ignore, votes.shape)
    if ign is not None:
        votes = votes[~ign]
    if votes.size == 0:
        return math.nan
    # subjects with equal vote counts contribute equally: work on the R + 1 possible counts
    hist = np.bincount(votes.ravel(), minlength=r + 1).astype(np.float64)
    k1 = np.arange(r + 1, dtype=np.float64)
    k0 = r - k1
    n_sub = hist.sum()
    p1 = float((hist * k1).sum() / (n_sub * r))
    p_e = p1**2 + (1.0 - p1) ** 2
    p_bar = float((hist * (k1 * (k1 - 1) + k0 * (k0 - 1))).sum() / (n_sub * r * (r - 1)))
    if hist[0] == n_sub or hist[r] == n_sub:
        return math.nan  # every pixel of every mask in one class: kappa is 0/0
    return (p_bar - p_e) / (1.0 - p_e)


# --------------------------------------------------------------------------------------------------
# ICC

_ICC_FORM = re.compile(r"^ICC\(([123]),(1|K)\)$")


def icc(ratings: Any, *, form: str = "ICC(2,1)") -> float:
    """Intraclass correlation coefficient (Shrout & Fleiss 1979).

    From a two-way ANOVA of the ``n × k`` table with mean squares BMS (between subjects), WMS (within
    subjects), JMS (between raters) and EMS (residual):

    ========  ==============================================  ==================================
    form      formula                                         meaning
    ========  ==============================================  ==================================
    ICC(1,1)  (BMS − WMS) / (BMS + (k−1) WMS)                 one-way random, single rater
    ICC(2,1)  (BMS − EMS) / (BMS + (k−1) EMS + k(JMS−EMS)/n)  two-way random, absolute agreement
    ICC(3,1)  (BMS − EMS) / (BMS + (k−1) EMS)                 two-way mixed, consistency
    ICC(1,k)  (BMS − WMS) / BMS                               mean of k raters
    ICC(2,k)  (BMS − EMS) / (BMS + (JMS − EMS)/n)             mean of k raters
    ICC(3,k)  (BMS − EMS) / BMS                               mean of k raters
    ========  ==============================================  ==================================

    Parameters
    ----------
    ratings : array_like of float, shape (n_subjects, n_raters)
        One row per subject (e.g. image), one column per rater (e.g. expert or model); no missing
        values; at least 2 × 2.
    form : str, optional
        One of the forms above (case and spaces do not matter), default ``"ICC(2,1)"``.

    Returns
    -------
    float
        The ICC; NaN when its denominator is 0 (e.g. all ratings equal).

    Examples
    --------
    Shrout & Fleiss (1979), Table 2 (6 targets, 4 judges):

    >>> import numpy as np
    >>> x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
    ...               [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    >>> [round(icc(x, form=f), 2) for f in ("ICC(1,1)", "ICC(2,1)", "ICC(3,1)")]
    [0.17, 0.29, 0.71]
    """
    if not isinstance(form, str):
        raise TypeError(f"form must be a string such as 'ICC(2,1)'; got {form!r}")
    match = _ICC_FORM.match(form.upper().replace(" ", ""))
    if match is None:
        raise ValueError(
            "form must be one of ICC(1,1), ICC(2,1), ICC(3,1), ICC(1,k), ICC(2,k), ICC(3,k); "
            f"got {form!r}"
        )
    model, single = int(match.group(1)), match.group(2) == "1"
    x = np.asarray(ratings)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(
            f"ratings must be a (n_subjects, n_raters) table with at least 2 of each; got shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"ratings must be numeric; got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("ratings must not contain NaN or infinite values (no missing ratings)")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * float(((x.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((x.mean(axis=0) - grand) ** 2).sum())
    ss_total = float(((x - grand) ** 2).sum())
    ss_err = max(ss_total - ss_rows - ss_cols, 0.0)
    bms = ss_rows / (n - 1)
    wms = (ss_total - ss_rows) / (n * (k - 1))
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    if model == 1:
        num, den = bms - wms, (bms + (k - 1) * wms) if single else bms
    elif model == 2:
        num = bms - ems
        den = bms + (k - 1) * ems + k * (jms - ems) / n if single else bms + (jms - ems) / n
    else:
        num, den = bms - ems, (bms + (k - 1) * ems) if single else bms
    if abs(den) <= 1e-12 * float(np.mean(x**2)):
        return math.nan  # no variance to attribute (e.g. all ratings equal): 0/0
    return num / den


# --------------------------------------------------------------------------------------------------
# object metrics


def _labels(mask: Any, *, name: str, min_size: int, ignore: Any) -> np.ndarray:
    return _label_objects(
        mask, min_size=min_size, connectivity=8, ignore=ignore, threshold=0.5, name=name
    )


def _labels_pair(
    reference: Any, candidate: Any, *, min_size: int, ignore: Any
) -> tuple[np.ndarray, np.ndarray]:
    ref = _labels(reference, name="reference", min_size=min_size, ignore=ignore)
    cand = _labels(candidate, name="candidate", min_size=min_size, ignore=ignore)
    check_same_shape(ref, cand, names=("reference", "candidate"))
    return ref, cand


def roi_f1(
    reference: Any,
    candidate: Any,
    *,
    min_size: int = 0,
    ignore: Any = None,
    iou_threshold: float = 0.5,
) -> float:
    """ROI-level F1 score exactly as Segebarth et al. (eLife 2020) compute it.

    1. binarise both masks (``> 0.5``), zero the ``ignore`` pixels, label objects with 8-connectivity
       and drop objects with area ``< min_size``;
    2. IoU of every pair of overlapping objects; Hungarian assignment maximising the total IoU;
    3. matches = assigned pairs with IoU **strictly** above ``iou_threshold``;
    4. ``F1 = 2 matches / (n_reference + n_candidate)``.

    Parameters
    ----------
    reference, candidate : array_like, shape (Y, X)
        Binary masks or probabilities (foreground = ``> 0.5``). Label images are binarised too, so
        touching objects merge, as in the study.
    min_size : int, optional
        The study's MIN_PIXEL: inns1 16, inns2 60, mue 30, wue1 30, wue2 112. Default 0 (keep all).
    ignore : array_like of bool, shape (Y, X), optional
        Pixels set to background in both masks before labelling.
    iou_threshold : float, optional
        Default 0.5.

    Returns
    -------
    float
        In [0, 1]; NaN when neither mask has an object (0/0). The score is symmetric in its arguments.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((6, 12), bool); ref[1:4, 1:4] = True; ref[1:4, 7:10] = True
    >>> cand = np.zeros((6, 12), bool); cand[1:4, 1:3] = True; cand[1:4, 9:11] = True
    >>> roi_f1(ref, cand)    # IoU 6/9 > 0.5 matches, IoU 3/12 does not
    0.5
    >>> roi_f1(np.zeros((4, 4)), np.zeros((4, 4)))
    nan
    """
    t = _check_threshold(iou_threshold, "iou_threshold")
    ref, cand = _labels_pair(reference, candidate, min_size=min_size, ignore=ignore)
    return _assign_objects(ref, cand).at(t).f1


def object_scores(
    reference: Any, candidate: Any, *, min_size: int = 0, ignore: Any = None, iou_threshold: float = 0.5
) -> dict[str, float]:
    """Object counts and detection scores of a candidate mask against a reference mask.

    Objects and matches as in :func:`roi_f1`.

    Parameters
    ----------
    reference, candidate : array_like, shape (Y, X)
        Binary masks or probabilities (foreground = ``> 0.5``).
    min_size, ignore, iou_threshold
        As in :func:`roi_f1`.

    Returns
    -------
    dict
        ``n_reference``, ``n_candidate``, ``tp``, ``fp``, ``fn`` (int); ``precision`` (tp / n_candidate),
        ``recall`` (tp / n_reference), ``f1`` (the ROI-F1), ``mean_matched_iou`` (mean IoU of the
        matches) (float; NaN for 0/0 or when nothing matched).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((6, 12), bool); ref[1:4, 1:4] = True; ref[1:4, 7:10] = True
    >>> cand = np.zeros((6, 12), bool); cand[1:4, 1:3] = True
    >>> s = object_scores(ref, cand)
    >>> s["tp"], s["fp"], s["fn"], s["precision"], s["recall"], round(s["mean_matched_iou"], 3)
    (1, 0, 1, 1.0, 0.5, 0.667)
    """
    t = _check_threshold(iou_threshold, "iou_threshold")
    ref, cand = _labels_pair(reference, candidate, min_size=min_size, ignore=ignore)
    m = _assign_objects(ref, cand).at(t)
    return {
        "n_reference": m.n_ref,
        "n_candidate": m.n_cand,
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "mean_matched_iou": float(m.ious.mean()) if m.tp else math.nan,
    }


def average_precision(
    reference: Any,
    candidate: Any,
    *,
    thresholds: Any = AP_THRESHOLDS,
    min_size: int = 0,
    ignore: Any = None,
) -> tuple[float, np.ndarray]:
    """Average precision over IoU thresholds, as stardist, cellpose and deepflash2 define it.

    ``AP(t) = TP / (TP + FP + FN)`` at IoU threshold ``t`` (the 2018 Data Science Bowl metric; it is
    not the area under a precision-recall curve), and the mean of ``AP(t)`` over ``thresholds``.

    Objects are labelled as in :func:`roi_f1`; one Hungarian assignment (maximising total IoU) is made
    and a pair counts at threshold ``t`` if its IoU is **> t**, so ``AP(0.5)`` and :func:`roi_f1` agree:
    ``F1 = 2 AP / (1 + AP)``. stardist and cellpose count pairs with IoU **≥ t** and re-assign per
    threshold; the results differ only when an IoU equals a threshold exactly or when maximising the
    total IoU gives up a pair above the threshold for two weaker ones (rare).

    Parameters
    ----------
    reference, candidate : array_like, shape (Y, X)
        Binary masks or probabilities (foreground = ``> 0.5``).
    thresholds : array_like of float, shape (T,), optional
        IoU thresholds in [0, 1]; default :data:`AP_THRESHOLDS` (0.50, 0.55, ..., 0.95).
    min_size, ignore
        As in :func:`roi_f1`.

    Returns
    -------
    mean_ap : float
        Mean of ``ap`` (NaN when neither mask has an object).
    ap : ndarray of float64, shape (T,)
        ``AP(t)`` for each threshold.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((6, 12), bool); ref[1:4, 1:4] = True; ref[1:4, 7:10] = True
    >>> cand = np.zeros((6, 12), bool); cand[1:4, 1:3] = True; cand[1:4, 7:10] = True
    >>> mean_ap, ap = average_precision(ref, cand, thresholds=[0.5, 0.7, 0.9])
    >>> ap.tolist(), round(mean_ap, 4)
    ([1.0, 0.3333333333333333, 0.3333333333333333], 0.5556)
    """
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim == 0:
        th = th[None]
    if th.ndim != 1 or th.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence; got shape {th.shape}")
    if not np.all((th >= 0) & (th <= 1)):
        raise ValueError(f"thresholds must lie in [0, 1]; got {th.tolist()}")
    ref, cand = _labels_pair(reference, candidate, min_size=min_size, ignore=ignore)
    a = _assign_objects(ref, cand)
    if a.n_ref + a.n_cand == 0:
        return math.nan, np.full(th.shape, np.nan)
    tp = (a.ious[None, :] > th[:, None]).sum(axis=1)
    ap = tp / (a.n_ref + a.n_cand - tp)
    return float(ap.mean()), ap


def count_objects(mask: Any, *, min_size: int = 0, ignore: Any = None) -> int:
    """Number of objects in a mask (8-connectivity, area ``>= min_size``, ``ignore`` zeroed first).

    Parameters
    ----------
    mask : array_like, shape (Y, X)
        Binary mask or probability (foreground = ``> 0.5``).
    min_size : int, optional
        Smallest object area kept.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels set to background before labelling.

    Returns
    -------
    int

    Examples
    --------
    >>> import numpy as np
    >>> count_objects(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]]))
    2
    >>> count_objects(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]]), min_size=3)
    1
    """
    return int(_labels(mask, name="mask", min_size=min_size, ignore=ignore).max(initial=0))


# --------------------------------------------------------------------------------------------------
# agreement matrices


def pairwise_matrix(
    masks: Any, metric: str = "dice", *, min_size: int = 0, ignore: Any = None
) -> np.ndarray:
    """Agreement of every pair of raters on one image.

    Parameters
    ----------
    masks : array_like, shape (R, Y, X)
        Binary masks (bool, 0/1 or 0/255), one per rater; a list of 2-D masks works too.
    metric : {"dice", "iou", "roi_f1", "kappa"}, optional
        Pixel Dice, pixel IoU, ROI-F1 (:func:`roi_f1`) or Cohen's kappa (:func:`cohen_kappa`).
    min_size : int, optional
        Smallest object area for ``"roi_f1"``; the pixel metrics use the raw masks and ignore it.
    ignore : array_like of bool, shape (Y, X), optional
        Pixels left out (zeroed before labelling for ``"roi_f1"``).

    Returns
    -------
    ndarray of float64, shape (R, R)
        Symmetric; entry ``[i, j]`` compares rater ``i`` with rater ``j``. The diagonal is 1.0, or NaN
        where the metric is undefined for that rater alone (an empty mask; for kappa a constant mask).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[[1, 1, 0, 0]], [[0, 1, 1, 0]], [[0, 0, 0, 0]]])
    >>> pairwise_matrix(m, "dice")
    array([[1. , 0.5, 0. ],
           [0.5, 1. , 0. ],
           [0. , 0. , nan]])
    """
    if not isinstance(metric, str) or metric not in PAIRWISE_METRICS:
        raise ValueError(f"metric must be one of {PAIRWISE_METRICS}; got {metric!r}")
    stack = as_mask_stack(masks, name="masks", min_raters=1)
    r = stack.shape[0]
    ign = _ignore_mask(ignore, stack.shape[1:])
    out = np.full((r, r), np.nan)
    if metric == "roi_f1":
        labels = [
            _labels(stack[i], name=f"masks[{i}]", min_size=min_size, ignore=ign) for i in range(r)
        ]
        for i in range(r):
            out[i, i] = 1.0 if labels[i].max(initial=0) > 0 else math.nan
            for j in range(i + 1, r):
                out[i, j] = out[j, i] = _assign_objects(labels[i], labels[j]).at(0.5).f1
        return out
    flat = stack.reshape(r, -1) if ign is None else stack[:, ~ign]
    n = flat.shape[1]
    sizes = np.count_nonzero(flat, axis=1)
    for i in range(r):
        for j in range(i, r):
            inter = int(sizes[i]) if i == j else int(np.count_nonzero(flat[i] & flat[j]))
            si, sj = int(sizes[i]), int(sizes[j])
            if metric == "dice":
                v = _dice_counts(inter, si, sj)
            elif metric == "iou":
                v = _iou_counts(inter, si, sj)
            else:
                v = _kappa_counts(n, inter, si, sj)
            out[i, j] = out[j, i] = v
    return out
