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
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AugmentOptions, TrainConfig
from ._run import (  # noqa: F401  (_summary kept importable here)
    _architecture,
    _check_run,
    _claim_output,
    _ensemble_metadata,
    _prepare_images,
    _Run,
    _run_record,
    _summary,
    _tidy,
)
from .data import AugmentConfig, PatchSampler, TrainingImage
from .inputs import _is_ensemble_folder, make_splits, member_seeds  # noqa: F401  (the train job uses the first)
from .selection import (  # noqa: F401  (predict_full is public)
    _expert_roi_f1,
    _mean,
    _score,
    _select_members,
    _validate,
    _ValImage,
    predict_full,
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


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return torch.device(name)


# --------------------------------------------------------------------------------------------- members


def _lr_at(frac: float, c: TrainConfig) -> float:
    frac = min(max(frac, 0.0), 1.0)
    if c.warmup_fraction > 0 and frac < c.warmup_fraction:
        return c.learning_rate * (frac / c.warmup_fraction + 1e-3)
    t = (frac - c.warmup_fraction) / max(1e-12, 1.0 - c.warmup_fraction)
    lo = c.min_lr_fraction
    return c.learning_rate * (lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t)))


_LOG_FIELDS = ["iteration", "loss", "lr", "val_dice", "val_roi_f1", "seconds", "patches_per_second"]


def _write_log(rows: list[dict[str, Any]], path: Path) -> None:
    from .ensemble import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in _LOG_FIELDS})
    write_text_atomic(buf.getvalue(), path)


def trainable_parameters(net, layers: str) -> list:
    """The parameters that training updates. ``"decoder"`` freezes the encoder (the down blocks and the bottom
    block): no gradients, so no backward pass through it, and its batch-norm statistics are kept (momentum 0);
    ``"head"`` freezes everything but the last 1x1 convolution; ``"all"`` freezes nothing."""
    import torch

    if layers == "all":
        return list(net.parameters())
    if layers == "decoder":
        frozen = [net.down, net.bottom]
    elif layers == "head":
        frozen = [m for name, m in net.named_children() if name != "head"]
    else:
        raise ValueError(f"train_layers must be 'all', 'decoder' or 'head'; got {layers!r}")
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0  # running statistics stay those of the initial weights
    return [p for p in net.parameters() if p.requires_grad]


class _MemberRun:
    """One member's training: the network, optimiser, sampler and counters, and the steps on them.

    ``state`` holds every counter that a checkpoint stores (iteration, elapsed and training seconds, the
    running loss, the best score and its iteration, the log rows); ``best_state`` the best weights so far.
    """

    def __init__(
        self, k: int, *, seed: int, init_state: dict[str, Any] | None, train: list[TrainingImage],
        val: list[_ValImage], c: TrainConfig, arch: dict[str, Any], device, out: Path, fingerprint: str,
    ) -> None:
        import torch

        from .unet import UNet

        self.k, self.seed, self.val, self.c, self.device, self.out = k, seed, val, c, device, out
        self.fingerprint = fingerprint
        self.ck_path = out / "checkpoints" / f"member_{k}.pt"
        self.log_path = out / "logs" / f"member_{k}.csv"
        torch.manual_seed(seed)
        net = UNet.from_config(arch)
        if init_state is not None:
            net.load_state_dict(init_state)
        self.net = net.to(device)
        params = trainable_parameters(self.net, c.train_layers)
        self.opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        aug = AugmentConfig(**c.augment.model_dump())
        self.sampler = PatchSampler(train, patch_size=c.patch_size, seed=seed, augment=aug)
        self.state: dict[str, Any] = dict(
            iteration=0, elapsed=0.0, train_seconds=0.0, loss_sum=0.0, loss_n=0, best_score=None,
            best_iteration=0, best_scores={}, rows=[], last_val_iteration=-1, val_seconds=0.0,
        )
        self.best_state: dict[str, Any] | None = None
        self.t_last = time.perf_counter()

    def resume(self) -> dict[str, Any] | None:
        """Continue from this member's checkpoint of the same run; returns the result if it is finished."""
        import torch

        from .ensemble import load_state_dict

        k, ck_path = self.k, self.ck_path
        ck = load_state_dict(ck_path, map_location="cpu") if ck_path.is_file() else None
        if ck is not None and ck.get("fingerprint") != self.fingerprint:  # an unfinished run of other settings
            log.warning("member %d: %s belongs to a run with other data or settings; starting over", k, ck_path)
            ck = None
        if ck is None:
            return None
        meta = json.loads(ck["meta"])
        if meta.get("finished"):
            log.info("member %d already trained; skipping", k)
            return meta["result"]
        self.net.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sampler.set_state(ck["sampler"])
        torch.set_rng_state(ck["torch_rng"])
        self.state.update(meta["state"])
        self.best_state = ck.get("best_model")
        log.info("member %d resumes at iteration %d", k, self.state["iteration"])
        return None

    def save_checkpoint(self, finished: bool = False, result: dict | None = None) -> None:
        """The checkpoint (atomic): counters, and unless finished the weights, optimiser, sampler and RNG."""
        import torch

        from .ensemble import torch_save_atomic

        meta = {"state": self.state, "finished": finished, "result": result}
        obj: dict[str, Any] = {"fingerprint": self.fingerprint, "meta": json.dumps(meta)}
        if not finished:
            obj.update(
                model=self.net.state_dict(), optimizer=self.opt.state_dict(), sampler=self.sampler.get_state(),
                torch_rng=torch.get_rng_state(),
            )
            if self.best_state is not None:
                obj["best_model"] = self.best_state
        torch_save_atomic(obj, self.ck_path)

    def validate_now(self) -> None:
        """Score the held-out images, keep the best weights (ties: the later), add a log row."""
        c, state = self.c, self.state
        tv = time.perf_counter()
        scores = _validate(self.net, self.val, c, c.depth, self.device)
        state["val_seconds"] = time.perf_counter() - tv
        score = _score(scores, c.selection_metric)
        it = state["iteration"]
        # ties go to the later (longer-trained) checkpoint
        if state["best_score"] is None or score >= state["best_score"]:
            state.update(best_score=score, best_iteration=it, best_scores=scores)
            self.best_state = copy.deepcopy({n: t.detach().cpu() for n, t in self.net.state_dict().items()})
        ts = state["train_seconds"]
        state["rows"].append(
            dict(
                iteration=it,
                loss=state["loss_sum"] / state["loss_n"] if state["loss_n"] else float("nan"),
                lr=self.opt.param_groups[0]["lr"],
                val_dice=_mean(scores, "dice"),
                val_roi_f1=_mean(scores, "roi_f1"),
                seconds=round(state["elapsed"], 3),
                patches_per_second=it * c.batch_size / ts if ts > 0 else float("nan"),
            )
        )
        state["loss_sum"], state["loss_n"], state["last_val_iteration"] = 0.0, 0, it
        _write_log(state["rows"], self.log_path)

    def _tick(self) -> None:
        """Add the wall time since the last tick to ``elapsed``."""
        now = time.perf_counter()
        self.state["elapsed"] += now - self.t_last
        self.t_last = now

    def estimate_validation_cost(self) -> None:
        """With a time budget: what the final validation will cost (one image predicted, scaled by the pixel
        count), so that the member stops in time for it."""
        tv = time.perf_counter()
        predict_full(self.net, self.val[0].image, depth=self.c.depth, device=self.device)
        per_pixel = (time.perf_counter() - tv) / self.val[0].image.size
        self.state["val_seconds"] = 1.1 * per_pixel * sum(v.image.size for v in self.val)
        self._tick()

    def done(self, budget_s: float | None) -> bool:
        """The iteration budget reached, or the time budget (keeping time for the final validation)."""
        c, it = self.c, self.state["iteration"]
        if c.iterations is not None and it >= c.iterations:
            return True
        return budget_s is not None and it > 0 and self.state["elapsed"] + self.state["val_seconds"] >= budget_s

    def step(self, budget_s: float | None) -> float:
        """One optimisation step at the scheduled learning rate; returns its loss."""
        import torch

        c, state, it = self.c, self.state, self.state["iteration"]
        # the learning-rate schedule follows the iterations when they are the budget (reproducible: the
        # time budget is then only a safety stop), else the elapsed time
        if c.iterations is not None:
            frac = it / c.iterations
        else:
            frac = state["elapsed"] / budget_s if budget_s else 0.0
        lr = _lr_at(frac, c)
        for g in self.opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        b = self.sampler.sample(c.batch_size)
        x, y, v, w = (torch.from_numpy(b[n]).to(self.device) for n in ("image", "target", "valid", "weight"))
        logits = self.net.forward_logits(x)
        loss = masked_bce_dice_loss(
            logits, y, v, w if c.border_weight > 0 else None, bce_weight=c.bce_weight, dice_weight=c.dice_weight
        )
        lv = float(loss.detach())
        if not math.isfinite(lv):  # stop before the step spoils the weights; nothing is marked finished
            raise FloatingPointError(
                f"member {self.k}: the training loss became {lv} at iteration {it + 1}; training stopped (no "
                f"member_{self.k}.pt written). Try a smaller --learning-rate; a rerun resumes from the last checkpoint"
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        state["train_seconds"] += time.perf_counter() - t0
        state["iteration"] = it + 1
        state["loss_sum"] += lv
        state["loss_n"] += 1
        return lv

    def loop(self, budget_s: float | None, progress: bool, callback: Callable[..., Any] | None) -> None:
        """Train until the budget: validate every ``validate_every``, checkpoint every ``checkpoint_every``
        iterations, and validate the last iteration."""
        c, state = self.c, self.state
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=c.iterations, initial=state["iteration"], desc=f"member {self.k + 1}", unit="it",
                       leave=True)
        self.net.train()
        self.t_last = time.perf_counter()
        try:
            if budget_s is not None and state["last_val_iteration"] < 0 and self.val:
                self.estimate_validation_cost()
            while not self.done(budget_s):
                lv = self.step(budget_s)
                it = state["iteration"]
                if it % c.validate_every == 0:
                    self.validate_now()
                self._tick()
                if it % c.checkpoint_every == 0:
                    self.save_checkpoint()
                if bar is not None:
                    post = {"loss": f"{lv:.4f}"}
                    if state["best_score"] is not None:
                        post[c.selection_metric] = f"{state['rows'][-1]['val_' + c.selection_metric]:.3f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if callback is not None:
                    callback(member=self.k, iteration=it, loss=lv)
            if state["last_val_iteration"] != state["iteration"]:
                self.validate_now()
                state["elapsed"] += time.perf_counter() - self.t_last
        finally:
            if bar is not None:
                bar.close()

    def finish(self) -> dict[str, Any]:
        """Write the best weights as ``member_<k>.pt``, mark the checkpoint finished; returns the result."""
        from .ensemble import torch_save_atomic

        c, state = self.c, self.state
        best_state = self.best_state
        if best_state is None:  # pragma: no cover - validate_now always sets it
            best_state = self.net.state_dict()
        torch_save_atomic({n: t.detach().cpu().contiguous() for n, t in best_state.items()},
                          self.out / f"member_{self.k}.pt")
        result = dict(
            index=self.k,
            seed=self.seed,
            iterations=state["iteration"],
            best_iteration=state["best_iteration"],
            seconds=state["elapsed"],
            train_seconds=state["train_seconds"],
            patches_per_second=(
                state["iteration"] * c.batch_size / state["train_seconds"] if state["train_seconds"] else None
            ),
            val_dice=_mean(state["best_scores"], "dice"),
            val_roi_f1=_mean(state["best_scores"], "roi_f1"),
            val_per_image=state["best_scores"],
            log=str(self.log_path.relative_to(self.out)),
        )
        self.save_checkpoint(finished=True, result=result)
        return result


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
    """Train (or resume, or return the finished) member ``k``: setup, resume, the loop, the best weights."""
    run = _MemberRun(k, seed=seed, init_state=init_state, train=train, val=val, c=c, arch=arch, device=device,
                     out=out, fingerprint=fingerprint)
    if resume:
        result = run.resume()
        if result is not None:
            return result
    run.loop(budget_s, progress, callback)
    return run.finish()


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

    run = _check_run(images, targets, config, image_ids=image_ids, ignore=ignore, groups=groups,
                     expert_masks=expert_masks, init=init, labs=labs, min_sizes=min_sizes)
    out, done = _claim_output(out_dir, run.fingerprint, resume)
    if done is not None:
        return done
    arch, probe = _architecture(run.config)  # the probe network: its parameter count, halo
    device = _resolve_device(run.config.device)
    old_threads = torch.get_num_threads()
    if run.config.threads:
        torch.set_num_threads(run.config.threads)
    try:
        return _train_and_write(
            run, out, arch, probe, device, resume=resume, provenance=provenance, groups=groups,
            member_runner=member_runner, progress=progress, callback=callback,
        )
    finally:
        torch.set_num_threads(old_threads)


def _train_and_write(
    run: _Run, out: Path, arch: dict[str, Any], probe: Any, device, *, resume: bool, provenance: dict | None,
    groups: dict[str, str] | None, member_runner: Callable[[TrainingPlan, list[int]], Sequence[dict[str, Any]]] | None,
    progress: bool, callback: Callable[..., Any] | None,
) -> dict[str, Any]:
    """The images prepared, every member trained, the members selected, ``ensemble.json`` written."""
    from .ensemble import save_ensemble

    config = run.config
    t_start = time.perf_counter()
    prep = _prepare_images(run)
    expert_f1 = _expert_roi_f1(run.image_ids, prep.val_images, run.experts, run.igns, config) if run.experts else {}
    for k, (train_ids, _) in enumerate(run.splits):
        if not any(float(prep.prepared[i].target.max()) > 0 for i in train_ids):
            raise ValueError(f"member {k}: its training images {sorted(set(train_ids))[:8]} hold no foreground")
    plan = TrainingPlan(
        config=config, out=out, splits=[(list(t), list(v)) for t, v in run.splits], seeds=list(run.seeds),
        fingerprint=run.fingerprint, resume=resume, arch=arch, prepared=prep.prepared,
        val_images=prep.val_images, init_states=run.init_states,
    )
    results = _run_members(plan, member_runner, progress=progress, callback=callback)
    selection = _select_members(results, config, run.experts, expert_f1)
    seconds = time.perf_counter() - t_start
    meta = _ensemble_metadata(run, prep, probe, arch, results, selection, expert_f1, provenance, groups)
    meta["provenance"].update(_run_record(results, config, device, seconds, run.fingerprint))
    path = save_ensemble(out, {}, meta)
    _tidy(out, config)
    return _summary(json.loads(path.read_text(encoding="utf-8")), out)


def _run_members(
    plan: TrainingPlan, member_runner: Callable[[TrainingPlan, list[int]], Sequence[dict[str, Any]]] | None, *,
    progress: bool, callback: Callable[..., Any] | None,
) -> list[dict[str, Any]]:
    """Every member trained, here one after the other or by ``member_runner``; their results in order."""
    indices = list(range(plan.config.members))
    if member_runner is None:
        return [train_member(plan, k, progress=progress, callback=callback) for k in indices]
    results = [dict(r) for r in member_runner(plan, indices)]
    if [r.get("index") for r in results] != indices:
        raise RuntimeError(
            f"member_runner must return one result per member in order {indices}; got "
            f"{[r.get('index') for r in results]}"
        )
    return results
