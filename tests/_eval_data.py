"""Test data for the evaluation tests: crops of the bundled real sample and "model" predictions made from it.

The model predictions are data written the way ``fiji-consensus predict`` writes them (probability/ and
uncertainty/ float32 TIFFs) or as plain mask folders; they are made from the experts' masks, so their
scores are known in advance (a copy of expert 2 must score exactly as expert 2 does).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from fiji_consensus import datasets
from fiji_consensus.uncertainty import binary_entropy

CROP = (slice(256, 640), slice(256, 640))  # 384 x 384: objects in every sample image
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def make_project(root: Path) -> dict:
    """Write a project (images/, annotations/expert_k/) of 384-px crops, est_GT crops, groups.csv and models."""
    s = datasets.load_sample()
    (root / "images").mkdir(parents=True)
    ests = root / "est_GT"
    ests.mkdir()
    experts = s.experts
    for e in experts:
        (root / "annotations" / e).mkdir(parents=True)
    models = {n: root / "models" / n for n in ("soft", "soft_seed1", "copy_e2", "empty")}
    for n in ("soft", "soft_seed1"):
        (models[n] / "probability").mkdir(parents=True)
        (models[n] / "uncertainty").mkdir(parents=True)
    for n in ("copy_e2", "empty"):
        models[n].mkdir(parents=True)
    masks_by_id = {}
    for i in s.ids:
        img = s.image(i)[CROP]
        m = s.masks(i)[:, CROP[0], CROP[1]]
        masks_by_id[i] = m
        tifffile.imwrite(root / "images" / f"{i}.tif", img)
        for k, e in enumerate(experts):
            tifffile.imwrite(root / "annotations" / e / f"{i}.tif", m[k].astype(np.uint8) * 255)
        tifffile.imwrite(ests / f"{i}.tif", s.est_gt(i)[CROP].astype(np.uint8) * 255)
        frac = m.mean(axis=0)
        soft = np.clip(ndimage.gaussian_filter(frac, 1.0) * 1.1, 0, 1).astype(np.float32)
        for n, p in (("soft", soft), ("soft_seed1", np.clip(soft * 0.9, 0, 1).astype(np.float32))):
            tifffile.imwrite(models[n] / "probability" / f"{i}.tif", p)
            tifffile.imwrite(models[n] / "uncertainty" / f"{i}.tif", binary_entropy(p).astype(np.float32))
        tifffile.imwrite(models["copy_e2"] / f"{i}_mask.tif", m[1].astype(np.uint8) * 255)
        tifffile.imwrite(models["empty"] / f"{i}.tif", np.zeros(m.shape[1:], np.uint8))
    # two "conditions" so that every group has more than one image (the sample's groups have one each)
    groups = {"0001": "a", "0015": "a", "0062": "a", "0076": "b", "0092": "b"}
    (root / "groups.csv").write_text("file_id,group_id\n" + "".join(f"{k},{v}\n" for k, v in groups.items()))
    return {"root": root, "ids": s.ids, "experts": experts, "models": models, "masks": masks_by_id,
            "groups": groups, "est_gt": ests}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = chromium()
    assert exe is not None
    return subprocess.run([exe, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout)
