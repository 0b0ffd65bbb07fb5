"""Fault injection (issue 17): bad inputs, kills, reruns and foreign code, each tried on real data.

Every case uses small crops of the real lab-wue1 images and expert masks (data/segebarth2020) and goes
through the same door a user does (the CLI, or the job function the macros call). A case passes when the
fault is refused with one line naming the file (and what was wrong), or handled explicitly, and nothing a
user made is lost or looks finished when it is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from fiji_consensus import io as fio
from fiji_consensus.cli import main

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "data" / "segebarth2020" / "lab-wue1"
EXPERTS = ["expert_1", "expert_2", "expert_3"]
#: 96-px windows with several nuclei each (image id -> top-left corner)
WINDOWS = {"0001": (320, 384), "0015": (320, 320), "0092": (832, 576)}
SIZE = 96


def _mask(path: Path) -> np.ndarray:
    m = iio.imread(path)
    return (m[..., 0] if m.ndim == 3 else m) > 0


def _crop_project(root: Path, windows: dict[str, tuple[int, int]] = WINDOWS) -> dict[str, Path]:
    """images/<id>.tif and <expert>/<id>_cFOS.png crops of the real lab-wue1 data."""
    (root / "images").mkdir(parents=True)
    for iid, (y, x) in windows.items():
        win = np.s_[y : y + SIZE, x : x + SIZE]
        tifffile.imwrite(root / "images" / f"{iid}.tif", iio.imread(LAB / "images" / f"{iid}.png")[win])
        for e in EXPERTS:
            (root / e).mkdir(exist_ok=True)
            m = _mask(LAB / "labels" / e / f"{iid}_cFOS.png")[win]
            iio.imwrite(root / e / f"{iid}_cFOS.png", m.astype(np.uint8) * 255)
    return {"images": root / "images", **{e: root / e for e in EXPERTS}}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _error_line(err: str) -> str:
    """The CLI's error: exactly one line on stderr starting with 'fiji-consensus <command>: error:'."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert " error: " in lines[0]
    return lines[0]


TINY = ["--members", "2", "--iterations", "4", "--validate-every", "4", "--patch-size", "48", "--batch-size", "2",
        "--depth", "2", "--base-channels", "4", "--threads", "1", "--device", "cpu", "--no-progress", "-q"]


def _agreement_argv(p: dict[str, Path]) -> list[str]:
    return ["agreement", "--images", str(p["images"]), "--experts", *(str(p[e]) for e in EXPERTS), "--no-progress"]


def _train_argv(p: dict[str, Path], out: Path) -> list[str]:
    return ["train", "--images", str(p["images"]), "--experts", *(str(p[e]) for e in EXPERTS), "--out", str(out),
            *TINY]


# --------------------------------------------------------------------------------------------- reading


def test_multi_page_tiff_is_refused_as_image_and_as_mask(tmp_path, capsys):
    p = _crop_project(tmp_path)
    img = tifffile.imread(p["images"] / "0001.tif")
    m = _mask(p["expert_1"] / "0001_cFOS.png").astype(np.uint8) * 255
    with tifffile.TiffWriter(tmp_path / "two.tif") as tw:  # two series, as two imwrite calls make
        tw.write(m)
        tw.write(np.zeros_like(m))
    (p["expert_1"] / "0001_cFOS.png").unlink()
    (tmp_path / "two.tif").rename(p["expert_1"] / "0001_cFOS.tif")
    code, _, err = _run(_agreement_argv(p), capsys)
    line = _error_line(err)
    assert code == 1 and "0001_cFOS.tif holds 2 images" in line and "expected one 2-D image" in line
    # as an image, for prediction and for the experts' jobs
    with tifffile.TiffWriter(tmp_path / "img2.tif") as tw:
        tw.write(img)
        tw.write(img[:50])
    from fiji_consensus.predict import ImageInputError, read_input

    with pytest.raises(ImageInputError, match=r"img2.tif holds 2 images .*\(96, 96\), \(50, 96\)"):
        read_input(tmp_path / "img2.tif")
    with pytest.raises(fio.AnnotationError, match="img2.tif holds 2 images"):
        fio.read_image(tmp_path / "img2.tif")


def test_rgba_mask_with_the_annotation_only_in_alpha_is_read_from_alpha(tmp_path):
    truth = _mask(LAB / "labels" / "expert_2" / "0001_cFOS.png")[320:416, 384:480]
    assert truth.sum() > 100
    rgba = np.zeros((*truth.shape, 4), np.uint8)
    rgba[..., 3] = truth * 255  # black everywhere, opaque where annotated
    iio.imwrite(tmp_path / "alpha.png", rgba)
    np.testing.assert_array_equal(fio.read_mask(tmp_path / "alpha.png", truth.shape), truth)
    # grey+alpha marking the same pixels: the grey values; marking different pixels: refused, not guessed
    rgba[..., :3] = (truth * 255)[..., None]
    iio.imwrite(tmp_path / "same.png", rgba)
    np.testing.assert_array_equal(fio.read_mask(tmp_path / "same.png", truth.shape), truth)
    rgba[..., 3] = np.roll(truth, 20, axis=1) * 255
    iio.imwrite(tmp_path / "differ.png", rgba)
    with pytest.raises(fio.AnnotationError, match="differ.png has an alpha channel .* ambiguous"):
        fio.read_mask(tmp_path / "differ.png", truth.shape)


def test_zero_byte_mask_is_one_line_naming_the_file(tmp_path, capsys):
    p = _crop_project(tmp_path)
    (p["expert_3"] / "0015_cFOS.png").write_bytes(b"")
    code, _, err = _run(_agreement_argv(p), capsys)
    line = _error_line(err)
    assert code == 1 and "0015_cFOS.png is empty (0 bytes)" in line and "expert_3" in line
    (p["expert_3"] / "0015_cFOS.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = _run(_agreement_argv(p), capsys)
    assert code == 1 and "cannot read" in _error_line(err) and "0015_cFOS.png" in err


def test_non_utf8_groups_csv_names_the_file(tmp_path, capsys):
    p = _crop_project(tmp_path)
    groups = tmp_path / "groups.csv"
    groups.write_bytes("file_id,group\n0001,Kontrolle\n0015,M\xe4use\n0092,M\xe4use\n".encode("latin-1"))
    code, _, err = _run([*_train_argv(p, tmp_path / "model"), "--groups", str(groups)], capsys)
    line = _error_line(err)
    assert code == 1 and "groups.csv is not UTF-8 text (byte 0xe4" in line
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").glob("*.pt"))


# --------------------------------------------------------------------------------------------- training


def test_nan_pixel_in_a_training_image_is_refused_naming_file_and_count(tmp_path, capsys):
    p = _crop_project(tmp_path)
    img = tifffile.imread(p["images"] / "0015.tif").astype(np.float32)
    img[5, 7] = np.nan
    img[50, 60] = np.inf
    tifffile.imwrite(p["images"] / "0015.tif", img)
    out = tmp_path / "model"
    code, _, err = _run(_train_argv(p, out), capsys)
    line = _error_line(err)
    assert code == 1 and "0015.tif has 2 NaN or infinite pixel(s)" in line
    assert not (out / "ensemble.json").exists() and not list(out.glob("**/*.pt"))
    # the Python API refuses it too (with the id), before any training
    torch = pytest.importorskip("torch")  # noqa: F841
    from fiji_consensus.nn.train import TrainConfig, train_ensemble

    t = np.zeros(img.shape, np.float32)
    t[10:20, 10:20] = 1
    with pytest.raises(ValueError, match=r"images\[0\] \(id '0015'\) has 2 NaN or infinite"):
        train_ensemble([img], [t], tmp_path / "api", TrainConfig(members=1, iterations=2, split="all"),
                       image_ids=["0015"])
    # the corrected rerun in the same folder needs no --overwrite (a failed run binds nothing)
    tifffile.imwrite(p["images"] / "0015.tif", np.nan_to_num(img, posinf=0).astype(np.uint8))
    code, _, err = _run(_train_argv(p, out), capsys)
    assert code == 0, err
    meta = json.loads((out / "ensemble.json").read_text())
    assert len(meta["members"]) == 2 and all(m["selected"] for m in meta["members"])


def test_member_whose_loss_becomes_non_finite_is_stopped_not_selected(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from fiji_consensus.nn import train as T

    p = _crop_project(tmp_path)
    images = [tifffile.imread(p["images"] / f"{i}.tif") for i in WINDOWS]
    targets = [_mask(p["expert_1"] / f"{i}_cFOS.png").astype(np.float32) for i in WINDOWS]
    real_loss, calls = T.masked_bce_dice_loss, []

    def diverging(*a, **k):  # the loss of the real network, turning NaN at the 3rd iteration
        loss = real_loss(*a, **k)
        calls.append(1)
        return loss * torch.tensor(float("nan")) if len(calls) == 3 else loss

    monkeypatch.setattr(T, "masked_bce_dice_loss", diverging)
    cfg = T.TrainConfig(members=2, iterations=6, validate_every=3, checkpoint_every=2, patch_size=48, batch_size=2,
                        depth=2, base_channels=4, device="cpu", threads=1)
    out = tmp_path / "model"
    with pytest.raises(FloatingPointError, match="member 0: the training loss became nan at iteration 3"):
        T.train_ensemble(images, targets, out, cfg, image_ids=list(WINDOWS))
    assert not (out / "ensemble.json").exists() and not (out / "member_0.pt").exists()


def test_train_never_writes_into_a_folder_it_did_not_make(tmp_path, capsys):
    p = _crop_project(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "member_0.pt").write_bytes(b"a user's weights")
    for extra in ([], ["--overwrite"]):
        code, _, err = _run([*_train_argv(p, out), *extra], capsys)
        line = _error_line(err)
        assert code == 1 and "holds files that `train` did not write (member_0.pt)" in line
    assert sorted(x.name for x in out.iterdir()) == ["member_0.pt"]
    assert (out / "member_0.pt").read_bytes() == b"a user's weights"
    # predict's folder is not train's either
    code, _, err = _run(_train_argv(p, tmp_path / "model"), capsys)
    assert code == 0, err
    pred = tmp_path / "pred"
    code, _, err = _run(["predict", str(p["images"]), "--model", str(tmp_path / "model"), "--out", str(pred),
                         "--no-progress", "-q", "--tta", "none"], capsys)
    assert code == 0, err
    code, _, err = _run(_train_argv(p, pred), capsys)
    assert code == 1 and "holds outputs of `predict`" in _error_line(err)


# --------------------------------------------------------------------------------------------- kills and reruns


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ensemble trained by the CLI on the real crops (shared by the tests below)."""
    root = tmp_path_factory.mktemp("trained")
    p = _crop_project(root / "project")
    assert main(_train_argv(p, root / "model")) == 0
    return p, root / "model"


_KILL_AFTER_FIRST_WRITES = """
import os, sys
import fiji_consensus.rois as R
from fiji_consensus.config import PredictConfig
from fiji_consensus.predict import run_predict
R.write_roiset = lambda *a, **k: os._exit(9)   # SIGKILL-like: no cleanup runs, after 3 outputs were written
run_predict(PredictConfig(model=sys.argv[1], inputs=[sys.argv[2]], out=sys.argv[3], tta="none"))
"""


def test_a_kill_mid_image_leaves_nothing_that_looks_finished_and_rerun_cleans(trained, tmp_path, capsys):
    p, model = trained
    out = tmp_path / "pred"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", _KILL_AFTER_FIRST_WRITES, str(model), str(p["images"]), str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr
    parts = sorted(x.name for x in out.rglob(".*.part"))
    assert parts, "the killed writer should have left its temporary files"
    visible = [x for x in out.rglob("*") if x.is_file() and not x.name.startswith(".") and x.name != "config.json"]
    assert visible == [], f"a killed image left files that look finished: {visible}"
    # the rerun predicts everything, removes the temporary files and leaves a complete folder
    code, _, err = _run(["predict", str(p["images"]), "--model", str(model), "--out", str(out), "--tta", "none",
                         "--no-progress", "-q"], capsys)
    assert code == 0, err
    assert list(out.rglob("*.part")) == []
    for iid in WINDOWS:
        for sub, suffix in [("probability", ".tif"), ("uncertainty", ".tif"), ("labels", ".tif"), ("rois", ".zip"),
                            ("overlays", ".tif"), ("objects", ".csv"), ("per_image", ".json")]:
            assert (out / sub / f"{iid}{suffix}").is_file(), (sub, iid)


def test_overwrite_clears_the_previous_predictions_and_temp_files_of_training_go(trained, tmp_path, capsys):
    p, model = trained
    out = tmp_path / "pred"
    args = [str(p["images"]), "--model", str(model), "--out", str(out), "--tta", "none", "--no-progress", "-q"]
    assert _run(["predict", *args], capsys)[0] == 0
    (p["images"] / "0092.tif").rename(tmp_path / "0092.tif")  # the next run is given fewer images
    try:
        code, _, err = _run(["predict", *args, "--overwrite"], capsys)
    finally:
        (tmp_path / "0092.tif").rename(p["images"] / "0092.tif")
    assert code == 0, err
    assert sorted(x.stem for x in (out / "probability").iterdir()) == ["0001", "0015"]
    assert sorted(x.stem for x in (out / "per_image").iterdir()) == ["0001", "0015"]
    # a temporary checkpoint a killed (Dask) worker left is removed by the next training run
    import shutil

    model2 = tmp_path / "model"
    shutil.copytree(model, model2)
    (model2 / "checkpoints").mkdir(exist_ok=True)
    stale = model2 / "checkpoints" / ".member_0.pt.k2j4x9_q.part"
    stale.write_bytes(b"\0" * 2048)
    assert main(_train_argv(p, model2)) == 0  # the same ensemble: nothing to train, and cleaned
    assert not stale.exists()


# --------------------------------------------------------------------------------------------- foreign code


def _foreign_state_dict_package(tmp: Path, marker: Path) -> Path:
    """A foreign bioimage.io package whose only weights are pytorch_state_dict; its architecture file
    appends a line to ``marker`` when it is imported (to see whether it ran)."""
    torch = pytest.importorskip("torch")
    from bioimageio.spec.model import v0_5 as bm

    d = tmp / "foreign"
    d.mkdir()
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid())
    img = iio.imread(LAB / "images" / "0001.png")[320:352, 384:416].astype(np.float32)[None, None] / 255
    with torch.no_grad():
        y = net(torch.from_numpy(img)).numpy()
    np.save(d / "in.npy", img)
    np.save(d / "out.npy", y)
    (d / "README.md").write_text("# Foreign\n")
    torch.save(net.state_dict(), d / "sd.pt")
    (d / "arch.py").write_text(
        f"open({str(marker)!r}, 'a').write('ran\\n')\nimport torch\n\ndef Net():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Sigmoid())\n"
    )

    def axes(out: bool) -> list:
        ref = lambda a: bm.SizeReference(tensor_id=bm.TensorId("raw"), axis_id=bm.AxisId(a))  # noqa: E731
        return [bm.BatchAxis(), bm.ChannelAxis(channel_names=[bm.Identifier("c0")])] + [
            (bm.SpaceOutputAxis(id=bm.AxisId(a), size=ref(a)) if out
             else bm.SpaceInputAxis(id=bm.AxisId(a), size=bm.ParameterizedSize(min=16, step=16))) for a in "yx"]

    from fiji_consensus.zoo import _quiet_bioimageio

    with _quiet_bioimageio():
        descr = _descr(bm, d, axes)
    return _save(descr, tmp)


def _descr(bm, d, axes):
    return bm.ModelDescr(
        name="foreign-sd", description="a foreign model", authors=[bm.Author(name="someone")],
        cite=[bm.CiteEntry(text="someone", doi=bm.Doi("10.7554/eLife.59780"))], license=bm.LicenseId("MIT"),
        documentation=bm.FileDescr(source=d / "README.md"),
        inputs=[bm.InputTensorDescr(id=bm.TensorId("raw"), axes=axes(False), test_tensor=bm.FileDescr(source=d / "in.npy"))],
        outputs=[bm.OutputTensorDescr(id=bm.TensorId("fg"), axes=axes(True), test_tensor=bm.FileDescr(source=d / "out.npy"))],
        weights=bm.WeightsDescr(pytorch_state_dict=bm.PytorchStateDictWeightsDescr(
            source=d / "sd.pt", pytorch_version=bm.Version("2.0"),
            architecture=bm.ArchitectureFromFileDescr(source=d / "arch.py", callable=bm.Identifier("Net")))),
    )


def _save(descr, tmp: Path) -> Path:
    from bioimageio.spec import save_bioimageio_package

    from fiji_consensus.zoo import _quiet_bioimageio

    with _quiet_bioimageio():
        return save_bioimageio_package(descr, output_path=tmp / "foreign-sd.zip")


def test_package_that_runs_its_own_code_needs_trust_code(trained, tmp_path, capsys):
    pytest.importorskip("bioimageio.core")
    from fiji_consensus import zoo

    p, _ = trained
    marker = tmp_path / "code_ran.txt"
    pkg = _foreign_state_dict_package(tmp_path, marker)
    out = tmp_path / "pred"
    argv = ["predict", str(p["images"] / "0001.tif"), "--model", str(pkg), "--out", str(out), "--no-progress", "-q",
            "--tta", "flips"]
    code, _, err = _run(argv, capsys)
    line = _error_line(err)
    assert code == 1 and "would run its own Python code (arch.py:Net)" in line and "--trust-code" in line
    assert str(pkg) in line and not marker.exists()
    with pytest.raises(PermissionError, match="trust_code=True"):
        zoo.load_package(pkg)
    assert not marker.exists()
    # opted in: it runs (and the run says so)
    code, _, err = _run([*argv, "--trust-code"], capsys)
    assert code == 0, err
    assert marker.exists() and (out / "probability" / "0001.tif").is_file()
    rec = json.loads((out / "per_image" / "0001.json").read_text())
    assert rec["packages"][0]["executes_code"] is True


def test_refused_pickle_and_invalid_package_are_one_line(trained, tmp_path, capsys):
    import shutil

    torch = pytest.importorskip("torch")
    p, model = trained
    evil_model = tmp_path / "evil"
    shutil.copytree(model, evil_model)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Evil()}, evil_model / "member_0.pt")
    meta = json.loads((evil_model / "ensemble.json").read_text())
    from fiji_consensus.nn.ensemble import sha256_file

    meta["members"][0]["sha256"] = sha256_file(evil_model / "member_0.pt")
    (evil_model / "ensemble.json").write_text(json.dumps(meta))
    code, _, err = _run(["predict", str(p["images"]), "--model", str(evil_model), "--out", str(tmp_path / "o"),
                         "--no-progress", "-q"], capsys)
    line = _error_line(err)
    assert code == 1 and line.count("refusing to unpickle") == 1 and "member_0.pt" in line
    assert "can run code" in line and "weights_only" not in err and "False" not in err
    assert not marker.exists()
    # an invalid bioimage.io description: one line naming the field and the file
    pytest.importorskip("bioimageio.core")
    import zipfile

    bad = tmp_path / "bad.zip"
    pkg = _foreign_state_dict_package(tmp_path, tmp_path / "m")
    with zipfile.ZipFile(pkg) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "rdf.yaml":
                data = data.replace(b"license: MIT", b"license: NOT-A-LICENCE")
            zout.writestr(item, data)
    code, _, err = _run(["predict", str(p["images"]), "--model", str(bad), "--out", str(tmp_path / "o2"),
                         "--no-progress", "-q", "--trust-code"], capsys)
    line = _error_line(err)
    assert code == 1 and "bad.zip is not a valid bioimage.io description: field license" in line


def test_a_failed_prediction_run_binds_nothing(trained, tmp_path, capsys):
    p, model = trained
    out = tmp_path / "pred"
    base = ["predict", str(p["images"]), "--model", str(model), "--out", str(out), "--no-progress", "-q"]
    code, _, err = _run([*base, "--channel", "2"], capsys)  # a wrong setting: every image fails
    assert code == 1 and "channel 2 does not exist" in err
    assert (out / "config.json").is_file() and not list((out / "per_image").glob("*.json"))
    code, _, err = _run(base, capsys)  # corrected: no --overwrite needed
    assert code == 0, err
    assert len(list((out / "per_image").glob("*.json"))) == len(WINDOWS)
    # once images are finished, other settings are refused without --overwrite
    code, _, err = _run([*base, "--tta", "none"], capsys)
    assert code == 1 and "other settings" in _error_line(err)


def test_package_removes_work_folders_of_killed_runs(trained, tmp_path):
    pytest.importorskip("bioimageio.core")
    from fiji_consensus import zoo

    _, model = trained
    out = tmp_path / "zoo" / "tiny.zip"
    out.parent.mkdir()
    left = out.parent / ".tiny.k3j_9a2x"  # what tempfile.mkdtemp left when a package run was killed
    left.mkdir()
    (left / "weights.pt").write_bytes(b"\0" * 1024)
    mine = out.parent / ".tiny-notes"  # a hidden folder of the user's: not ours, kept
    mine.mkdir()
    res = zoo.package_ensemble(model, out, weight_formats=("pytorch_state_dict",), tile=64,
                               image=LAB / "images" / "0001.png")
    assert res["ok"] and out.is_file()
    assert sorted(x.name for x in out.parent.iterdir()) == [".tiny-notes", "tiny.zip"]


def test_evaluate_never_writes_into_a_folder_it_did_not_make(tmp_path, capsys):
    p = _crop_project(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.csv").write_text("mine\n")
    argv = ["evaluate", "--images", str(p["images"]), "--experts", *(str(p[e]) for e in EXPERTS), "--out", str(out),
            "--no-report", "--no-progress", "-q"]
    code, _, err = _run([*argv, "--overwrite"], capsys)
    assert code == 1 and "holds files that `evaluate` did not write (notes.csv)" in _error_line(err)
    assert sorted(x.name for x in out.iterdir()) == ["notes.csv"]
    (out / "notes.csv").unlink()
    code, _, err = _run(argv, capsys)  # an empty folder is fine, and a rerun with --overwrite replaces its own
    assert code == 0, err
    assert _run([*argv, "--overwrite"], capsys)[0] == 0


def test_package_never_replaces_a_file_it_did_not_write(trained, tmp_path, capsys):
    pytest.importorskip("bioimageio.core")
    _, model = trained
    out = tmp_path / "data.zip"
    out.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # a user's (empty) zip
    code, _, err = _run(["package", "--model", str(model), "--out", str(out), "--weights", "pytorch_state_dict",
                         "--tile", "64", "--overwrite", "-q"], capsys)
    assert code == 1 and "is not a package made by fiji-consensus" in _error_line(err)
    assert out.read_bytes() == b"PK\x05\x06" + b"\0" * 18


def test_partial_files_of_one_image_are_found_also_inside_staged_writes(tmp_path):
    from fiji_consensus.predict import _remove_partial_files

    d = tmp_path / "probability"
    d.mkdir()
    names = [".0062.tif.abcd1234.part", "..0062.tif.abcd1234.part.k2j4x9_q.part", ".00621.tif.abcd1234.part",
             "0062.tif", ".0062.tif.notes"]
    for n in names:
        (d / n).write_bytes(b"x")
    removed = sorted(f.name for f in _remove_partial_files(tmp_path, "0062"))
    assert removed == ["..0062.tif.abcd1234.part.k2j4x9_q.part", ".0062.tif.abcd1234.part"]
    assert sorted(f.name for f in d.iterdir()) == [".0062.tif.notes", ".00621.tif.abcd1234.part", "0062.tif"]
