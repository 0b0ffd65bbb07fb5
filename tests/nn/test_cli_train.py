"""`fiji-consensus train` end to end on tiny crops of the bundled real sample."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fiji_consensus import datasets  # noqa: E402
from fiji_consensus.cli import main  # noqa: E402

CROP = (slice(256, 384), slice(256, 384))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    sample = datasets.load_sample()
    root = tmp_path_factory.mktemp("train project")
    (root / "images").mkdir()
    for image_id in sample.ids[:3]:
        iio.imwrite(root / "images" / f"{image_id}.png", sample.image(image_id)[CROP])
        masks = sample.masks(image_id)[:, CROP[0], CROP[1]]
        for k, e in enumerate(sample.experts[:3]):
            (root / "annotations" / e).mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / "annotations" / e / f"{image_id}.png", masks[k].astype(np.uint8) * 255)
    return root


TINY = ["--members", "2", "--iterations", "4", "--patch-size", "64", "--batch-size", "2", "--depth", "2",
        "--base-channels", "4", "--validate-every", "2", "--threads", "1", "--no-progress", "--json"]


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_project_and_reload(project, tmp_path, capsys):
    from fiji_consensus.nn.ensemble import load_ensemble

    out = tmp_path / "models" / "tiny"
    code, stdout, err = _run(["train", "--project", str(project), "--out", str(out), *TINY], capsys)
    assert code == 0, err
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["ok"] and len(res["members"]) == 2
    meta = json.loads((out / "ensemble.json").read_text())
    assert meta["provenance"]["experts"] == ["expert_1", "expert_2", "expert_3"]
    assert "staple of 3 experts" in meta["provenance"]["targets"]
    ens = load_ensemble(out)
    img = iio.imread(project / "images" / "0001.png")
    p = ens.predict(img)
    assert p.shape == img.shape and np.all((p >= 0) & (p <= 1))
    # same command again: the finished ensemble is returned, not retrained
    before = (out / "member_0.pt").read_bytes()
    code, stdout, err = _run(["train", "--project", str(project), "--out", str(out), *TINY], capsys)
    assert code == 0, err
    assert (out / "member_0.pt").read_bytes() == before
    # other settings in the same folder: refused with a clear message
    code, stdout, err = _run(["train", "--project", str(project), "--out", str(out), *TINY, "--seed", "7"], capsys)
    assert code == 1 and not json.loads(stdout)["ok"]
    assert str(out) in json.loads(stdout)["error"] or "settings" in json.loads(stdout)["error"]


def test_train_from_labels_folder_and_bad_input(project, tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    for p in (project / "annotations" / "expert_2").iterdir():
        (labels / p.name).write_bytes(p.read_bytes())
    code, stdout, err = _run(["train", "--images", str(project / "images"), "--labels", str(labels),
                              "--out", str(tmp_path / "m"), *TINY, "--zoom", "0.5", "1.3", "--noise", "0.05",
                              "--blur", "1"], capsys)
    assert code == 0, err
    aug = json.loads((tmp_path / "m" / "ensemble.json").read_text())["training"]["augment"]
    assert aug["zoom"] == [0.5, 1.3] and aug["noise"] == 0.05 and aug["blur"] == 1.0
    # a reversed zoom range is a usage error that names the option
    code, stdout, err = _run(["train", "--images", str(project / "images"), "--labels", str(labels),
                              "--out", str(tmp_path / "mz"), *TINY, "--zoom", "1.3", "0.5"], capsys)
    assert code != 0 and "zoom" in json.loads(stdout)["error"]
    # a single expert and no labels: no consensus possible
    code, stdout, err = _run(["train", "--images", str(project / "images"), "--experts",
                              str(project / "annotations" / "expert_1"), "--out", str(tmp_path / "m2"), *TINY],
                             capsys)
    assert code == 1 and "at least 2 expert folders" in json.loads(stdout)["error"]
    # more folds than images
    code, stdout, err = _run(["train", "--images", str(project / "images"), "--labels", str(labels),
                              "--out", str(tmp_path / "m3"), *TINY[:1], "5", *TINY[2:]], capsys)
    assert code == 1 and "fold" in json.loads(stdout)["error"].lower()


def test_predict_command_outputs_resume_and_failures(project, tmp_path, capsys):
    import tifffile

    model = tmp_path / "models" / "m"
    code, stdout, err = _run(["train", "--project", str(project), "--out", str(model), *TINY], capsys)
    assert code == 0, err
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in sorted((project / "images").iterdir())[:2]:
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    args = ["predict", str(inputs), "--model", str(model), "--out", str(out), "--tta", "flips", "--no-progress",
            "--json", "--threads", "1"]
    code, stdout, err = _run(args, capsys)
    res = json.loads(stdout.strip().splitlines()[-1])
    assert code == 1 and res["ok"] is False and res["n_failed"] == 1 and "broken" in res["error"]
    assert res["n_predicted"] == 2
    for image_id in ("0001", "0015"):
        prob = tifffile.imread(out / "probability" / f"{image_id}.tif")
        unc = tifffile.imread(out / "uncertainty" / f"{image_id}.tif")
        assert prob.shape == unc.shape == (128, 128) and prob.dtype == np.float32
        assert 0 <= prob.min() and prob.max() <= 1 and 0 <= unc.min() and unc.max() <= 1
        assert (out / "overlays" / f"{image_id}.tif").is_file() and (out / "rois" / f"{image_id}.zip").is_file()
    # a second run skips what is done and still reports the broken file
    (inputs / "broken.png").unlink()
    code, stdout, err = _run(args, capsys)
    res = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and res["ok"] and res["n_skipped"] == 2 and res["n_predicted"] == 0
