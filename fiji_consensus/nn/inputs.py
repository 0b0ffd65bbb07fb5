"""Training inputs, checked and fixed before any member trains: the splits, the data checks, the run's
fingerprint (what a resumed run must match) and the start of a fine-tuning run."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import as_binary, as_image_2d
from ..config import TrainConfig
from .data import describe

__all__ = ["make_splits", "member_seeds"]

log = logging.getLogger("fiji_consensus.nn.train")


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


#: TrainConfig fields added after runs existed, with the default at which the fingerprint leaves them out.
_LATER_FIELDS: dict[str, Any] = {"train_layers": "all", "lab_weights": {}}
#: The same for the fields of ``augment``.
_LATER_AUGMENT: dict[str, Any] = {"background_renormalize": False}


def _fingerprint(
    config: TrainConfig, image_ids: Sequence[str], images, targets, ignore, splits, init_sha256: str | None = None,
    labs: dict[str, Any] | None = None,
) -> str:
    cfg = config.model_dump(mode="json", exclude={"device", "threads", "keep_checkpoints"})
    # fields added later are left out at their default, so that checkpoints written before them stay resumable
    for name, default in _LATER_FIELDS.items():
        if cfg.get(name) == default:
            del cfg[name]
    for name, default in _LATER_AUGMENT.items():
        if cfg["augment"].get(name) == default:
            del cfg["augment"][name]
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
