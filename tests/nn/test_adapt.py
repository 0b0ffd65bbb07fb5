"""Label-free adaptation: batch-norm statistics re-estimated on a new lab's images (real crops)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fiji_consensus.config import TrainConfig
from fiji_consensus.nn.adapt import adapt_ensemble, recalibrate_batchnorm
from fiji_consensus.nn.ensemble import load_ensemble
from fiji_consensus.nn.train import train_ensemble


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    lab = shared_data / "lab-wue1"
    ids = ["0001", "0004"]
    ims = [iio.imread(lab / "images" / f"{i}.png")[200:328, 200:328] for i in ids]
    gts = [(iio.imread(lab / "labels" / "est_GT" / f"{i}_cFOS.png")[200:328, 200:328] > 0).astype(np.float32)
           for i in ids]
    out = tmp_path_factory.mktemp("adapt") / "base"
    cfg = TrainConfig(members=2, iterations=3, patch_size=32, batch_size=2, depth=2, base_channels=4,
                      validate_every=3, threads=1)
    train_ensemble(ims, gts, out, cfg, image_ids=ids)
    new = [iio.imread(shared_data / "lab-inns1" / "images" / f"{i}.png")[300:428, 300:428] for i in ("1107", "1108")]
    return out, new


def test_adapted_ensemble_has_new_statistics_and_the_same_weights(tiny, tmp_path):
    base, new = tiny
    out = tmp_path / "adapted"
    adapt_ensemble(base, new, out, image_ids=["1107", "1108"], patch_size=64, patches_per_image=4)
    a, b = load_ensemble(base), load_ensemble(out)
    sa, sb = a.members[0].state_dict(), b.members[0].state_dict()
    stats = [n for n in sa if n.endswith("running_mean") or n.endswith("running_var")]
    learned = [n for n in sa if n.endswith("weight") or n.endswith("bias")]
    assert stats and learned
    assert all(torch.equal(sa[n], sb[n]) for n in learned)  # not a single learned weight changed
    assert any(not torch.allclose(sa[n], sb[n]) for n in stats)  # the statistics are the new lab's
    assert not np.allclose(a.predict(new[0]), b.predict(new[0]))
    prov = json.loads((out / "ensemble.json").read_text())["provenance"]["adaptation"]
    assert prov["images"] == ["1107", "1108"] and prov["patches"] == 8 and "AdaBN" in prov["method"]
    with pytest.raises(FileExistsError, match="not empty"):
        adapt_ensemble(base, new, out)


def test_recalibration_is_the_plain_average_over_patches():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False), torch.nn.BatchNorm2d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    net.eval()  # the mode it had is restored
    ims = [np.full((16, 16), 2.0, np.float32), np.full((16, 16), 4.0, np.float32)]
    n = recalibrate_batchnorm(net, ims, patch_size=16, patches_per_image=1, batch_size=1)
    assert n == 2 and net[1].running_mean.item() == pytest.approx(3.0) and net[1].momentum == 0.1
    assert not net.training
    with pytest.raises(ValueError, match="no batch-normalisation layer"):
        recalibrate_batchnorm(torch.nn.Conv2d(1, 1, 1), ims)


def test_adapt_cli_writes_a_loadable_ensemble_and_refuses_a_used_folder(tiny, tmp_path, capsys):
    from fiji_consensus.cli import main

    base, new = tiny
    src = tmp_path / "new_lab"
    src.mkdir()
    for k, im in enumerate(new):
        iio.imwrite(src / f"img{k}.png", im)
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", str(base), "--images", str(src), "--out", str(out), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["images"] == ["img0", "img1"] and len(load_ensemble(out).members) == 2
    assert main(["adapt", "--model", str(base), "--images", str(src), "--out", str(out)]) != 0
    assert "not empty" in capsys.readouterr().err
    # on the input predict --subtract-background will give the model: other statistics, recorded
    assert main(["adapt", "--model", str(base), "--images", str(src), "--out", str(tmp_path / "bg"),
                 "--subtract-background", "20", "--json"]) == 0
    plain, bg = load_ensemble(out), load_ensemble(tmp_path / "bg")
    assert bg.metadata["provenance"]["adaptation"]["subtract_background"] == 20
    sa, sb = plain.members[0].state_dict(), bg.members[0].state_dict()
    assert any("running_mean" in n and not torch.allclose(sa[n], sb[n]) for n in sa)


def test_calibrated_ensemble_stores_the_best_threshold_of_its_own_predictions(tiny, tmp_path, shared_data):
    from fiji_consensus.calibration import hysteresis_scores, threshold_scores
    from fiji_consensus.instances import foreground
    from fiji_consensus.nn.adapt import calibrate_ensemble
    from fiji_consensus.nn.predict import predict

    base, _ = tiny
    lab = shared_data / "lab-wue1"
    ims = [iio.imread(lab / "images" / f"{i}.png")[400:528, 400:528] for i in ("0006", "0007")]
    refs = [iio.imread(lab / "labels" / "est_GT" / f"{i}_cFOS.png")[400:528, 400:528] > 0 for i in ("0006", "0007")]
    grid = (0.2, 0.35, 0.5, 0.65, 0.8)
    ej, rec = calibrate_ensemble(base, ims, refs, tmp_path / "cal", image_ids=["0006", "0007"], min_size=30,
                                 tta="none", grid=grid)
    ens = load_ensemble(base)
    probs = [predict(ens, im, tta="none").probability for im in ims]
    table = hysteresis_scores(probs, refs, min_size=30, grid=grid)
    top = max(r["roi_f1"] for r in table)
    assert rec["roi_f1"] == pytest.approx(top)
    obj = rec["threshold"] if rec["object_threshold"] is None else rec["object_threshold"]
    assert (rec["threshold"], obj) in [(r["threshold"], r["object_threshold"]) for r in table if r["roi_f1"] == top]
    assert rec["roi_f1_one_threshold"] == pytest.approx(max(r["roi_f1"] for r in threshold_scores(
        probs, refs, min_size=30, grid=grid))) and rec["roi_f1"] >= rec["roi_f1_one_threshold"]
    assert [r["threshold"] for r in rec["table"]] == list(grid)  # per threshold, its best object threshold
    meta = json.loads(ej.read_text())
    cal = load_ensemble(tmp_path / "cal")
    assert meta["threshold"] == rec["threshold"] and cal.threshold == rec["threshold"]
    assert meta.get("object_threshold") == rec["object_threshold"] == cal.object_threshold
    assert meta["provenance"]["calibrations"][0]["images"] == ["0006", "0007"]
    # predict applies both thresholds: its objects are those of the calibrated foreground
    res = predict(cal, ims[0], tta="none", min_size=0)
    assert res.object_threshold == cal.object_threshold
    np.testing.assert_array_equal(res.labels > 0, foreground(res.probability, cal.threshold, cal.object_threshold))
    # an object threshold that differs from the threshold drops whole objects, never pixels of kept ones
    t = float(np.quantile(res.probability, 0.8))
    plain = predict(cal, ims[0], tta="none", min_size=0, threshold=t)  # a threshold alone: the plain one
    n = int(plain.labels.max())
    peaks = [float(res.probability[plain.labels == k].max()) for k in range(1, n + 1)]
    assert plain.object_threshold is None and n >= 2 and max(peaks) > min(peaks)
    s = float(np.median(peaks))
    lo = predict(cal, ims[0], tta="none", min_size=0, threshold=t, object_threshold=s)
    kept = [k for k in range(1, n + 1) if peaks[k - 1] > s]
    assert lo.object_threshold == s and 0 < len(kept) < n and int(lo.labels.max()) == len(kept)
    np.testing.assert_array_equal(lo.labels > 0, np.isin(plain.labels, kept))
    with pytest.raises(ValueError, match="object_threshold must be >= the threshold"):
        predict(cal, ims[0], tta="none", threshold=0.6, object_threshold=0.4)
    sa, sb = ens.members[0].state_dict(), load_ensemble(tmp_path / "cal").members[0].state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)  # weights unchanged
    # with the background subtracted first (as predict --subtract-background will): chosen on that input
    from fiji_consensus.background import subtract_background

    ej_bg, rec_bg = calibrate_ensemble(base, ims, refs, tmp_path / "cal-bg", min_size=30, tta="none", grid=grid,
                                       subtract_background=20, objects=False)  # the one threshold only
    plain = threshold_scores(probs, refs, min_size=30, grid=grid)
    probs = [predict(ens, subtract_background(im, 20), tta="none").probability for im in ims]
    table = threshold_scores(probs, refs, min_size=30, grid=grid)
    assert rec_bg["roi_f1"] == pytest.approx(max(r["roi_f1"] for r in table))
    np.testing.assert_allclose([r["roi_f1"] for r in rec_bg["table"]], [r["roi_f1"] for r in table])  # nan = nan
    assert not np.allclose([r["dice"] for r in rec_bg["table"]], [r["dice"] for r in plain])  # it mattered
    assert rec_bg["subtract_background"] == 20 and rec["subtract_background"] is None
    assert rec_bg["object_threshold"] is None and load_ensemble(ej_bg.parent).object_threshold is None
    with pytest.raises(FileExistsError, match="not empty"):
        calibrate_ensemble(base, ims, refs, tmp_path / "cal")
    with pytest.raises(ValueError, match="one reference per image"):
        calibrate_ensemble(base, ims, refs[:1], tmp_path / "cal2")


def test_calibrate_command_on_a_lab_folder(tiny, tmp_path, shared_data, capsys):
    """`fiji-consensus calibrate` on a lab in the Segebarth layout (images/, labels/expert_*/): the consensus of
    each image's experts is the reference; a bad id is a one-line error."""
    from fiji_consensus.cli import main

    base, _ = tiny
    src = shared_data / "lab-wue1"
    lab = tmp_path / "newlab"
    for sub in ("images", "labels/expert_1", "labels/expert_2", "labels/expert_3"):
        (lab / sub).mkdir(parents=True)
    for iid in ("0011", "0015"):
        iio.imwrite(lab / "images" / f"{iid}.png", iio.imread(src / "images" / f"{iid}.png")[:128, :128])
        for k in (1, 2, 3):
            name = f"{iid}_cFOS.png"
            iio.imwrite(lab / f"labels/expert_{k}" / name, iio.imread(src / f"labels/expert_{k}" / name)[:128, :128])
    assert main(["calibrate", "--model", str(base), "--lab", str(lab), "--out", str(tmp_path / "c"), "--tta", "none",
                 "--min-size", "30", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["ok"] and res["images"] == ["0011", "0015"] and 0 < res["threshold"] < 1
    assert load_ensemble(tmp_path / "c").threshold == res["threshold"]
    assert main(["calibrate", "--model", str(base), "--lab", str(lab), "--out", str(tmp_path / "c-bg"), "--tta",
                 "none", "--min-size", "30", "--subtract-background", "20"]) == 0
    assert "predict with --subtract-background 20 too" in capsys.readouterr().out
    cal = json.loads((tmp_path / "c-bg" / "ensemble.json").read_text())["provenance"]["calibrations"][-1]
    assert cal["subtract_background"] == 20
    assert main(["calibrate", "--model", str(base), "--lab", str(lab), "--out", str(tmp_path / "d"), "--use", "9"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in" in err[0] and "'9'" in err[0]


def test_calibrate_one_of_our_packages(tmp_path, shared_data, capsys):
    """The zoo package cfos-wue1 calibrated on two crops of lab-inns1 (whose experts mark only the brightest
    nuclei): the result is an ensemble folder with the package's members and the chosen threshold."""
    from pathlib import Path

    from fiji_consensus.cli import main

    zip_path = Path(__file__).resolve().parents[2] / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
    src = shared_data / "lab-inns1"
    lab = tmp_path / "inns1"
    experts = sorted(p.name for p in (src / "labels").iterdir() if p.name.startswith("expert_"))
    for sub in ["images", *(f"labels/{e}" for e in experts)]:
        (lab / sub).mkdir(parents=True)
    for iid in ("1107", "1108"):
        iio.imwrite(lab / "images" / f"{iid}.png", iio.imread(src / "images" / f"{iid}.png")[256:512, 256:512])
        for e in experts:
            f = src / "labels" / e / f"{iid}_cFOS.png"
            iio.imwrite(lab / "labels" / e / f.name, iio.imread(f)[256:512, 256:512])
    assert main(["calibrate", "--model", str(zip_path), "--lab", str(lab), "--out", str(tmp_path / "cal"),
                 "--tta", "none", "--min-size", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cal = load_ensemble(tmp_path / "cal")
    assert cal.threshold == res["threshold"] and len(cal.members) == 4
    rec = json.loads((tmp_path / "cal" / "ensemble.json").read_text())["provenance"]["calibrations"][-1]
    assert rec["base_ensemble"].endswith("cfos-wue1.zip") and rec["min_size"] == 16 and rec["images"] == ["1107", "1108"]
    assert rec["roi_f1"] >= max(r["roi_f1"] for r in rec["table"]) - 1e-12
    assert cal.object_threshold == rec["object_threshold"] == res["object_threshold"]
