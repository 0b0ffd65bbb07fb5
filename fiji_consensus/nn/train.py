"""Training a U-Net ensemble on consensus labels (CPU first, GPU when there is one).

:func:`train_ensemble` splits the images into folds (k-fold, grouped k-fold or bootstrap), trains one member
per split with its own seed, validates each member on its held-out images (pixel Dice and the Segebarth
ROI-F1), keeps the best checkpoint of each member, optionally applies the paper's selection rule, and writes
an ensemble folder (see :mod:`fiji_consensus.nn.ensemble`). Checkpoints are written atomically every
``checkpoint_every`` iterations; calling it again on the same folder resumes and, on a CPU with an iteration
budget, reaches bit-identical weights.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._atomic import claim_folder, remove_temporary
from .._validate import as_binary, as_image_2d
from ..config import AugmentOptions, TrainConfig
from .data import (
    AugmentConfig,
    PatchSampler,
    TrainingImage,
    border_weights,
    describe,
    pad_to_multiple,
    percentile_normalize,
)

__all__ = [
    "TrainConfig",
    "AugmentOptions",
    "train_ensemble",
    "train_member",
    "TrainingPlan",
    "make_splits",
    "masked_bce_dice_loss",
    "member_seeds",
]

log = logging.getLogger(__name__)


def masked_bce_dice_loss(
    logits,
    target,
    valid,
    weight=None,
    *,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1.0,
):
    """Binary cross-entropy (soft targets) + soft Dice, both restricted to valid pixels.

    Parameters
    ----------
    logits, target, valid : torch.Tensor, shape (B, 1, Y, X)
        Network logits; targets in [0, 1]; 1 where the pixel counts, 0 where it is ignored.
    weight : torch.Tensor, optional
        Per-pixel BCE weights (e.g. border weights); multiplied by ``valid``.

    Ignored pixels get exactly zero gradient. Dice is computed over the whole batch (stable for sparse
    foreground).
    """
    import torch
    import torch.nn.functional as F

    w = valid if weight is None else weight * valid
    loss = logits.new_zeros(())
    if bce_weight:
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = loss + bce_weight * (bce * w).sum() / torch.clamp(w.sum(), min=1.0)
    if dice_weight:
        p = torch.sigmoid(logits) * valid
        t = target * valid
        dice = (2.0 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)
        loss = loss + dice_weight * (1.0 - dice)
    return loss


# --------------------------------------------------------------------------------------------- splits


def member_seeds(seed: int, members: int) -> list[int]:
    """One independent 32-bit seed per member, derived from the master seed."""
    return [int(s.generate_state(1, np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(members)]


def make_splits(
    image_ids: Sequence[str],
    *,
    members: int,
    split: str = "auto",
    folds: int | None = None,
    groups: dict[str, str] | None = None,
    seed: int = 0,
) -> list[tuple[list[str], list[str]]]:
    """Training and validation image ids of every member.

    k-fold: the shuffled ids are cut into ``folds`` parts; member ``k`` validates on part ``k``. Grouped
    k-fold: whole groups go to one fold (largest groups first, each to the fold with the fewest images).
    Bootstrap: each member trains on ``n`` ids drawn with replacement (duplicates kept) and validates on
    the ids never drawn. All: every member trains and validates on all ids (fine-tuning on a few images).

    >>> make_splits(["a", "b", "c", "d"], members=2, split="kfold", seed=0)
    [(['b', 'd'], ['a', 'c']), (['a', 'c'], ['b', 'd'])]
    """
    ids = list(image_ids)
    n = len(ids)
    if split == "auto":
        split = "group_kfold" if groups else "kfold"
    if split == "all":
        if n < 1:
            raise ValueError("split='all' needs at least 1 image; got none")
        return [(list(ids), list(ids)) for _ in range(members)]
    if split in ("kfold", "group_kfold"):
        k = folds or members
        if k < 2:
            raise ValueError(
                f"{split} needs at least 2 folds; got {k} (members={members}, folds={folds}); "
                "use split='bootstrap' for a single member"
            )
        if members > k:
            raise ValueError(
                f"members ({members}) cannot exceed folds ({k}) with {split}: each member validates on "
                "its own fold; use more folds or split='bootstrap'"
            )
        rng = np.random.default_rng(seed)
        if split == "kfold":
            if n < k:
                raise ValueError(f"k-fold with {k} folds needs at least {k} images; got {n}")
            order = rng.permutation(n)
            parts = [sorted(ids[i] for i in part) for part in np.array_split(order, k)]
        else:
            if not groups:
                raise ValueError("split='group_kfold' needs groups (image id -> group); got none")
            missing = [i for i in ids if i not in groups]
            if missing:
                raise ValueError(
                    f"groups has no entry for {len(missing)} image id(s): {missing[:5]}"
                    f"{' ...' if len(missing) > 5 else ''}"
                )
            by_group: dict[str, list[str]] = {}
            for i in ids:
                by_group.setdefault(str(groups[i]), []).append(i)
            if len(by_group) < k:
                raise ValueError(
                    f"grouped k-fold with {k} folds needs at least {k} groups; got {len(by_group)} "
                    f"group(s) {sorted(by_group)} over {n} images"
                )
            names = sorted(by_group)
            names = [names[i] for i in rng.permutation(len(names))]
            names.sort(key=lambda g: -len(by_group[g]))  # stable: shuffled order among equal sizes
            parts_l: list[list[str]] = [[] for _ in range(k)]
            for g in names:
                j = min(range(k), key=lambda f: (len(parts_l[f]), f))
                parts_l[j].extend(by_group[g])
            parts = [sorted(p) for p in parts_l]
        splits = []
        for m in range(members):
            val = parts[m]
            train = [i for i in ids if i not in set(val)]
            splits.append((train, list(val)))
        return splits
    if split == "bootstrap":
        if n < 2:
            raise ValueError(f"bootstrap needs at least 2 images; got {n}")
        splits = []
        for ms in member_seeds(seed, members):
            rng = np.random.default_rng(ms)
            for _ in range(1000):
                draw = rng.integers(n, size=n)
                oob = sorted(set(range(n)) - set(draw.tolist()))
                if oob:
                    break
            else:  # pragma: no cover - astronomically unlikely for n >= 2
                raise RuntimeError("could not draw a bootstrap sample with out-of-bag images")
            splits.append(([ids[i] for i in sorted(draw.tolist())], [ids[i] for i in oob]))
        return splits
    raise ValueError(f"split must be 'auto', 'kfold', 'group_kfold', 'bootstrap' or 'all'; got {split!r}")


# --------------------------------------------------------------------------------------------- inputs


def _check_inputs(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    image_ids: Sequence[str],
    ignore: Sequence[np.ndarray | None] | None,
    expert_masks: dict[str, Sequence[np.ndarray]] | None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None], dict[str, list[np.ndarray]]]:
    n = len(images)
    if n == 0:
        raise ValueError("images is empty: give at least one training image")
    if len(targets) != n or len(image_ids) != n:
        raise ValueError(
            f"images, targets and image_ids must have the same length; got {n}, {len(targets)} and {len(image_ids)}"
        )
    if len(set(image_ids)) != n:
        dup = sorted({i for i in image_ids if list(image_ids).count(i) > 1})
        raise ValueError(f"image_ids must be unique; got duplicates {dup[:5]}")
    if ignore is not None and len(ignore) != n:
        raise ValueError(f"ignore must hold one entry (array or None) per image ({n}); got {len(ignore)}")
    imgs, tgts, igns = [], [], []
    for k, (img, tgt, iid) in enumerate(zip(images, targets, image_ids)):
        img = as_image_2d(img, name=f"images[{k}] (id {iid!r})")
        if not (np.issubdtype(img.dtype, np.number) or img.dtype == bool):
            raise TypeError(f"images[{k}] (id {iid!r}) must be numeric; got {describe(img)}")
        if np.issubdtype(img.dtype, np.floating) and not np.all(np.isfinite(img)):
            bad = img.size - int(np.count_nonzero(np.isfinite(img)))
            raise ValueError(f"images[{k}] (id {iid!r}) has {bad} NaN or infinite pixel(s); expected finite values")
        t = np.asarray(tgt)
        if t.shape != img.shape:
            raise ValueError(
                f"targets[{k}] (id {iid!r}) has shape {t.shape} but its image has shape {img.shape}: "
                "image and label sizes must match"
            )
        if t.dtype == bool:
            t = t.astype(np.float32)
        elif not np.issubdtype(t.dtype, np.number):
            raise TypeError(f"targets[{k}] (id {iid!r}) must be float in [0, 1] or bool; got {describe(t)}")
        t = t.astype(np.float32)
        if not np.all(np.isfinite(t)):
            raise ValueError(f"targets[{k}] (id {iid!r}) contains NaN or infinite values")
        tmin, tmax = float(t.min()), float(t.max())
        if tmin < 0 or tmax > 1:
            raise ValueError(
                f"targets[{k}] (id {iid!r}) must lie in [0, 1]; got values in [{tmin}, {tmax}]"
                + (" (a 0/255 mask? divide it by 255)" if tmax == 255 else "")
            )
        ig = None
        if ignore is not None and ignore[k] is not None:
            ig = as_binary(ignore[k], name=f"ignore[{k}] (id {iid!r})")
            if ig.shape != img.shape:
                raise ValueError(
                    f"ignore[{k}] (id {iid!r}) has shape {ig.shape} but its image has shape {img.shape}"
                )
            if ig.all():
                raise ValueError(f"ignore[{k}] (id {iid!r}) covers the whole image: nothing left to train on")
        imgs.append(img)
        tgts.append(t)
        igns.append(ig)
    fg = [float((t * (1.0 if ig is None else ~ig)).max()) > 0 for t, ig in zip(tgts, igns)]
    if not any(fg):
        raise ValueError(
            f"all {n} targets are empty (no foreground outside the ignore masks): nothing to learn; "
            "check that the labels were read correctly (0/255 masks, the right folder)"
        )
    empty = [iid for iid, f in zip(image_ids, fg) if not f]
    if empty:
        log.info("%d image(s) have empty targets (used as negatives): %s", len(empty), empty[:10])
    experts: dict[str, list[np.ndarray]] = {}
    for name, masks in (expert_masks or {}).items():
        if len(masks) != n:
            raise ValueError(f"expert_masks[{name!r}] must hold one mask per image ({n}); got {len(masks)}")
        lst = []
        for k, m in enumerate(masks):
            if m is None:  # this expert did not annotate this image (multi-lab, or missing raters)
                lst.append(None)
                continue
            arr = np.asarray(m)
            if arr.shape != imgs[k].shape:
                raise ValueError(
                    f"expert_masks[{name!r}][{k}] (id {image_ids[k]!r}) has shape {arr.shape}; its image has "
                    f"shape {imgs[k].shape}"
                )
            lst.append(arr > (0.5 if arr.dtype != bool else 0))
        experts[str(name)] = lst
    return imgs, tgts, igns, experts


def _is_ensemble_folder(out: Path) -> bool:
    """An ensemble folder made before the owner file existed (its ensemble.json or member checkpoints)."""
    return (out / "ensemble.json").is_file() or any((out / "checkpoints").glob("member_*.pt"))


def _fingerprint(
    config: TrainConfig, image_ids: Sequence[str], images, targets, ignore, splits, init_sha256: str | None = None,
    labs: dict[str, Any] | None = None,
) -> str:
    cfg = config.model_dump(mode="json", exclude={"device", "threads", "keep_checkpoints"})
    record = {"config": cfg, "ids": list(image_ids), "splits": splits}
    if init_sha256:
        record["init"] = init_sha256
    if labs:
        record["labs"] = labs
    h = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for arrs in (images, targets, ignore):
        for a in arrs:
            if a is None:
                h.update(b"none")
            else:
                h.update(str((a.shape, a.dtype.str)).encode())
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("fiji-consensus", "torch", "numpy", "scipy", "scikit-image", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            pass
    return out


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(name)


def _init_from(config: TrainConfig, init: Any) -> tuple[TrainConfig, list[dict[str, Any]], dict[str, Any]]:
    """Fine-tuning: the settings, start weights and provenance taken from a loaded ensemble ``init``."""
    from .ensemble import Ensemble

    if not isinstance(init, Ensemble):
        raise TypeError(
            "init must be a loaded Ensemble (fiji_consensus.nn.load_ensemble(folder) or "
            f"fiji_consensus.zoo.ensemble_from_package(zip)); got {type(init).__name__}"
        )
    arch = dict(init.metadata["architecture"]["config"])
    if int(arch.get("in_channels", 1)) != 1 or int(arch.get("out_channels", 1)) != 1:
        raise ValueError(f"init must hold single-channel U-Nets (in/out channels 1); got {arch}")
    if int(arch.get("convs_per_block", 2)) != 2:
        raise ValueError(f"init's U-Nets have convs_per_block={arch['convs_per_block']}; training supports 2")
    norm = init.normalization
    update = {
        "depth": int(arch["depth"]), "base_channels": int(arch["base_channels"]), "norm": arch.get("norm", "batch"),
        "norm_groups": int(arch.get("groups", config.norm_groups)), "upsample": arch.get("upsample", "transpose"),
        "background_radius": int(arch.get("background_radius", 0)),
        "low_percentile": float(norm["min_percentile"]), "high_percentile": float(norm["max_percentile"]),
    }
    changed = [f"{k}={v}" for k, v in update.items() if getattr(config, k) != v]
    if changed:
        log.info("fine-tuning from %s: its settings replace the given ones: %s", init.path, ", ".join(changed))
    states = [{n: t.detach().cpu().clone() for n, t in m.state_dict().items()} for m in init.members]
    h = hashlib.sha256()
    for st in states:
        for name in sorted(st):
            h.update(name.encode())
            h.update(np.ascontiguousarray(st[name].numpy()).tobytes())
    info = {
        "path": str(init.path) if init.path is not None else None,
        "members": list(init.indices),
        "weights_sha256": h.hexdigest(),
        "name": init.metadata.get("name"),
        "rule": "member k starts from initial member k mod K",
    }
    return config.model_copy(update=update), states, info


# --------------------------------------------------------------------------------------------- members


def _lr_at(frac: float, c: TrainConfig) -> float:
    frac = min(max(frac, 0.0), 1.0)
    if c.warmup_fraction > 0 and frac < c.warmup_fraction:
        return c.learning_rate * (frac / c.warmup_fraction + 1e-3)
    t = (frac - c.warmup_fraction) / max(1e-12, 1.0 - c.warmup_fraction)
    lo = c.min_lr_fraction
    return c.learning_rate * (lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t)))


def predict_full(net, image: np.ndarray, *, depth: int, device) -> np.ndarray:
    """Probability map of one normalised 2-D image in one piece (mirror-padded to a multiple of 2**depth)."""
    import torch

    xp, (y, x) = pad_to_multiple(image, 2**depth)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(xp, np.float32))[None, None].to(device)
        p = net(t)[0, 0, :y, :x].float().cpu().numpy()
    net.train(was_training)
    return p


class _ValImage:
    def __init__(
        self, iid: str, image: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None, min_size: int | None = None
    ):
        self.id, self.image, self.reference, self.ignore = iid, image, reference, ignore
        self.min_size = min_size  # the image's lab's MIN_PIXEL (multi-lab training); None = the config's


def _validate(net, val: list[_ValImage], c: TrainConfig, depth: int, device) -> dict[str, dict[str, float]]:
    from ..metrics import dice, roi_f1

    out = {}
    for v in val:
        pred = predict_full(net, v.image, depth=depth, device=device) > c.threshold
        out[v.id] = {
            "dice": float(dice(v.reference, pred, ignore=v.ignore)),
            "roi_f1": float(roi_f1(v.reference, pred, min_size=_min_size(v, c), ignore=v.ignore)),
        }
    return out


def _min_size(v: _ValImage, c: TrainConfig) -> int:
    return c.min_size if v.min_size is None else v.min_size


def _mean(scores: dict[str, dict[str, float]], key: str) -> float:
    vals = [s[key] for s in scores.values() if s[key] is not None and math.isfinite(s[key])]
    return float(np.mean(vals)) if vals else float("nan")


def _score(scores: dict[str, dict[str, float]], metric: str) -> list[float]:
    """Selection key: the metric's mean over images, then the other metric's as a tie-break (NaN = -inf)."""
    other = "dice" if metric == "roi_f1" else "roi_f1"
    key = [_mean(scores, metric), _mean(scores, other)]
    return [v if math.isfinite(v) else -math.inf for v in key]


_LOG_FIELDS = ["iteration", "loss", "lr", "val_dice", "val_roi_f1", "seconds", "patches_per_second"]


def _write_log(rows: list[dict[str, Any]], path: Path) -> None:
    from .ensemble import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in _LOG_FIELDS})
    write_text_atomic(buf.getvalue(), path)


def _train_member(
    k: int,
    *,
    seed: int,
    init_state: dict[str, Any] | None = None,
    train: list[TrainingImage],
    val: list[_ValImage],
    c: TrainConfig,
    arch: dict[str, Any],
    device,
    out: Path,
    fingerprint: str,
    resume: bool,
    budget_s: float | None,
    progress: bool,
    callback: Callable[..., Any] | None,
) -> dict[str, Any]:
    import torch

    from .ensemble import load_state_dict, torch_save_atomic
    from .unet import UNet

    ck_path = out / "checkpoints" / f"member_{k}.pt"
    log_path = out / "logs" / f"member_{k}.csv"
    torch.manual_seed(seed)
    net = UNet.from_config(arch)
    if init_state is not None:
        net.load_state_dict(init_state)
    net = net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
    aug = AugmentConfig(**c.augment.model_dump())
    sampler = PatchSampler(train, patch_size=c.patch_size, seed=seed, augment=aug)
    state: dict[str, Any] = dict(
        iteration=0, elapsed=0.0, train_seconds=0.0, loss_sum=0.0, loss_n=0, best_score=None,
        best_iteration=0, best_scores={}, rows=[], last_val_iteration=-1, val_seconds=0.0,
    )
    best_state: dict[str, Any] | None = None

    ck = load_state_dict(ck_path, map_location="cpu") if resume and ck_path.is_file() else None
    if ck is not None and ck.get("fingerprint") != fingerprint:  # an unfinished run of other settings
        log.warning("member %d: %s belongs to a run with other data or settings; starting over", k, ck_path)
        ck = None
    if ck is not None:
        meta = json.loads(ck["meta"])
        if meta.get("finished"):
            log.info("member %d already trained; skipping", k)
            return meta["result"]
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sampler.set_state(ck["sampler"])
        torch.set_rng_state(ck["torch_rng"])
        state.update(meta["state"])
        best_state = ck.get("best_model")
        log.info("member %d resumes at iteration %d", k, state["iteration"])

    def save_checkpoint(finished: bool = False, result: dict | None = None) -> None:
        meta = {"state": state, "finished": finished, "result": result}
        obj: dict[str, Any] = {"fingerprint": fingerprint, "meta": json.dumps(meta)}
        if not finished:
            obj.update(
                model=net.state_dict(), optimizer=opt.state_dict(), sampler=sampler.get_state(),
                torch_rng=torch.get_rng_state(),
            )
            if best_state is not None:
                obj["best_model"] = best_state
        torch_save_atomic(obj, ck_path)

    def validate_now() -> None:
        nonlocal best_state
        tv = time.perf_counter()
        scores = _validate(net, val, c, c.depth, device)
        state["val_seconds"] = time.perf_counter() - tv
        score = _score(scores, c.selection_metric)
        it = state["iteration"]
        # ties go to the later (longer-trained) checkpoint
        if state["best_score"] is None or score >= state["best_score"]:
            state.update(best_score=score, best_iteration=it, best_scores=scores)
            best_state = copy.deepcopy({n: t.detach().cpu() for n, t in net.state_dict().items()})
        ts = state["train_seconds"]
        state["rows"].append(
            dict(
                iteration=it,
                loss=state["loss_sum"] / state["loss_n"] if state["loss_n"] else float("nan"),
                lr=opt.param_groups[0]["lr"],
                val_dice=_mean(scores, "dice"),
                val_roi_f1=_mean(scores, "roi_f1"),
                seconds=round(state["elapsed"], 3),
                patches_per_second=it * c.batch_size / ts if ts > 0 else float("nan"),
            )
        )
        state["loss_sum"], state["loss_n"], state["last_val_iteration"] = 0.0, 0, it
        _write_log(state["rows"], log_path)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=c.iterations, initial=state["iteration"], desc=f"member {k + 1}", unit="it", leave=True)
    net.train()
    t_last = time.perf_counter()
    try:
        if budget_s is not None and state["last_val_iteration"] < 0 and val:
            # with a time budget, estimate what the final validation will cost (one image predicted,
            # scaled by the pixel count) so that the member stops in time for it
            tv = time.perf_counter()
            predict_full(net, val[0].image, depth=c.depth, device=device)
            per_pixel = (time.perf_counter() - tv) / val[0].image.size
            state["val_seconds"] = 1.1 * per_pixel * sum(v.image.size for v in val)
            now = time.perf_counter()
            state["elapsed"] += now - t_last
            t_last = now
        while True:
            it = state["iteration"]
            if c.iterations is not None and it >= c.iterations:
                break
            if budget_s is not None and it > 0 and state["elapsed"] + state["val_seconds"] >= budget_s:
                break
            # the learning-rate schedule follows the iterations when they are the budget (reproducible: the
            # time budget is then only a safety stop), else the elapsed time
            if c.iterations is not None:
                frac = it / c.iterations
            else:
                frac = state["elapsed"] / budget_s if budget_s else 0.0
            lr = _lr_at(frac, c)
            for g in opt.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            b = sampler.sample(c.batch_size)
            x, y, v, w = (torch.from_numpy(b[n]).to(device) for n in ("image", "target", "valid", "weight"))
            logits = net.forward_logits(x)
            loss = masked_bce_dice_loss(
                logits, y, v, w if c.border_weight > 0 else None, bce_weight=c.bce_weight, dice_weight=c.dice_weight
            )
            lv = float(loss.detach())
            if not math.isfinite(lv):  # stop before the step spoils the weights; nothing is marked finished
                raise FloatingPointError(
                    f"member {k}: the training loss became {lv} at iteration {it + 1}; training stopped (no "
                    f"member_{k}.pt written). Try a smaller --learning-rate; a rerun resumes from the last checkpoint"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            now = time.perf_counter()
            state["train_seconds"] += now - t0
            state["iteration"] = it = it + 1
            state["loss_sum"] += lv
            state["loss_n"] += 1
            if it % c.validate_every == 0:
                validate_now()
            now = time.perf_counter()
            state["elapsed"] += now - t_last
            t_last = now
            if it % c.checkpoint_every == 0:
                save_checkpoint()
            if bar is not None:
                post = {"loss": f"{lv:.4f}"}
                if state["best_score"] is not None:
                    post[c.selection_metric] = f"{state['rows'][-1]['val_' + c.selection_metric]:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
            if callback is not None:
                callback(member=k, iteration=it, loss=lv)
        if state["last_val_iteration"] != state["iteration"]:
            validate_now()
            state["elapsed"] += time.perf_counter() - t_last
    finally:
        if bar is not None:
            bar.close()
    if best_state is None:  # pragma: no cover - validate_now always sets it
        best_state = net.state_dict()
    torch_save_atomic({n: t.detach().cpu().contiguous() for n, t in best_state.items()}, out / f"member_{k}.pt")
    result = dict(
        index=k,
        seed=seed,
        iterations=state["iteration"],
        best_iteration=state["best_iteration"],
        seconds=state["elapsed"],
        train_seconds=state["train_seconds"],
        patches_per_second=state["iteration"] * c.batch_size / state["train_seconds"] if state["train_seconds"] else None,
        val_dice=_mean(state["best_scores"], "dice"),
        val_roi_f1=_mean(state["best_scores"], "roi_f1"),
        val_per_image=state["best_scores"],
        log=str(log_path.relative_to(out)),
    )
    save_checkpoint(finished=True, result=result)
    return result


# --------------------------------------------------------------------------------------------- ensemble


@dataclass
class TrainingPlan:
    """Everything a member of one training run needs, prepared once by :func:`train_ensemble`.

    Picklable, so that members can be trained elsewhere (:func:`train_member` on a Dask worker).
    """

    config: TrainConfig
    out: Path
    splits: list[tuple[list[str], list[str]]]
    seeds: list[int]
    fingerprint: str
    resume: bool
    arch: dict[str, Any]
    prepared: dict[str, TrainingImage] = field(repr=False)
    val_images: dict[str, _ValImage] = field(repr=False)
    init_states: list[dict[str, Any]] | None = field(default=None, repr=False)  # fine-tuning: start weights


def train_member(
    plan: TrainingPlan,
    index: int,
    *,
    progress: bool = False,
    callback: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the finished) member ``index`` of ``plan``; returns its result.

    Writes ``member_<index>.pt``, its log and checkpoints into ``plan.out``. Member ``k`` depends only on
    the plan and ``k`` (its split and seed), so members can be trained in any order or in parallel, in
    separate processes, with identical weights on CPUs (given the same number of torch threads). The
    caller sets torch's threads.
    """
    c = plan.config
    k = int(index)
    if not 0 <= k < len(plan.splits):
        raise ValueError(f"index must be in 0..{len(plan.splits) - 1}; got {index}")
    train_ids, val_ids = plan.splits[k]
    budget = None
    if c.max_minutes is not None:
        budget = c.max_minutes * 60.0 / c.members
    log.info("member %d/%d: %d training, %d validation images, seed %d", k + 1, c.members,
             len(train_ids), len(val_ids), plan.seeds[k])
    init_state = plan.init_states[k % len(plan.init_states)] if plan.init_states else None
    res = _train_member(
        k, seed=plan.seeds[k], init_state=init_state, train=[plan.prepared[i] for i in train_ids],
        val=[plan.val_images[i] for i in val_ids], c=c, arch=plan.arch, device=_resolve_device(c.device),
        out=plan.out, fingerprint=plan.fingerprint, resume=plan.resume, budget_s=budget, progress=progress,
        callback=callback,
    )
    res["train_ids"], res["val_ids"] = list(train_ids), list(val_ids)
    return res


def train_ensemble(
    images: list[np.ndarray],
    targets: list[np.ndarray],
    out_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    image_ids: list[str],
    ignore: list[np.ndarray | None] | None = None,
    groups: dict[str, str] | None = None,
    expert_masks: dict[str, list[np.ndarray]] | None = None,
    provenance: dict | None = None,
    progress: bool = False,
    resume: bool = True,
    callback: Callable[..., Any] | None = None,
    member_runner: Callable[[TrainingPlan, list[int]], Sequence[dict[str, Any]]] | None = None,
    init: Any = None,
    labs: dict[str, str] | None = None,
    min_sizes: dict[str, int] | None = None,
) -> dict:
    """Train a U-Net ensemble on (consensus) targets and write it to ``out_dir``.

    Parameters
    ----------
    images : list of (Y, X) arrays
        Training images, any numeric dtype; normalised per image by percentiles.
    targets : list of (Y, X) float arrays in [0, 1]
        Hard consensus masks or soft labels (expert fraction, STAPLE posterior).
    out_dir : path-like
        The ensemble folder (created). See :mod:`fiji_consensus.nn.ensemble` for the layout.
    config : TrainConfig
        All training settings.
    image_ids : list of str
        One unique id per image (used for splits, groups and provenance).
    ignore : list of (Y, X) bool arrays or None, optional
        Pixels left out of sampling, loss and validation scores.
    groups : dict, optional
        Image id -> group, for grouped k-fold.
    expert_masks : dict, optional
        Expert name -> list of (Y, X) masks aligned with ``images``; needed for ``paper_selection`` and
        recorded as expert scores of every validation image.
    provenance : dict, optional
        Extra provenance stored in ``ensemble.json`` (experts, consensus method, source folders, ...).
    progress : bool
        Show a tqdm bar per member (loss and validation score).
    resume : bool
        Continue from the checkpoints in ``out_dir`` (or return at once if the same ensemble is complete
        there); ``False`` starts over and replaces this function's files in ``out_dir``.
    callback : callable, optional
        Called as ``callback(member=k, iteration=i, loss=x)`` after every iteration (and after that
        iteration's checkpoint); an exception raised there interrupts training (resumable).
    member_runner : callable, optional
        ``member_runner(plan, indices)`` trains the members ``indices`` of a :class:`TrainingPlan` and
        returns their results in that order, each from :func:`train_member` (default: one after the
        other in this process; :func:`fiji_consensus.distributed.train_members` trains them in parallel on
        Dask, giving the same members bit for bit on CPUs with the same ``threads``).
    init : Ensemble, optional
        Fine-tuning: a loaded ensemble (:func:`~fiji_consensus.nn.ensemble.load_ensemble`, or
        :func:`fiji_consensus.zoo.ensemble_from_package` for a package); member ``k`` starts from its member
        ``k mod K``, and its architecture and normalisation replace those of ``config``. Use a smaller
        ``learning_rate`` and few iterations, and ``split="all"`` when there are only a few images.
    labs : dict, optional
        Multi-lab training: image id -> lab name. With ``config.balance_labs`` every lab is drawn equally
        often (each image with weight ``1 / images of its lab``); the labs are recorded in ``ensemble.json``.
        ``split="group_kfold"`` with ``groups`` = the labs holds out whole labs.
    min_sizes : dict, optional
        Image id -> MIN_PIXEL for its validation ROI-F1 (each lab its own); default ``config.min_size``.

    Returns
    -------
    dict
        Summary: ``path``, ``ensemble_json``, ``members`` (per member: seed, split, iterations, best
        iteration, validation scores, selected), ``selected``, ``halo``, ``seconds``,
        ``patches_per_second``.

    Examples
    --------
    >>> cfg = TrainConfig(members=2, iterations=50, patch_size=64, batch_size=4, depth=2)  # doctest: +SKIP
    >>> summary = train_ensemble(imgs, masks, "models/demo", cfg, image_ids=ids)          # doctest: +SKIP
    """
    import torch

    from .ensemble import ENSEMBLE_JSON, save_ensemble
    from .unet import UNet

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    init_states, init_info = None, None
    if init is not None:
        config, init_states, init_info = _init_from(config, init)
    image_ids = [str(i) for i in image_ids]
    imgs, tgts, igns, experts = _check_inputs(images, targets, image_ids, ignore, expert_masks)
    if config.paper_selection and not experts:
        raise ValueError("paper_selection=True needs expert_masks (the lowest expert's ROI-F1 per image)")
    splits = make_splits(
        image_ids, members=config.members, split=config.split, folds=config.folds, groups=groups, seed=config.seed
    )
    split_kind = config.split if config.split != "auto" else ("group_kfold" if groups else "kfold")
    seeds = member_seeds(config.seed, config.members)
    if labs:
        missing = [i for i in image_ids if i not in labs]
        if missing:
            raise ValueError(f"labs has no entry for {len(missing)} image(s), e.g. {missing[:3]}")
        labs = {i: str(labs[i]) for i in image_ids}
    else:
        labs = None
    if min_sizes is not None:
        missing = [i for i in image_ids if i not in min_sizes]
        if missing:
            raise ValueError(f"min_sizes has no entry for {len(missing)} image(s), e.g. {missing[:3]}")
    lab_counts = {lab: sum(1 for v in labs.values() if v == lab) for lab in sorted(set(labs.values()))} if labs else {}
    fp = _fingerprint(
        config, image_ids, imgs, tgts, igns, splits, init_info["weights_sha256"] if init_info else None,
        labs={"labs": labs, "min_sizes": min_sizes} if (labs or min_sizes) else None,
    )
    out = claim_folder(out_dir, "train", legacy=_is_ensemble_folder)  # never a folder train did not make
    remove_temporary(out)  # what killed writers left (this run's members have not started)
    ej = out / ENSEMBLE_JSON
    if ej.is_file():
        try:
            old = json.loads(ej.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        same = old.get("provenance", {}).get("fingerprint") == fp
        if resume and same:
            log.info("%s already holds this ensemble; nothing to do", out)
            return _summary(old, out)
        if resume:
            raise FileExistsError(
                f"{out} already holds an ensemble trained with other data or settings; choose another "
                "folder or start over there with --overwrite (Python: resume=False)"
            )
    if not resume:
        for pattern in ("checkpoints/member_*.pt", "logs/member_*.csv", "member_*.pt", ENSEMBLE_JSON):
            for f in out.glob(pattern):
                f.unlink()

    arch = dict(
        in_channels=1, out_channels=1, depth=config.depth, base_channels=config.base_channels, norm=config.norm,
        groups=config.norm_groups, upsample=config.upsample, convs_per_block=2,
    )
    if config.background_radius:
        arch["background_radius"] = config.background_radius
    probe = UNet.from_config(arch)
    n_params = int(sum(p.numel() for p in probe.parameters()))
    device = _resolve_device(config.device)
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    t_start = time.perf_counter()
    try:
        # per-image preparation (deterministic)
        norm_values: dict[str, list[float]] = {}
        prepared: dict[str, TrainingImage] = {}
        val_images: dict[str, _ValImage] = {}
        for iid, img, t, ig in zip(image_ids, imgs, tgts, igns):
            x, (lo, hi) = percentile_normalize(img, low=config.low_percentile, high=config.high_percentile)
            norm_values[iid] = [lo, hi]
            valid = np.ones(img.shape, np.float32) if ig is None else (~ig).astype(np.float32)
            tv = t * valid
            weight = (
                border_weights(tv, w0=config.border_weight, sigma=config.border_sigma)
                if config.border_weight > 0
                else None
            )
            prepared[iid] = TrainingImage.prepare(
                iid, x, tv, valid, weight=weight,
                foreground=config.foreground_sampling, boundary=config.boundary_sampling,
            )
            if labs and config.balance_labs:
                prepared[iid].sample_weight = 1.0 / lab_counts[labs[iid]]
            val_images[iid] = _ValImage(iid, x, t > config.threshold, ig, None if min_sizes is None else min_sizes[iid])
        from ..domain import fit_reference, image_stats

        pct = (config.low_percentile, config.high_percentile)
        domain_stats = {iid: image_stats(img, t > 0.5, percentiles=pct) for iid, img, t in zip(image_ids, imgs, tgts)}
        expert_f1: dict[str, dict[str, float]] = {}
        if experts:
            from ..metrics import roi_f1

            for j, iid in enumerate(image_ids):
                expert_f1[iid] = {
                    name: float(roi_f1(val_images[iid].reference, masks[j], min_size=_min_size(val_images[iid], config),
                                       ignore=igns[j]))
                    for name, masks in experts.items()
                    if masks[j] is not None
                }
        for k, (train_ids, _) in enumerate(splits):
            if not any(float(prepared[i].target.max()) > 0 for i in train_ids):
                raise ValueError(f"member {k}: its training images {sorted(set(train_ids))[:8]} hold no foreground")
        plan = TrainingPlan(
            config=config, out=out, splits=[(list(t), list(v)) for t, v in splits], seeds=list(seeds),
            fingerprint=fp, resume=resume, arch=arch, prepared=prepared, val_images=val_images,
            init_states=init_states,
        )
        indices = list(range(config.members))
        if member_runner is None:
            results = [train_member(plan, k, progress=progress, callback=callback) for k in indices]
        else:
            results = [dict(r) for r in member_runner(plan, indices)]
            if [r.get("index") for r in results] != indices:
                raise RuntimeError(
                    f"member_runner must return one result per member in order {indices}; got "
                    f"{[r.get('index') for r in results]}"
                )
        # selection (paper rule)
        selection: dict[str, Any] = {"rule": "paper" if config.paper_selection else "none"}
        for res in results:
            res["selected"] = True
            if experts:
                res["lowest_expert_roi_f1"] = {
                    i: min(expert_f1[i].values()) if expert_f1[i] else float("nan") for i in res["val_ids"]
                }
            if config.paper_selection:
                ok = True
                for i in res["val_ids"]:
                    mine = res["val_per_image"][i]["roi_f1"]
                    low = res["lowest_expert_roi_f1"][i]
                    if math.isfinite(mine) and math.isfinite(low) and mine < low:
                        ok = False
                    elif not math.isfinite(mine) and math.isfinite(low):
                        ok = False
                res["selected"] = ok
        if config.paper_selection and not any(r["selected"] for r in results):
            log.warning("no member passed the paper's selection rule; keeping all %d members", len(results))
            for r in results:
                r["selected"] = True
            selection["fallback"] = "no member passed; all kept"
        selection["selected"] = [r["index"] for r in results if r["selected"]]
        seconds = time.perf_counter() - t_start
        tr = sum(r["train_seconds"] for r in results)
        pps = sum(r["iterations"] for r in results) * config.batch_size / tr if tr > 0 else None
        meta = {
            "architecture": {
                "name": "UNet",
                "config": arch,
                "parameters": n_params,
                "receptive_field_radius": probe.receptive_field_radius,
                "halo": probe.halo,
                "tile_multiple": 2**config.depth,
                "input": "one channel (batch, 1, y, x), float32, per-image percentile-normalised",
                "output": "foreground probability (sigmoid inside the network), (batch, 1, y, x)",
            },
            "normalization": {
                "method": "scale_range",
                "mode": "per_sample",
                "min_percentile": config.low_percentile,
                "max_percentile": config.high_percentile,
                "eps": 1e-6,
                "formula": "(x - percentile(x, min)) / (percentile(x, max) - percentile(x, min) + eps)",
                "training_values": norm_values,
            },
            "threshold": config.threshold,
            "domain": {
                **fit_reference(list(domain_stats.values())),
                "definition": "fiji_consensus.domain: statistics of the training images (their targets > 0.5 as "
                "the foreground) on the model's normalised scale; an image outside this range is out of domain",
            },
            "members": results,
            "selection": selection,
            "training": config.model_dump(mode="json"),
            "provenance": {
                **(provenance or {}),
                "image_ids": image_ids,
                "split": split_kind,
                "groups": {i: str(groups[i]) for i in image_ids} if groups else None,
                "splits": [{"train": r["train_ids"], "validation": r["val_ids"]} for r in results],
                "seeds": seeds,
                "init": init_info,
                "labs": (
                    {lab: sorted(i for i in image_ids if labs[i] == lab) for lab in lab_counts} if labs else None
                ),
                "balance_labs": bool(labs and config.balance_labs),
                "min_sizes": min_sizes,
                "experts": sorted(experts) if experts else (provenance or {}).get("experts"),
                "expert_roi_f1": expert_f1 or None,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "seconds": seconds,
                "patches_per_second": pps,
                "packages": _package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "fingerprint": fp,
            },
        }
        path = save_ensemble(out, {}, meta)
        if not config.keep_checkpoints:
            for f in (out / "checkpoints").glob("member_*.pt"):
                f.unlink()
            try:
                (out / "checkpoints").rmdir()
            except OSError:
                pass
        remove_temporary(out)  # e.g. checkpoints half-written by a killed Dask worker
        final = json.loads(path.read_text(encoding="utf-8"))
        return _summary(final, out)
    finally:
        torch.set_num_threads(old_threads)


def _summary(meta: dict[str, Any], out: Path) -> dict[str, Any]:
    return {
        "path": str(out),
        "ensemble_json": str(out / "ensemble.json"),
        "halo": meta["architecture"]["halo"],
        "members": [
            {
                k: m.get(k)
                for k in (
                    "index", "seed", "file", "selected", "iterations", "best_iteration", "val_dice", "val_roi_f1",
                    "train_ids", "val_ids", "seconds", "patches_per_second", "log",
                )
            }
            for m in meta["members"]
        ],
        "selected": meta["selection"]["selected"],
        "seconds": meta["provenance"].get("seconds"),
        "patches_per_second": meta["provenance"].get("patches_per_second"),
    }
