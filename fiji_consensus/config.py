"""Validated configuration models for every job.

Each job (consensus, agreement, ...) is described by a pydantic model with ``extra="forbid"`` and a
description per field. The CLI builds the model from its arguments, the library consumes it, and every
output folder stores the model that made it as ``config.json`` (provenance); ``Model.model_validate_json``
reads it back.

>>> cfg = ConsensusConfig(images="imgs", experts=["a", "b"], out="out")
>>> ConsensusConfig.model_validate_json(cfg.model_dump_json()) == cfg
True
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ConsensusConfig", "AgreementConfig", "PlanConfig", "JobConfig", "AugmentOptions", "TrainConfig", "TrainJobConfig", "PredictConfig",
           "PackageConfig", "EvaluateConfig", "DaskOptions"]


def _check_expert_names(names: list[str] | None, folders: list[Path]) -> None:
    if names is not None and len(names) != len(folders):
        raise ValueError(
            f"expert_names must name every expert folder: got {len(names)} names for {len(folders)} folders"
        )


class JobConfig(BaseModel):
    """Base of all job models: unknown fields are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class _ExpertInputs(JobConfig):
    """The experts' annotations of one set of images: a project folder, or images and expert folders."""

    images: Path | None = Field(None, description="Folder of images (<id>.png/.tif/...). Annotations are paired "
                                "with images by id (file stem), never by sort order.")
    experts: list[Path] = Field(
        default_factory=list,
        description="One folder per expert holding masks (PNG/TIFF), RoiSet .zip, .roi files or TIFFs "
        "with an ImageJ overlay; the folder name is the expert's name unless expert_names is given.",
    )
    expert_names: list[str] | None = Field(
        None, description="Names for the experts, in the order of `experts` (default: folder names)."
    )
    project: Path | None = Field(
        None,
        description="A project folder (images/, annotations/<expert>/, ignore/); replaces images/experts.",
    )
    ignore: Path | None = Field(
        None,
        description="Optional folder of ignore masks (<id>...): pixels excluded from scoring (and from "
        "the STAPLE estimate). Default for a project: its ignore/ folder when present.",
    )
    min_size: int = Field(
        0,
        ge=0,
        description="Objects smaller than this many pixels are dropped before object-level scoring "
        "(Segebarth's MIN_PIXEL: wue1 30, inns1 16, mue 30).",
    )

    @model_validator(mode="after")
    def _inputs_given(self):
        if self.project is None and (self.images is None or not self.experts):
            raise ValueError(
                "give either a project folder, or an images folder and at least one expert folder"
            )
        if self.project is not None and (self.images is not None or self.experts):
            raise ValueError("give either a project folder or images/experts folders, not both")
        _check_expert_names(self.expert_names, self.experts)
        return self


class ConsensusConfig(_ExpertInputs):
    """Consensus of several experts' annotations (STAPLE, majority vote or object-level), every expert scored
    against it, and Fiji-ready outputs: masks, probability, RoiSet zips, overlay TIFFs, CSV tables,
    config.json."""

    method: Literal["staple", "majority", "objects"] = Field(
        "staple",
        description="staple: Warfield's STAPLE, posterior > threshold (as the published est_GT); "
        "majority: pixel majority vote; objects: object-level consensus (matched objects kept by "
        "at least min_experts experts, touching cells stay separate).",
    )
    threshold: float = Field(
        0.5, gt=0, lt=1, description="STAPLE posterior threshold for the consensus mask."
    )
    prior: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="STAPLE foreground prior; default: estimated from the data (as SimpleITK does).",
    )
    max_iter: int = Field(1000, ge=1, description="STAPLE iteration cap.")
    staple_estimate: Literal["auto", "image", "pooled"] = Field(
        "auto",
        description="STAPLE's estimate of the experts' sensitivity/specificity: image = per image (SimpleITK's "
        "filter; reproduces the published est_GT); pooled = each expert's from all images that expert "
        "annotated, each image's posterior from its own experts (for experts who annotated different "
        "images); auto = image when every expert annotated every image, else pooled.",
    )
    skip_incomplete: bool = Field(
        False,
        description="Leave out (and list) images annotated by fewer than 2 experts instead of stopping.",
    )
    min_votes: int | None = Field(
        None,
        ge=1,
        description="majority: minimum number of experts per pixel (default: strict majority, "
        "more than half; ties are background).",
    )
    min_experts: int | None = Field(
        None,
        ge=1,
        description="objects: keep an object annotated by at least this many experts "
        "(default: strict majority).",
    )
    iou_threshold: float = Field(
        0.5, gt=0, lt=1, description="objects: IoU above which two experts' objects are matched."
    )
    out: Path = Field(..., description="Output folder (created; not overwritten without overwrite).")
    overwrite: bool = Field(False, description="Replace existing files in the output folder.")
    resume: bool = Field(
        False,
        description="Continue an interrupted run in the same output folder with the same settings, "
        "skipping the images already done.",
    )
    write_overlays: bool = Field(True, description="Write overlays/<id>.tif (image + all outlines).")

    @field_validator("experts")
    @classmethod
    def _at_least_two(cls, v: list[Path]) -> list[Path]:
        if len(v) == 1:
            raise ValueError(f"a consensus needs at least 2 experts; got 1 folder: {v[0]}")
        return v


class AgreementConfig(_ExpertInputs):
    """Agreement between experts, pairwise (pixel Dice, IoU, ROI-F1, Cohen's kappa; Fleiss' kappa over all),
    and, with a reference such as est_GT, of every expert with it. No consensus is written."""

    reference: Path | None = Field(
        None, description="Optional folder of reference masks (e.g. est_GT) to score every expert against."
    )
    out: Path | None = Field(
        None, description="Optional output folder for agreement.csv and experts.csv."
    )
    overwrite: bool = Field(False, description="Replace existing files in the output folder.")


class PlanConfig(JobConfig):
    """An annotation plan: which expert annotates which project image next.

    Images the model is least sure about (predictions) or the experts disagree on most come first; every
    image gets `target` experts; every pair of experts shares images (so their agreement can be measured and
    the pooled STAPLE links them); `budget` caps the new annotations. Writes <project>/plan/plan.csv (order,
    image, expert, reason) and summary.json; `plan next` names an expert's next planned image."""

    project: Path = Field(
        ..., description="Project folder: images/, annotations/<expert>/ (whatever exists so far)."
    )
    experts: list[str] = Field(
        default_factory=list,
        description="The experts to plan for (default: the project's annotations/<expert>/ folders).",
    )
    target: int = Field(3, ge=2, description="Experts per image (at least 2 for a consensus).")
    budget: int | None = Field(
        None, ge=0, description="Largest number of new annotations (default: what the target needs)."
    )
    predictions: Path | None = Field(
        None,
        description="A `predict` output folder (its images.csv QA scores, or uncertainty/<id>.tif maps) or a "
        "folder of uncertainty maps: images the model is least sure about come first. Default: the experts' "
        "disagreement where two or more annotated an image.",
    )
    out: Path | None = Field(None, description="Output folder (default: <project>/plan).")
    overwrite: bool = Field(False, description="Replace an earlier plan.")


# ------------------------------------------------------------------------------------------ training


class AugmentOptions(BaseModel):
    """Random augmentation of training patches (numpy, drawn from the sampler's seeded generator; the one
    augmentation model: ``nn.data.AugmentConfig`` is this class).

    ``flip``/``rotate90``: random flips and multiples of 90 degrees; ``affine_p``: probability of a random
    rotation by up to ``rotation_deg`` and scaling by ``1 +- scale``; ``gamma``: gamma drawn log-uniformly in
    ``[1/(1+gamma), 1+gamma]``; ``contrast``/``brightness``: ``x * c + b`` with ``c`` in ``1 +- contrast`` and
    ``b`` in ``+- brightness``; ``noise``: Gaussian noise with a standard deviation up to this value;
    ``blur``: Gaussian blur (sigma up to this value) on a third of the patches; ``zoom``: apparent object size
    drawn log-uniformly in ``[min, max]`` for every patch (replaces the affine's ``scale``);
    ``background``: a random smooth background added to half of the patches, what differs most between
    microscopes (autofluorescent tissue, vignetting, a brighter centre of the field): a linear ramp plus a
    Gaussian bump wider than the patch, scaled to a peak drawn in ``[0, background]`` (normalised units),
    and the same field as a gain ``x * (1 + field)`` on half of those. With ``background_renormalize`` such a
    patch is then divided by ``1 + u * peak`` (``u`` drawn in [0.5, 1]): what the per-image percentile
    normalisation does to a real image with that background (its upper percentile rises with the background,
    so the objects stand out less on the normalised scale); without it the objects keep their full contrast
    on top of the field, which real bright images never show.
    """

    model_config = ConfigDict(extra="forbid")

    flip: bool = Field(True, description="Random mirror flips.")
    rotate90: bool = Field(True, description="Random rotations by multiples of 90 degrees.")
    affine_p: float = Field(0.5, ge=0, le=1, description="Probability of a small random rotation + scaling.")
    rotation_deg: float = Field(45.0, ge=0, le=180, description="Largest rotation angle of the affine, degrees.")
    scale: float = Field(0.15, ge=0, lt=1, description="Largest relative scaling of the affine (1 +- scale).")
    gamma: float = Field(0.3, ge=0, description="Gamma drawn log-uniformly in [1/(1+gamma), 1+gamma].")
    contrast: float = Field(0.2, ge=0, lt=1, description="Contrast factor drawn in 1 +- contrast.")
    brightness: float = Field(0.1, ge=0, description="Brightness offset drawn in +- brightness (normalised units).")
    noise: float = Field(0.0, ge=0, description="Largest standard deviation of additive Gaussian noise.")
    blur: float = Field(
        0.0, ge=0, description="Largest sigma (pixels) of a Gaussian blur applied to a third of the patches (0 = off)."
    )
    zoom: tuple[float, float] | None = Field(
        None,
        description="Range (min, max) of the apparent object size relative to the training images, drawn "
        "log-uniformly for every patch (e.g. (0.5, 1.3) teaches objects half to 1.3 times as large: use it "
        "when the model must work on other microscopes or magnifications); None = only the affine's scale.",
    )

    background: float = Field(
        0.0,
        ge=0,
        description="Largest peak (normalised units) of a random smooth background (ramp + wide bump) added "
        "to, or multiplied into, half of the patches: teaches the model to ignore bright, uneven tissue "
        "background and illumination gradients of other microscopes (0 = off).",
    )

    background_renormalize: bool = Field(
        False,
        description="Divide a patch with a background field by 1 + (50-100 % of) the field's peak, as the "
        "per-image normalisation of an image with that background would (its objects then stand out less).",
    )

    @model_validator(mode="after")
    def _check_zoom(self) -> AugmentOptions:
        if self.zoom is not None:
            lo, hi = self.zoom
            if not (0 < lo <= hi):
                raise ValueError(f"zoom must be (min, max) with 0 < min <= max; got {self.zoom}")
        return self


class TrainConfig(BaseModel):
    """Settings of one ensemble training run (stored in ``ensemble.json``)."""

    model_config = ConfigDict(extra="forbid")

    # ensemble and splits
    members: int = Field(5, ge=1, description="Number of ensemble members (one per split).")
    split: Literal["auto", "kfold", "group_kfold", "bootstrap", "all"] = Field(
        "auto",
        description="How to split images into training/validation per member: k-fold, grouped k-fold (needs "
        "groups: image id -> group), bootstrap (validate on out-of-bag images), all (every member trains on "
        "all images, for fine-tuning on a few; its validation scores are then on training images); auto = "
        "group_kfold when groups are given, else kfold.",
    )
    folds: int | None = Field(
        None, ge=2, description="Number of folds for (grouped) k-fold; default = members. members <= folds."
    )
    seed: int = Field(0, ge=0, description="Master seed: splits and one derived seed per member.")
    # architecture
    depth: int = Field(3, ge=1, le=6, description="U-Net pooling steps (levels = depth + 1); tiles are multiples of 2**depth.")
    base_channels: int = Field(16, ge=1, description="Feature channels at full resolution, doubled per level.")
    norm: Literal["batch", "group"] = Field("batch", description="Normalisation layer after each convolution.")
    norm_groups: int = Field(8, ge=1, description="Groups for group normalisation.")
    upsample: Literal["transpose", "nearest"] = Field(
        "transpose", description="Upsampling: 2x2 transposed convolution, or nearest neighbour + 1x1 convolution."
    )
    background_radius: int = Field(
        0, ge=0, description="Remove the background inside the network first: a white top-hat (image minus "
        "its grayscale opening) with a square window of 2r+1 pixels, Fiji's Subtract Background idea, exported "
        "with the model. Make the window wider than the widest object; 0 = none."
    )
    # optimisation
    patch_size: int = Field(256, ge=8, description="Training patch height and width (a multiple of 2**depth).")
    batch_size: int = Field(4, ge=1, description="Patches per iteration.")
    iterations: int | None = Field(
        None, ge=1, description="Iterations per member; None to train by max_minutes alone."
    )
    max_minutes: float | None = Field(
        60.0,
        gt=0,
        description="Wall-time budget for the whole ensemble (split equally among members, validation "
        "included); training stops at whichever of iterations/max_minutes comes first. Runs limited by "
        "time are not bit-reproducible.",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate of AdamW; default 2e-3 from scratch, 5e-4 when fine-tuning (init), the "
        "rate every adaptation benchmark used.",
    )
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    train_layers: Literal["all", "decoder", "head"] = Field(
        "all",
        description="Which layers training updates: all; decoder (the encoder, i.e. the down blocks and the "
        "bottom block, keeps its weights and batch-norm statistics; measured 20 % faster per iteration); head "
        "(only the last 1x1 convolution). For fine-tuning from --init on a few images of a new lab; measured "
        "here, all layers adapted best on two labs of three, the decoder on the third (see the README).",
    )
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Fraction of the budget with linear warm-up.")
    min_lr_fraction: float = Field(0.02, ge=0, le=1, description="Final learning rate of the cosine decay, relative.")
    # loss
    bce_weight: float = Field(1.0, ge=0, description="Weight of binary cross-entropy (soft targets) in the loss.")
    dice_weight: float = Field(1.0, ge=0, description="Weight of the soft Dice loss.")
    border_weight: float = Field(
        0.0, ge=0, description="w0 of U-Net border weighting of background gaps between objects (0 = off)."
    )
    border_sigma: float = Field(5.0, gt=0, description="sigma (pixels) of the border weighting.")
    # sampling, augmentation, normalisation
    foreground_sampling: float = Field(
        10.0, ge=0, description="Extra weight of foreground pixels when drawing patch centres."
    )
    boundary_sampling: float = Field(
        10.0, ge=0, description="Extra weight of pixels near object boundaries when drawing patch centres."
    )
    augment: AugmentOptions = Field(default_factory=AugmentOptions, description="Augmentation settings.")
    low_percentile: float = Field(1.0, ge=0, lt=100, description="Lower percentile of per-image normalisation.")
    high_percentile: float = Field(
        99.99,
        gt=0,
        le=100,
        description="Upper percentile of per-image normalisation. 99.99 lets the brightest objects set the scale; "
        "99.8 falls into the background of images with few objects and stretches their background to "
        "object level.",
    )
    # validation and selection
    validate_every: int = Field(200, ge=1, description="Validate (held-out images) every this many iterations.")
    checkpoint_every: int = Field(50, ge=1, description="Write a resume checkpoint every this many iterations.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability threshold for validation scores.")
    min_size: int = Field(0, ge=0, description="MIN_PIXEL of the ROI-F1: objects smaller than this are dropped.")
    balance_labs: bool = Field(
        True,
        description="Multi-lab training: draw every lab's patches equally often (each image with weight "
        "1 / images of its lab), so a large lab does not drown a small one.",
    )
    lab_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Multi-lab training: relative share of the patches per lab name (others 1), e.g. a new lab "
        "fine-tuned with --init next to the model's training labs (rehearsal): its weight = their number, so "
        "half the patches come from it.",
    )
    selection_metric: Literal["roi_f1", "dice"] = Field(
        "roi_f1", description="Validation score that picks each member's best checkpoint."
    )
    paper_selection: bool = Field(
        False,
        description="Keep a member only if on every validation image its ROI-F1 >= the lowest expert's "
        "(Segebarth et al. 2020); needs expert masks.",
    )
    # resources
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (None = torch's default).")
    keep_checkpoints: bool = Field(False, description="Keep the resume checkpoints after training finished.")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        m = 2**self.depth
        if self.patch_size % m:
            raise ValueError(f"patch_size must be a multiple of 2**depth = {m}; got {self.patch_size}")
        if self.iterations is None and self.max_minutes is None:
            raise ValueError("give iterations or max_minutes (or both); got neither")
        if self.low_percentile >= self.high_percentile:
            raise ValueError(
                f"low_percentile must be below high_percentile; got {self.low_percentile} and {self.high_percentile}"
            )
        if self.bce_weight == 0 and self.dice_weight == 0:
            raise ValueError("bce_weight and dice_weight cannot both be 0")
        bad = {k: v for k, v in self.lab_weights.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"lab weights must be positive numbers; got {bad}")
        return self


# --------------------------------------------------------------------------------------------- loss


class DaskOptions(JobConfig):
    """Where to run a job on Dask (the ``distributed`` extra): an existing scheduler or a local cluster."""

    scheduler: str | None = Field(
        None,
        description="Address of a running Dask scheduler (tcp://host:8786), or the path of its scheduler "
        "file (JSON, as dask-jobqueue/dask-mpi/`dask scheduler --scheduler-file` write).",
    )
    workers: int | None = Field(
        None, ge=1, description="Start a local cluster of this many worker processes instead."
    )
    threads_per_worker: int = Field(
        1, ge=1, description="Local cluster only: Dask threads (tasks at a time) per worker process."
    )
    retries: int = Field(
        2, ge=0, description="Retries of a failed task (an image, a member) before it is reported as failed."
    )

    @model_validator(mode="after")
    def _one_target(self):
        if (self.scheduler is None) == (self.workers is None):
            raise ValueError(
                "give either scheduler (an existing cluster) or workers (a local cluster); got "
                f"scheduler={self.scheduler!r}, workers={self.workers!r}"
            )
        return self


class TrainJobConfig(JobConfig):
    """Train a U-Net ensemble on consensus targets: where the data is, what the targets are, the settings.

    K U-Nets on k-fold, grouped k-fold or bootstrap splits; each member's best checkpoint on its held-out
    images is kept; the ensemble folder holds ensemble.json, the member weights and logs. An interrupted run
    resumes when started again with the same settings. Without iterations the budget is max_minutes for the
    whole ensemble."""

    images: Path | None = Field(None, description="Folder of training images (<id>.png/.tif/...).")
    labels: Path | None = Field(None, description="Folder of target masks paired with the images by id (e.g. a "
                                "consensus run's masks/ or est_GT). Without it the targets are computed from the "
                                "experts' annotations.")
    experts: list[Path] = Field(
        default_factory=list,
        description="Experts' annotation folders: the consensus targets are computed from them (unless "
        "labels is given), and they score the members (paper_selection).",
    )
    expert_names: list[str] | None = Field(None, description="Names for the expert folders.")
    project: Path | None = Field(
        None, description="A project folder (images/, annotations/<expert>/, optional ignore/)."
    )
    ignore: Path | None = Field(
        None, description="Folder of ignore masks: never sampled as targets, excluded from loss and scores."
    )
    targets: Literal["staple", "staple-soft", "fraction", "majority"] = Field(
        "staple",
        description="Targets computed from the experts: staple = STAPLE posterior > 0.5 (the published "
        "consensus), staple-soft = the STAPLE posterior itself, fraction = fraction of experts per pixel "
        "(soft), majority = strict majority vote.",
    )
    groups: Path | None = Field(
        None,
        description="CSV mapping image id -> group (first two columns, header optional) for grouped k-fold, "
        "e.g. groups_wue1.csv.",
    )
    out: Path = Field(..., description="The ensemble folder (models/<name>).")
    overwrite: bool = Field(
        False,
        description="Start over in an existing ensemble folder instead of resuming or refusing.",
    )
    train: TrainConfig = Field(..., description="Network, sampling, optimisation and ensemble settings.")
    init: Path | None = Field(
        None,
        description="Fine-tune: an ensemble folder or a fiji-consensus bioimage.io package whose members "
        "initialise the new members (member k starts from member k mod K); its architecture and "
        "normalisation are used instead of the network settings here.",
    )
    dask: DaskOptions | None = Field(
        None,
        description="Train the members in parallel on Dask, one task per member (identical members to a "
        "sequential run on CPUs with the same threads); default: one after the other in this process.",
    )
    labs: list[Path] = Field(
        default_factory=list,
        description="Multi-lab training: lab folders (a project folder, or images/ + labels/expert_*/), each "
        "with its own experts, consensus (of kind targets) and MIN_PIXEL; patches are drawn equally often "
        "from every lab (train.balance_labs). Replaces images/experts/project.",
    )
    lab_min_sizes: dict[str, int] = Field(
        default_factory=dict, description="MIN_PIXEL per lab name (default: 30 for lab-wue1/lab-mue, 16 for lab-inns1, else "
        "train.min_size)."
    )
    rehearse: list[Path] = Field(
        default_factory=list,
        description="Fine-tuning with rehearsal: folders of the labs the init model was trained on (project or "
        "Segebarth layout; or a folder of labs, of which those named as the model's training labs are taken, "
        "e.g. data/segebarth2020 for the zoo models), trained on next to the new images (project, or labs), "
        "which get half the patches (lab weight: the number of rehearsed labs, shared among the new labs, "
        "unless lab_weights names them), so a few new images cannot pull the model away from what it knew. "
        "Needs init.",
    )

    @model_validator(mode="after")
    def _inputs(self):
        if self.rehearse:
            if self.init is None:
                raise ValueError("rehearse trains next to the labs a model was trained on: give that model as "
                                 "init (--init MODEL)")
            if not self.labs and self.project is None:
                raise ValueError("rehearse needs the new images as a project folder or lab folders (--project DIR "
                                 "or --lab DIR); got an images folder")
        if self.labs:
            if self.project is not None or self.images is not None or self.experts or self.labels:
                raise ValueError("give either labs or a project / images folder, not both")
            return self
        if self.project is not None and (self.images is not None or self.experts or self.labels):
            raise ValueError("give either a project folder or images with labels/experts folders, not both")
        if self.project is None:
            if self.images is None:
                raise ValueError("give a project folder, or an images folder with labels and/or experts")
            if self.labels is None and len(self.experts) < 2:
                raise ValueError(
                    "targets need a labels folder or at least 2 expert folders for a consensus; "
                    f"got {len(self.experts)} expert folder(s) and no labels"
                )
        _check_expert_names(self.expert_names, self.experts)
        return self


# ------------------------------------------------------------------------------------------ prediction


class CrossvalConfig(JobConfig):
    """Leave-one-lab-out cross-validation: train on all labs but one, score the left-out lab's images against
    its consensus and each of its experts, for every lab in turn.

    Each training lab keeps its own experts and consensus, and patches are drawn equally often from each lab;
    every image of the left-out lab is placed above / within / below its experts (the paper's rule: ROI-F1 >=
    the lowest expert's). Writes crossval.csv, summary.json and one folder per fold; an interrupted run
    resumes when started again."""

    labs: list[Path] = Field(
        ...,
        min_length=2,
        description="Lab folders (a project folder: images/ + annotations/<expert>/, or the Segebarth layout: "
        "images/ + labels/expert_*/), each with its own experts and consensus.",
    )
    lab_names: list[str] | None = Field(None, description="Names of the labs (default: folder names).")
    min_sizes: dict[str, int] = Field(
        default_factory=dict,
        description="MIN_PIXEL per lab name (default: 30 for lab-wue1 and lab-mue, 16 for lab-inns1, else 0).",
    )
    hold_out: list[str] | None = Field(None, description="Labs to leave out in turn (default: every lab).")
    targets: Literal["staple", "staple-soft", "fraction", "majority"] = Field(
        "fraction", description="Training targets computed from each lab's own experts."
    )
    tta: Literal["none", "flips", "dihedral"] = Field("flips", description="Test-time views when predicting.")
    out: Path = Field(..., description="Output folder (crossval.csv, summary.json, one folder per fold).")
    train: TrainConfig = Field(..., description="Training settings of every fold.")

    @model_validator(mode="after")
    def _names(self):
        if self.lab_names is not None and len(self.lab_names) != len(self.labs):
            raise ValueError(f"lab_names must name every lab: {len(self.labs)} labs, {len(self.lab_names)} names")
        return self


class PredictConfig(JobConfig):
    """Prediction of images with a trained ensemble (or bioimage.io packages), written as Fiji-ready files.

    Test-time views and tiling; per image probability and uncertainty (float32, absolute scale), labels, a
    RoiSet with one ROI per object coloured by its uncertainty, an ImageJ hyperstack (image, probability,
    uncertainty) with the ROIs as overlay, and object tables. Images already done are skipped; an unreadable
    image is reported at the end and makes the run fail. A zarr input (a 2-D array, a group with one array,
    or an OME-Zarr image) larger than memory is predicted block by block on Dask into a zarr output
    (probability and uncertainty arrays)."""

    model: Path | list[Path] = Field(
        ...,
        description="Ensemble folder (models/<name>/ with ensemble.json), or one or several bioimage.io "
        "packages (.zip, rdf.yaml or a folder holding one), ensembled with the same uncertainty measures.",
    )
    inputs: list[Path] = Field(
        ...,
        min_length=1,
        description="Image files and/or folders of images (<id>.tif/.png/...); the id of an image is its "
        "file stem and must be unique over all inputs.",
    )
    out: Path = Field(..., description="Output folder (per-kind subfolders, see fiji_consensus.predict).")
    tta: Literal["none", "flips", "dihedral"] | None = Field(
        None,
        description="Test-time augmentation: none (1 view), flips (4 views: identity, vertical, "
        "horizontal, both; as deepflash2), dihedral (all 8 rotations/reflections). For bioimage.io packages "
        "the views are applied around the package. Default (None): none for bioimage.io packages (ours hold "
        "their own views inside), flips for an ensemble folder.",
    )
    tile: int = Field(
        1152,
        ge=32,
        description="Largest tile (pixels, including the halo) fed to the network; rounded down to a "
        "multiple of 2**depth; smaller tiles are used when they cover the image as well. Bounds memory; "
        "the default runs a 1024x1024 image as one tile.",
    )
    overlap: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Fraction of a tile's core shared with each neighbour (blended); default: 0 for "
        "batch-normalised networks (exact with the halo cropped), 0.125 otherwise.",
    )
    batch_size: int = Field(1, ge=1, description="Tiles per network call.")
    threshold: float | None = Field(
        None, gt=0, lt=1, description="Foreground is probability > threshold; default: the ensemble's."
    )
    object_threshold: float | None = Field(
        None, gt=0, lt=1, description="Keep only the objects whose peak probability exceeds this (hysteresis; "
        "at least the threshold): which objects count, apart from how far each extends. Default: the model's "
        "(set by calibrate), or none when --threshold is given."
    )
    min_size: int | None = Field(
        None, ge=0, description="Smallest object kept (pixels); default: the min_size the ensemble was "
        "trained with (else 0)."
    )
    split: Literal["none", "distance", "probability"] = Field(
        "none",
        description="Watershed split of touching objects: none, distance (distance transform) or "
        "probability (smoothed probability).",
    )
    subtract_background: float | None = Field(
        None,
        gt=0,
        description="Subtract a bright, uneven background before the model: Fiji's Process > Subtract "
        "Background (rolling ball of this radius in pixels, at least the diameter of the largest objects; "
        "identical to ImageJ's on a 32-bit image). For images whose tissue background is brighter or more "
        "uneven than the model's training images (the out-of-domain warning says so). Default: none.",
    )
    subtract_background_if_flagged: bool = Field(
        False,
        description="Subtract the background only from the images whose background the out-of-domain check "
        "finds brighter or more uneven than the model's training images: each image is predicted as it is, "
        "and such an image again after the rolling ball (radius: subtract_background, default twice the "
        "diameter of the model's typical training object). images.csv and summary.json name those images.",
    )
    uncertainty: Literal["entropy", "expected_entropy", "mutual_information", "std", "deepflash2"] = Field(
        "entropy",
        description="Uncertainty map written and used for ROI colours and QA scores: entropy (predictive "
        "entropy, total, bits), expected_entropy (aleatoric), mutual_information (epistemic), std "
        "(member standard deviation), deepflash2 (U = 4p(1-p)).",
    )
    channel: int | None = Field(
        None, ge=0, description="0-based channel of multi-channel images (required when they have > 1)."
    )
    device: str = Field("cpu", description="Torch device for the network (cpu, cuda, cuda:1, mps).")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's).")
    overwrite: bool = Field(False, description="Predict every image again and replace existing files.")
    trust_code: bool = Field(
        False,
        description="Allow bioimage.io packages whose only usable weights are pytorch_state_dict: they import and "
        "run the Python file the package ships. Off: such packages are refused, naming that file.",
    )
    keras_normalization: str | None = Field(
        None,
        description="Normalisation of the plain Keras models (.keras, .h5) among the models (required with "
        "them): percentile:LOW,HIGH (per image, e.g. percentile:1,99.8), range:MIN,MAX or none.",
    )
    dask: DaskOptions | None = Field(
        None,
        description="Predict on Dask, one task per image (results identical to a run in this process); "
        "default: in this process. A zarr input always runs on Dask (a local threaded scheduler without "
        "this).",
    )
    chunk: int = Field(
        1024,
        ge=32,
        description="Zarr input (images larger than memory): side of the square blocks predicted at a time "
        "(plus the network's halo on every side) and of the output zarr chunks; rounded down to a multiple "
        "of 2**depth.",
    )

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        base = v.split(":")[0]
        if base not in ("cpu", "cuda", "mps", "xpu"):
            raise ValueError(f"device must be cpu, cuda[:N], mps or xpu; got {v!r}")
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_more_models(cls, v: object) -> object:
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("give at least one model")
            return v[0] if len(v) == 1 else list(v)
        return v

    @model_validator(mode="after")
    def _object_threshold_ok(self) -> PredictConfig:
        if None not in (self.threshold, self.object_threshold) and self.object_threshold < self.threshold:
            raise ValueError(f"object_threshold must be >= threshold ({self.threshold}); got {self.object_threshold}")
        return self

    @property
    def models(self) -> list[Path]:
        """``model`` as a list (one ensemble folder, or one or several bioimage.io packages)."""
        return list(self.model) if isinstance(self.model, list) else [self.model]


# ------------------------------------------------------------------------------------------ packaging


class PackageConfig(JobConfig):
    """An ensemble folder packaged as one bioimage.io model (fiji_consensus.zoo.package_ensemble).

    The members, the test-time views and the sigmoid inside one network with two outputs, probability and
    uncertainty; torchscript, ONNX (opset 17, for deepImageJ) and pytorch_state_dict weights; percentile
    normalisation as preprocessing; test tensors, a TIFF sample and a cover from a real image crop; a model
    card with the validation scores. `test` runs bioimageio.core's test on it (offline)."""

    model: Path = Field(..., description="Ensemble folder (models/<name>/ with ensemble.json).")
    out: Path = Field(..., description="The package to write (.zip); never replaced without overwrite.")
    name: str | None = Field(
        None, description="Model name (5-128 letters, digits, _+-() and spaces); default: the folder name."
    )
    description: str | None = Field(None, description="One-paragraph description for the package and its card.")
    tta: Literal["none", "flips", "dihedral"] = Field(
        "flips", description="Test-time views inside the network (each costs one pass of every member)."
    )
    uncertainty: Literal["entropy", "expected_entropy", "mutual_information", "std", "deepflash2"] = Field(
        "entropy", description="Measure of the package's uncertainty output (absolute scale)."
    )
    image: Path | None = Field(
        None,
        description="Image for the test tensors, the TIFF sample and the cover (a real crop of it); default: "
        "the bundled lab-wue1 sample image 0001.",
    )
    channel: int | None = Field(None, ge=0, description="0-based channel of a multi-channel image.")
    tile: int = Field(256, ge=32, description="Edge of the test crop (rounded to a valid tile size).")
    validation: Path | None = Field(
        None,
        description="JSON with held-out-lab scores (labs: {lab: {images, means: {ensemble, expert_k, ...}}}, "
        "as bench_train.py writes); default: validation.json or bench_results.json in the model folder.",
    )
    authors: list[str] = Field(default_factory=lambda: ["fiji-consensus"], min_length=1,
                               description="Authors: 'Name; affiliation=...; github_user=...; orcid=...'.")
    maintainers: list[str] = Field(default_factory=list,
                                   description="Maintainers: a GitHub user or 'Name; github_user=...'.")
    training_data: str | None = Field(
        None, description="Training data description: 'segebarth2020' or a JSON file (name, authors, license)."
    )
    card_notes: Path | None = Field(
        None, description="Markdown file of '## Section' blocks added to those sections of the model card."
    )
    license: str = Field("MIT", description="SPDX licence id of the package.")
    tags: list[str] = Field(default_factory=list, description="Extra tags.")
    version: str = Field("0.1.0", description="Version of the package.")
    weight_formats: list[Literal["pytorch_state_dict", "torchscript", "onnx", "keras_hdf5",
                                 "tensorflow_saved_model_bundle"]] = Field(
        default_factory=lambda: ["pytorch_state_dict", "torchscript", "onnx"],
        min_length=1,
        description="Weights to write (pytorch_state_dict is always written: the parent of the others); "
        "keras_hdf5 and tensorflow_saved_model_bundle need the keras extra.",
    )
    card: Path | None = Field(None, description="Also write the model card (markdown) here.")
    domain_labs: list[Path] = Field(
        default_factory=list,
        description="The labs the model was trained on (folders as train --lab takes): their images and "
        "consensus give the training range of image statistics that predict's out-of-domain warning needs, "
        "for a model that stores none (trained before fiji-consensus recorded it), or the statistics that one "
        "lacks (added to fiji-consensus after it was trained; the stored ones are kept); refused for one that "
        "has them all.",
    )
    test: bool = Field(False, description="Run bioimageio.core's test of the package after writing it.")
    overwrite: bool = Field(False, description="Replace an existing package (and card).")


# ------------------------------------------------------------------------------------------ evaluation


class EvaluateConfig(_ExpertInputs):
    """Objectivity, reliability and validity of experts, consensus and models (Segebarth et al. 2020).

    Every expert and model against the consensus (Dice, ROI-F1, AP; STAPLE sensitivity/specificity; models
    above/within/below the experts; the paper's selection rule), agreement and reliability (pairwise ROI-F1,
    count CV, ICC, SD of effect sizes across the models of a strategy), validity per group (Kruskal-Wallis
    with eta2_H, Mann-Whitney with eta2 = Z^2/N, Bonferroni, Grubbs outliers flagged), and uncertainty vs
    expert disagreement (binned uncertainty, QUBIQ Dice, calibration). Writes CSV tables, summary.json and
    report.html."""

    consensus: Path | None = Field(
        None,
        description="Folder of consensus masks paired with the images by id (e.g. a consensus run's masks/ or "
        "est_GT); default: STAPLE of the experts, posterior > 0.5 (as the published est_GT).",
    )
    models: dict[str, Path] = Field(
        default_factory=dict,
        description="Model name -> prediction folder: the output of `fiji-consensus predict` (probability/ and "
        "uncertainty/ TIFFs) or a folder of masks or probability TIFFs paired with the images by id.",
    )
    strategies: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Training strategy -> names of its models (e.g. members or repeated trainings with other "
        "seeds): their agreement and the spread (SD) of their effect sizes. Default: all models, when >= 2.",
    )
    groups: Path | None = Field(
        None, description="CSV mapping image id -> group (condition), first two columns, header optional."
    )
    regions: Path | None = Field(
        None,
        description="Folder of region masks (<id>...): objects are counted inside the region only; images "
        "without one use the whole image.",
    )
    control: str | None = Field(
        None, description="The control group: counts, densities and intensities are divided by its mean."
    )
    comparisons: Literal["all", "control"] = Field(
        "all",
        description="Pairwise Mann-Whitney tests between all pairs of groups, or each group against the control.",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level (before Bonferroni correction) and of Grubbs' test.")
    calibration_bins: int = Field(10, ge=2, le=100, description="Equal-width probability bins of the calibration.")
    example: str | None = Field(
        None, description="Image id shown with outlines in the report (default: the first image)."
    )
    note: str | None = Field(None, description="A note shown at the top of the report (e.g. what the groups are).")
    report: bool = Field(True, description="Write report.html (needs matplotlib).")
    out: Path = Field(..., description="Output folder (created; not overwritten without overwrite).")
    overwrite: bool = Field(False, description="Replace existing files in the output folder.")

    @model_validator(mode="after")
    def _check_evaluate(self):
        reserved = {"consensus", "experts"}
        clash = sorted(set(self.models) & (reserved | set(self.expert_names or [])))
        if clash:
            raise ValueError(f"model names must differ from expert names and {sorted(reserved)}; got {clash}")
        for name, members in self.strategies.items():
            unknown = [m for m in members if m not in self.models]
            if unknown:
                raise ValueError(
                    f"strategy {name!r} names unknown models {unknown}; known models: {sorted(self.models)}"
                )
            if len(members) < 1:
                raise ValueError(f"strategy {name!r} has no models")
        if self.control is not None and self.groups is None:
            raise ValueError("control needs a groups CSV (groups)")
        if self.comparisons == "control" and self.control is None:
            raise ValueError("comparisons='control' needs a control group")
        return self


# --------------------------------------------------------------------------------------------- reading
