"""Every job's config survives a round trip through JSON (what ``config.json`` stores and a rerun reads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiji_consensus import config as C


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


#: One config per job, every value away from its default where the field allows it.
EXAMPLES = {
    C.ConsensusConfig: dict(project="p", out="o", method="objects", min_experts=2, iou_threshold=0.4, min_size=30,
                            write_overlays=False, skip_incomplete=True),
    C.AgreementConfig: dict(images="i", experts=["a", "b"], expert_names=["x", "y"], reference="r", out="o",
                            min_size=16),
    C.PlanConfig: dict(project="p", experts=["x", "y", "z"], target=2, budget=5, predictions="pred", out="o",
                       overwrite=True),
    C.TrainJobConfig: dict(images="i", experts=["a", "b"], targets="fraction", groups="g.csv", out="m",
                           train=C.TrainConfig(members=2, iterations=10, batch_size=2, seed=3)),
    C.CrossvalConfig: dict(labs=["l1", "l2"], lab_names=["a", "b"], min_sizes={"a": 30}, hold_out=["a"],
                           targets="staple", tta="dihedral", out="o", train=C.TrainConfig(members=1, iterations=5)),
    C.PredictConfig: dict(model=["a.zip", "b.zip"], inputs=["i1", "i2.tif"], out="o", tta="dihedral", tile=256,
                          threshold=0.4, min_size=12, uncertainty="mutual_information", channel=1,
                          dask=C.DaskOptions(workers=2, retries=5)),
    C.PackageConfig: dict(model="m", out="m.zip", overwrite=True),
    C.EvaluateConfig: dict(project="p", models={"m1": "pm1", "m2": "pm2"}, strategies={"s": ["m1", "m2"]},
                           groups="g.csv", control="ctrl", comparisons="control", alpha=0.01, calibration_bins=5,
                           report=False, out="o"),
    C.DaskOptions: dict(scheduler="tcp://127.0.0.1:8786", retries=5),
    # the train job's settings (a part of TrainJobConfig and CrossvalConfig, also stored in ensemble.json)
    C.TrainConfig: dict(members=3, split="bootstrap", seed=7, depth=2, norm="group", patch_size=64, batch_size=2,
                        iterations=30, learning_rate=1e-3, augment=C.AugmentOptions(flip=False, zoom=(0.8, 1.2)),
                        selection_metric="dice", device="cpu", threads=1),
}


def test_every_job_config_has_an_example():
    configs = {c for c in _subclasses(C.JobConfig) if not c.__name__.startswith("_")}
    assert configs - set(EXAMPLES) == set(), "a job config without a round-trip example"


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_config_round_trips_through_json(cls):
    cfg = cls(**EXAMPLES[cls])
    changed = [k for k in EXAMPLES[cls] if getattr(cfg, k) != cls.model_fields[k].get_default(call_default_factory=True)]
    assert changed == list(EXAMPLES[cls]), "every example value must differ from the default"
    dumped = cfg.model_dump(mode="json")
    again = cls.model_validate(dumped)
    assert again == cfg
    assert cls.model_validate_json(cfg.model_dump_json()) == cfg
    assert again.model_dump(mode="json") == dumped
    paths = [k for k, f in cls.model_fields.items() if f.annotation in (Path, Path | None)]
    assert all(isinstance(getattr(again, k), (Path, type(None))) for k in paths)
