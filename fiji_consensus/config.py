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

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ConsensusConfig", "AgreementConfig", "JobConfig"]


class JobConfig(BaseModel):
    """Base of all job models: unknown fields are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class _ExpertInputs(JobConfig):
    images: Path | None = Field(
        None,
        description="Folder of images (<id>.png/.tif/...). Annotations are paired with images by id "
        "(file stem), never by sort order.",
    )
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
        if self.expert_names is not None and len(self.expert_names) != len(self.experts):
            raise ValueError(
                f"expert_names must name every expert folder: got {len(self.expert_names)} names "
                f"for {len(self.experts)} folders"
            )
        return self


class ConsensusConfig(_ExpertInputs):
    """Consensus of several experts' annotations, with per-expert scores and pairwise agreement."""

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
    """Agreement between experts (pairwise) and, optionally, of every expert with a reference."""

    reference: Path | None = Field(
        None, description="Optional folder of reference masks (e.g. est_GT) to score every expert against."
    )
    out: Path | None = Field(
        None, description="Optional output folder for agreement.csv and experts.csv."
    )
    overwrite: bool = Field(False, description="Replace existing files in the output folder.")
