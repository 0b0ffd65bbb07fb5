"""Multi-lab training, leave-one-lab-out cross-validation and the out-of-domain check, on the real labs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage as ndi

from fiji_consensus.config import TrainConfig
from fiji_consensus.crossval import load_lab, multi_lab_inputs, score_lab
from fiji_consensus.domain import STATISTICS, check, fit_reference, image_stats
from fiji_consensus.nn.data import AugmentConfig, PatchSampler, TrainingImage, smooth_background


def _crop_lab(src: Path, dst: Path, *, n: int, size: int, y0: int = 300, x0: int = 300) -> Path:
    """A small project-layout lab: the first ``n`` images of a real lab, cropped, with its experts' masks."""
    (dst / "images").mkdir(parents=True)
    ids = sorted(p.stem for p in (src / "images").glob("*.png"))[:n]
    experts = sorted(p.name for p in (src / "labels").iterdir() if p.name.startswith("expert_"))
    for iid in ids:
        im = iio.imread(src / "images" / f"{iid}.png")[y0:y0 + size, x0:x0 + size]
        iio.imwrite(dst / "images" / f"{iid}.png", im)
        for e in experts:
            m = iio.imread(src / "labels" / e / f"{iid}_cFOS.png")
            m = (m[..., 0] if m.ndim == 3 else m)[y0:y0 + size, x0:x0 + size]
            (dst / "annotations" / e).mkdir(parents=True, exist_ok=True)
            iio.imwrite(dst / "annotations" / e / f"{iid}.png", ((m > 0) * 255).astype(np.uint8))
    return dst


def _bright_uneven(im: np.ndarray, peak: float = 90.0) -> np.ndarray:
    """A real image with a bright, uneven tissue background added (brighter in the centre, a ramp)."""
    h, w = im.shape
    yy, xx = np.mgrid[:h, :w]
    bump = np.exp(-((yy - 0.5 * h) ** 2 + (xx - 0.55 * w) ** 2) / (2 * (0.3 * max(h, w)) ** 2))
    field = peak * (0.7 * bump + 0.3 * xx / w)
    return np.clip(im.astype(np.float64) + field, 0, 255).astype(np.uint8)


def test_load_lab_reads_both_layouts_with_their_own_experts(shared_data, tmp_path):
    seg = load_lab(shared_data / "lab-mue")
    assert seg.name == "lab-mue" and seg.min_size == 30 and len(seg.ids) == 5
    assert sorted(seg.experts) == ["expert_1", "expert_3", "expert_4", "expert_5"]
    proj = load_lab(_crop_lab(shared_data / "lab-inns1", tmp_path / "inns", n=2, size=64), min_size=7)
    assert proj.min_size == 7 and proj.ids == ["1107", "1108"] and len(proj.experts) == 4
    # the consensus of each image is its own experts' STAPLE (= est_GT on the full images)
    gt = iio.imread(shared_data / "lab-mue" / "labels" / "est_GT" / "1049_cFOS.png") > 0
    assert np.array_equal(seg.consensus("staple")[0] > 0.5, gt)


def test_multi_lab_inputs_keep_experts_apart_and_name_each_image_by_lab(shared_data, tmp_path):
    a = load_lab(_crop_lab(shared_data / "lab-wue1", tmp_path / "wue", n=3, size=48))
    b = load_lab(_crop_lab(shared_data / "lab-inns1", tmp_path / "inns", n=2, size=48), min_size=16)
    kw = multi_lab_inputs([a, b], "fraction")
    assert kw["image_ids"] == ["wue/0001", "wue/0004", "wue/0006", "inns/1107", "inns/1108"]
    assert kw["labs"]["inns/1107"] == "inns" and kw["min_sizes"]["inns/1107"] == 16
    # expert_1 of one lab is not expert_1 of the other: each is None on the other lab's images
    e = kw["expert_masks"]
    assert "wue/expert_2" in e and "inns/expert_1" in e and "expert_1" not in e
    assert [m is None for m in e["wue/expert_1"]] == [False, False, False, True, True]
    assert [m is None for m in e["inns/expert_1"]] == [True, True, True, False, False]
    with pytest.raises(ValueError, match="lab names must be unique"):
        multi_lab_inputs([a, a], "fraction")


def test_sampler_draws_labs_equally_often_with_lab_weights():
    rng = np.random.default_rng(0)
    ims = []
    for k in range(10):  # one image of lab A, nine of lab B
        t = (rng.random((32, 32)) > 0.8).astype(np.float32)
        im = TrainingImage.prepare(f"{k}", rng.random((32, 32), dtype=np.float32), t, np.ones((32, 32), np.float32))
        im.sample_weight = 1.0 if k == 0 else 1.0 / 9
        ims.append(im)
    s = PatchSampler(ims, patch_size=16, seed=1, augment=AugmentConfig(affine_p=0, gamma=0, contrast=0, brightness=0))
    drawn = [s._cdf is not None]
    counts = {"A": 0, "B": 0}
    for _ in range(2000):
        i = min(int(np.searchsorted(s._cdf, s.rng.random(), side="right")), len(ims) - 1)
        counts["A" if i == 0 else "B"] += 1
    assert drawn == [True]
    assert 0.45 < counts["A"] / 2000 < 0.55  # unweighted it would be 0.10
    with pytest.raises(ValueError, match="sample weights must be finite and > 0"):
        ims[0].sample_weight = 0.0
        PatchSampler(ims, patch_size=16, seed=1)


def test_lab_weights_set_each_labs_share_of_the_patches():
    """Rehearsal: a new lab weighted 2 next to two labs of weight 1 gets half the patches; unknown lab
    names and non-positive weights are one-line errors; the fingerprint ignores the field at its default."""
    from fiji_consensus.nn._run import _check_run, _prepare_images

    rng = np.random.default_rng(0)
    ids = ["new/1", "new/2", "a/1", "a/2", "a/3", "b/1"]
    labs = {i: i.split("/")[0] for i in ids}
    imgs = [rng.random((32, 32), dtype=np.float32) for _ in ids]
    tgts = [(rng.random((32, 32)) > 0.8).astype(np.float32) for _ in ids]
    cfg = TrainConfig(members=1, split="all", iterations=1, patch_size=16, depth=2, lab_weights={"new": 2})

    def shares(config):
        run = _check_run(imgs, tgts, config, image_ids=ids, ignore=None, groups=None, expert_masks=None,
                         init=None, labs=labs, min_sizes=None)
        w = {i: im.sample_weight for i, im in _prepare_images(run).prepared.items()}
        return {lab: sum(v for i, v in w.items() if labs[i] == lab) / sum(w.values()) for lab in ("new", "a", "b")}, run

    got, run = shares(cfg)
    assert got == pytest.approx({"new": 0.5, "a": 0.25, "b": 0.25})
    plain, plain_run = shares(cfg.model_copy(update={"lab_weights": {}}))
    assert plain == pytest.approx({"new": 1 / 3, "a": 1 / 3, "b": 1 / 3})
    assert run.fingerprint != plain_run.fingerprint
    with pytest.raises(ValueError, match=r"lab weights name \['c'\], which are not among the labs \['a', 'b', 'new'\]"):
        shares(cfg.model_copy(update={"lab_weights": {"c": 2.0}}))
    with pytest.raises(ValueError, match=r"lab weights must be positive numbers; got \{'a': 0.0\}"):
        TrainConfig(iterations=1, lab_weights={"a": 0})


def test_background_augmentation_adds_a_smooth_field_reproducibly():
    f = smooth_background((64, 64), np.random.default_rng(3))
    assert f.min() >= 0 and f.max() == pytest.approx(1.0)
    assert np.abs(np.diff(f, axis=0)).max() < 0.1  # smooth: no step between neighbours
    t = np.zeros((64, 64), np.float32)
    t[20:30, 20:30] = 1
    im = TrainingImage.prepare("a", np.full((64, 64), 0.1, np.float32), t, np.ones((64, 64), np.float32))
    aug = AugmentConfig(flip=False, rotate90=False, affine_p=0, gamma=0, contrast=0, brightness=0, background=0.8)
    p1 = [PatchSampler([im], patch_size=32, seed=5, augment=aug)._one()["image"] for _ in range(1)]
    s = PatchSampler([im], patch_size=32, seed=5, augment=aug)
    patches = [s._one()["image"] for _ in range(20)]
    assert np.array_equal(p1[0], patches[0])  # same seed, same field
    changed = [p for p in patches if np.ptp(p) > 1e-6]
    assert changed and max(np.ptp(p) for p in changed) <= 0.8 * 1.1 + 1e-6
    off = AugmentConfig(flip=False, rotate90=False, affine_p=0, gamma=0, contrast=0, brightness=0)
    assert all(np.ptp(PatchSampler([im], patch_size=32, seed=5, augment=off)._one()["image"]) < 1e-6 for _ in range(3))


def test_renormalized_background_lowers_the_objects_contrast_like_the_image_normalisation():
    t = np.zeros((64, 64), np.float32)
    t[20:40, 20:40] = 1
    img = np.where(t > 0, 1.0, 0.1).astype(np.float32)  # objects at 1 on a background at 0.1 (normalised scale)
    im = TrainingImage.prepare("a", img, t, np.ones((64, 64), np.float32))
    kw = dict(flip=False, rotate90=False, affine_p=0, gamma=0, contrast=0, brightness=0, background=1.0)
    ratios = []
    for seed in range(40):  # the first patch of each seed: the same field with and without renormalising
        plain = PatchSampler([im], patch_size=64, seed=seed, augment=AugmentConfig(**kw))._one()["image"]
        renorm = PatchSampler([im], patch_size=64, seed=seed,
                              augment=AugmentConfig(**kw, background_renormalize=True))._one()["image"]
        r = plain / renorm
        assert np.allclose(r, r.flat[0], rtol=1e-5)  # one factor for the whole patch: contrast scaled, not reshaped
        ratios.append(float(r.flat[0]))
    ratios = np.array(ratios)
    # patches without a field are untouched; with one of peak p the patch is divided by 1 + (0.5-1) p, p <= 1
    assert (ratios == 1.0).sum() >= 8 and (ratios > 1.05).sum() >= 8 and ratios.min() >= 1.0 and ratios.max() <= 2.0
    # the default leaves it out, so the recipes and fingerprints of earlier runs stay as they were
    assert "background_renormalize" not in AugmentConfig(**kw).model_dump(exclude_defaults=True)


def test_score_lab_places_the_model_among_the_experts(shared_data):
    lab = load_lab(shared_data / "lab-mue")
    cons = lab.consensus("staple")
    # a "model" that is exactly the consensus is above every expert; an empty one is below the worst
    rows = score_lab(cons, lab, threshold=0.5)
    model = [r for r in rows if r["kind"] == "model"]
    assert [r["standing"] for r in model] == ["above"] * 5 and all(r["roi_f1"] == 1.0 for r in model)
    rows = score_lab([np.zeros_like(c) for c in cons], lab, threshold=0.5)
    assert {r["standing"] for r in rows if r["kind"] == "model"} == {"below"}
    assert sum(r["kind"] == "expert" for r in rows) == 20


def test_out_of_domain_fires_on_a_bright_uneven_background_not_on_training_images(shared_data):
    stats, images = [], []
    for name in ("lab-wue1", "lab-mue", "lab-inns1"):
        lab = load_lab(shared_data / name)
        for im, c in zip(lab.images, lab.consensus("staple")):
            stats.append(image_stats(im, c > 0.5))
            images.append((im, c > 0.5))
    ref = fit_reference(stats)
    assert all(check(s, ref) == [] for s in stats)  # no image of the training labs is flagged
    im, fg = images[0]
    bright = _bright_uneven(im)
    flags = check(image_stats(bright, fg), ref)
    assert "background_unevenness" in [f["statistic"] for f in flags]
    # the model in the issue marked 10-22 % of such images as nuclei: that is flagged too
    over = bright > np.percentile(bright, 85)
    assert "foreground_fraction" in [f["statistic"] for f in check(image_stats(bright, over), ref)]
    # tissue texture at the nuclei's scale survives the rolling ball; the smooth field does not
    from fiji_consensus.background import subtract_background

    assert "background_texture" not in [f["statistic"] for f in flags]
    smooth = subtract_background(bright, 30)
    assert check(image_stats(smooth, fg), ref) == []
    rng = np.random.default_rng(1)
    tissue = ndi.gaussian_filter(rng.normal(size=im.shape), 6.0)
    textured = np.clip(bright + 10 * tissue / tissue.std(), 0, 255).astype(np.uint8)
    flags = check(image_stats(subtract_background(textured, 30), fg), ref)
    assert [f["statistic"] for f in flags] == ["background_texture"] and flags[0]["direction"] == "above"
    with pytest.raises(ValueError, match="same shape"):
        image_stats(im, fg[:10])


def test_crossval_and_multi_lab_train_cli_then_predict_warns_out_of_domain(shared_data, tmp_path, capsys):
    from fiji_consensus.cli import main

    a = _crop_lab(shared_data / "lab-mue", tmp_path / "lab-a", n=2, size=96)
    b = _crop_lab(shared_data / "lab-inns1", tmp_path / "lab-b", n=2, size=96)
    tiny = ["--members", "1", "--folds", "2", "--iterations", "2", "--patch-size", "32", "--batch-size", "2",
            "--depth", "2", "--base-channels", "4", "--validate-every", "2", "--threads", "1", "--no-progress"]
    out = tmp_path / "cv"
    assert main(["crossval", "--lab", str(a), "--lab", str(b), "--lab-min-size", "lab-b=16", "--tta", "none",
                 "--out", str(out), *tiny]) == 0
    rows = list(csv.DictReader(open(out / "crossval.csv", encoding="utf-8")))
    assert {r["lab"] for r in rows} == {"lab-a", "lab-b"}
    assert sum(r["rater"] == "model" for r in rows) == 4 and sum(r["kind"] == "expert" for r in rows) == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labs"]["lab-b"]["train_labs"] == ["lab-a"]
    # each fold's ensemble records the labs it was trained on and the training range of the image statistics
    ej = json.loads((out / "without_lab-b" / "model" / "ensemble.json").read_text())
    assert ej["provenance"]["labs"] == {"lab-a": ["lab-a/1049", "lab-a/1051"]}
    assert ej["domain"]["statistics"]["background_level"]["n"] == 2
    # a rerun resumes: nothing is trained again and the table is the same
    assert main(["crossval", "--lab", str(a), "--lab", str(b), "--lab-min-size", "lab-b=16", "--tta", "none",
                 "--out", str(out), *tiny]) == 0
    assert list(csv.DictReader(open(out / "crossval.csv", encoding="utf-8"))) == rows

    # multi-lab train: both labs, balanced, recorded
    model = tmp_path / "model"
    assert main(["train", "--lab", str(a), "--lab", str(b), "--targets", "fraction", "--out", str(model),
                 *tiny]) == 0
    ej = json.loads((model / "ensemble.json").read_text())
    assert sorted(ej["provenance"]["labs"]) == ["lab-a", "lab-b"] and ej["provenance"]["balance_labs"] is True
    assert ej["provenance"]["lab_weights"] is None
    weighted = tmp_path / "weighted"
    assert main(["train", "--lab", str(a), "--lab", str(b), "--lab-weight", "lab-b=3", "--out", str(weighted),
                 *tiny]) == 0
    assert json.loads((weighted / "ensemble.json").read_text())["provenance"]["lab_weights"] == {"lab-b": 3.0}
    # fine-tuning a new lab (a project folder) with rehearsal of the model's two labs: the new lab gets half
    # the patches (weight 2 against 1 + 1), every rehearsed image is trained on, the labs are recorded
    new_lab = _crop_lab(shared_data / "lab-wue1", tmp_path / "new-lab", n=2, size=96)
    rehearsed = tmp_path / "rehearsed"
    # (tmp_path: a folder of labs, of which those the model was trained on are rehearsed, not new-lab)
    assert main(["train", "--project", str(new_lab), "--init", str(model), "--rehearse", str(tmp_path),
                 "--split", "all", "--targets", "fraction", "--out", str(rehearsed), *tiny]) == 0
    ej = json.loads((rehearsed / "ensemble.json").read_text())
    assert ej["provenance"]["lab_weights"] == {"new-lab": 2.0}
    assert sorted(ej["provenance"]["labs"]) == ["lab-a", "lab-b", "new-lab"]
    assert len(ej["members"][0]["train_ids"]) == 6 and ej["training"]["learning_rate"] == 5e-4
    others = _crop_lab(shared_data / "lab-mue", tmp_path / "others" / "lab-c", n=1, size=32).parent
    for bad, said in ((["--project", str(new_lab)], "give that model as init"),
                      (["--images", str(new_lab / "images"), "--experts",
                        *map(str, (new_lab / "annotations").iterdir()), "--init", str(model)], "needs the new images as a project folder or lab folders"),
                      (["--project", str(a), "--init", str(model)], "names the new lab(s) ['lab-a'] itself"),
                      (["--project", str(new_lab), "--init", str(model), "--rehearse", str(out)],
                       "neither a lab folder"),
                      (["--project", str(new_lab), "--init", str(model), "--rehearse", str(others)],
                       "holds none of the labs the model was trained on (lab-a, lab-b); it holds lab-c")):
        capsys.readouterr()
        rehearse = [] if "--rehearse" in bad else ["--rehearse", str(a), str(b)]
        code = main(["train", *bad, *rehearse, "--out", str(tmp_path / "bad"), *tiny])
        err = capsys.readouterr().err
        assert code == 1 and said in err and len(err.strip().splitlines()) == 1, (bad, err)
    assert not (tmp_path / "bad").exists()

    # predict: the same image with a bright, uneven background is flagged as out of domain
    src = tmp_path / "new"
    src.mkdir()
    im = iio.imread(a / "images" / "1049.png")
    iio.imwrite(src / "clean.png", im)
    iio.imwrite(src / "bright.png", _bright_uneven(im, peak=120.0))
    pred = tmp_path / "pred"
    assert main(["predict", str(src), "--model", str(model), "--out", str(pred), "--tta", "none",
                 "--no-progress", "--json"]) == 0
    table = {r["image"]: r for r in csv.DictReader(open(pred / "images.csv", encoding="utf-8"))}
    assert "background_unevenness" in table["bright"]["out_of_domain"].split()
    assert "background_unevenness" not in table["clean"]["out_of_domain"].split()
    assert json.loads((pred / "summary.json").read_text())["out_of_domain"][0] == "bright"


def test_the_multi_lab_zoo_package_carries_its_training_range(shared_data):
    """cfos-3labs stores the range of the image statistics it was trained on; predict reads it from the package
    (Package.metadata) and flags a bright, uneven image, not a training image."""
    from fiji_consensus import zoo
    from fiji_consensus.models import load_model
    from fiji_consensus.predict import _domain_flags

    path = Path(__file__).resolve().parents[1] / "model_zoo" / "cfos-3labs" / "cfos-3labs.zip"
    pkg = zoo.load_package(path)
    model = load_model(path)  # what the predict job reads the range from
    try:
        ref = pkg.metadata["domain"]
        assert set(ref["statistics"]) == set(STATISTICS)  # every statistic this version checks
        assert ref["statistics"]["foreground_fraction"]["n"] == ref["statistics"]["background_texture"]["n"] == 46
        # read back as an ensemble (train --init, repackaging), the range comes along
        assert zoo.ensemble_from_package(path).metadata["domain"] == ref
        lab = load_lab(shared_data / "lab-inns1")
        im, fg = lab.images[0], lab.consensus("staple")[0] > 0.5
        assert _domain_flags(model, im, fg) == []
        assert "background_unevenness" in [f["statistic"] for f in _domain_flags(model, _bright_uneven(im), fg)]
    finally:
        pkg.close()
        for m in model.members:
            getattr(m, "close", lambda: None)()
