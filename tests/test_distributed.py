"""Dask: batch prediction, parallel ensemble training and the chunked zarr path, on a real
``distributed.LocalCluster`` of 2 worker processes (1 thread each) with a tiny ensemble trained here on crops
of the bundled real sample.

Checked against the single-machine paths: the files of a batch prediction are identical, a worker killed
mid-run loses nothing (its task runs again, no temporary file remains), a failing image is retried and
then reported (exit code 1), members trained in parallel equal sequential ones bit for bit, and the
chunked prediction of a real crop made bigger by tiling equals the in-memory one, seams included.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
import imageio.v3 as iio  # noqa: E402
import tifffile  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402

from fiji_consensus import distributed as D  # noqa: E402
from fiji_consensus.cli import main  # noqa: E402
from fiji_consensus.config import DaskOptions, PredictConfig  # noqa: E402
from fiji_consensus.nn.data import compute_percentiles  # noqa: E402
from fiji_consensus.nn.ensemble import load_ensemble, save_ensemble  # noqa: E402
from fiji_consensus.nn.predict import predict  # noqa: E402
from fiji_consensus.nn.train import TrainConfig, train_ensemble  # noqa: E402
from fiji_consensus.nn.unet import UNet  # noqa: E402
from fiji_consensus.predict import run_predict  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # helpers run on the workers

SAMPLE = Path(__file__).resolve().parents[1] / "fiji_consensus" / "data" / "segebarth2020_wue1"
WINDOWS = {"0001": (320, 384), "0015": (320, 320), "0062": (704, 384), "0076": (64, 384), "0092": (832, 576)}
SIZE = 96
TTA = "flips"  # 8 network passes per 256² image: tasks of about half a second, long enough to kill a worker in


def tiny(**kw) -> TrainConfig:
    base = dict(
        members=2, depth=2, base_channels=8, patch_size=48, batch_size=4, iterations=12, validate_every=6,
        checkpoint_every=5, min_size=10, seed=0, device="cpu", threads=1,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class Attempts(SchedulerPlugin):
    """Counts how often each task was sent to a worker, and where (runs inside the local scheduler)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.counts: collections.Counter[str] = collections.Counter()
        self.workers: dict[str, list[str]] = collections.defaultdict(list)

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            self.counts[str(key)] += 1
            ws = self.scheduler.tasks[key].processing_on
            self.workers[str(key)].append(ws.address if ws is not None else "?")

    def of(self, part: str) -> int:
        return sum(n for k, n in self.counts.items() if part in k)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as lc:
        yield lc


@pytest.fixture
def attempts(cluster):
    plugin = Attempts(cluster.scheduler)
    cluster.scheduler.add_plugin(plugin, name="attempts")
    yield plugin
    cluster.scheduler.remove_plugin(name="attempts")


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster.scheduler_address) as c:
        yield c


@pytest.fixture(scope="module")
def sample():
    ids, imgs, tgts = [], [], []
    for iid, (y, x) in WINDOWS.items():
        win = np.s_[y : y + SIZE, x : x + SIZE]
        ids.append(iid)
        imgs.append(iio.imread(SAMPLE / "images" / f"{iid}.png")[win])
        tgts.append((iio.imread(SAMPLE / "labels" / "est_GT" / f"{iid}_cFOS.png")[win] > 0).astype(np.float32))
    return {"ids": ids, "images": imgs, "targets": tgts}


@pytest.fixture(scope="module")
def model(sample, tmp_path_factory):
    """A tiny ensemble, trained sequentially in this process (also the reference of parallel training)."""
    out = tmp_path_factory.mktemp("model") / "tiny"
    train_ensemble(sample["images"], sample["targets"], out, tiny(), image_ids=sample["ids"])
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six 256² crops of the real sample (PNG, and one calibrated 16-bit TIFF) and one unreadable file."""
    d = tmp_path_factory.mktemp("images")
    for k, (iid, (y, x)) in enumerate(WINDOWS.items()):
        img = iio.imread(SAMPLE / "images" / f"{iid}.png")[max(0, y - 80) : max(0, y - 80) + 256, x - 64 : x + 192]
        iio.imwrite(d / f"{iid}.png", img)
        if k == 0:
            tifffile.imwrite(d / "t16.tif", img.astype(np.uint16) * 257, resolution=(2.0, 2.0),
                             imagej=True, metadata={"unit": "micron"})
    (d / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    return d


def _config(model: Path, images: Path, out: Path, **kw) -> PredictConfig:
    return PredictConfig(model=model, inputs=[images], out=out, tta=TTA, threads=1, **kw)


@pytest.fixture(scope="module")
def sequential(model, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential") / "pred"
    summary = run_predict(_config(model, images, out))
    assert summary["n_predicted"] == 6 and [f["image"] for f in summary["failed"]] == ["broken"]
    return out, summary


def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _without_seconds(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("seconds")}


def assert_same_outputs(a: Path, b: Path, ids: list[str]) -> None:
    """Every per-image file and table of two prediction runs holds the same data (timings aside)."""
    for iid in ids:
        for sub in ("probability", "uncertainty", "labels", "overlays"):
            ta, tb = tifffile.imread(a / sub / f"{iid}.tif"), tifffile.imread(b / sub / f"{iid}.tif")
            assert ta.dtype == tb.dtype
            np.testing.assert_array_equal(ta, tb, err_msg=f"{sub}/{iid}.tif")
        assert _zip_members(a / "rois" / f"{iid}.zip") == _zip_members(b / "rois" / f"{iid}.zip"), iid
        assert (a / "objects" / f"{iid}.csv").read_text() == (b / "objects" / f"{iid}.csv").read_text(), iid
        ra = json.loads((a / "per_image" / f"{iid}.json").read_text())
        rb = json.loads((b / "per_image" / f"{iid}.json").read_text())
        assert _without_seconds(ra) == _without_seconds(rb), iid
    assert (a / "objects.csv").read_text() == (b / "objects.csv").read_text()
    rows = [[r.rsplit(",", 2)[0] for r in (x / "images.csv").read_text().splitlines()] for x in (a, b)]
    assert rows[0] == rows[1]  # same ranking and scores (the columns before seconds, path)


IDS = [*WINDOWS, "t16"]


# ----------------------------------------------------------------------------------------------- prediction


def test_batch_prediction_equals_sequential(cluster, client, model, images, sequential, tmp_path, attempts):
    seq_out, seq = sequential
    out = tmp_path / "dask"
    summary = run_predict(_config(model, images, out, dask=DaskOptions(scheduler=cluster.scheduler_address)))
    assert summary["n_predicted"] == 6 and summary["n_skipped"] == 0
    assert summary["failed"] == seq["failed"] and summary["ok"] is False  # the unreadable file, reported alike
    assert summary["dask"]["workers"] == 2
    assert_same_outputs(seq_out, out, IDS)
    # one task per image, spread over both workers, each of which loaded the ensemble once
    keys = [k for k in attempts.counts if "predict" in k]
    assert len(keys) == 7 and all(attempts.counts[k] == 1 for k in keys)
    assert len({w for k in keys for w in attempts.workers[k]}) == 2
    loads = client.run(D._load_count)
    assert sorted(loads.values()) == [1, 1], loads
    # the same command again continues: every image is done
    again = run_predict(_config(model, images, out, dask=DaskOptions(scheduler=cluster.scheduler_address)))
    assert again["n_skipped"] == 6 and again["n_predicted"] == 0
    assert client.run(D._load_count) == loads  # still loaded once


def test_batch_prediction_of_a_package_equals_sequential(cluster, client, images, tmp_path):
    """Dask predicts with any model the job loads: a bioimage.io package (the committed zoo model) gives the
    same files as the single-machine run, and every worker loads it at most once; also with the background
    subtracted before the model (``subtract_background``, applied by the job's own step on the workers)."""
    pytest.importorskip("bioimageio.core")
    pkg = Path(__file__).resolve().parents[1] / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
    seq = run_predict(PredictConfig(model=pkg, inputs=[images], out=tmp_path / "seq", threads=1,
                                    subtract_background=20))
    before = client.run(D._load_count)
    dask = run_predict(PredictConfig(model=pkg, inputs=[images], out=tmp_path / "dask", threads=1,
                                     subtract_background=20, dask=DaskOptions(scheduler=cluster.scheduler_address)))
    assert dask["n_predicted"] == seq["n_predicted"] == 6 and dask["failed"] == seq["failed"]
    assert_same_outputs(tmp_path / "seq", tmp_path / "dask", IDS)
    loads = {w: n - before[w] for w, n in client.run(D._load_count).items()}
    assert sorted(loads.values()) == [1, 1], loads
    record = json.loads((tmp_path / "dask" / "per_image" / "0062.json").read_text())
    assert len(record["packages"]) == 1 and record["packages"][0]["executes_code"] is False, record
    assert record["subtract_background"] == 20


def _executing(dask_worker) -> list[str]:
    return [str(ts.key) for ts in dask_worker.state.executing]


def test_killing_a_worker_mid_run_loses_nothing(cluster, client, model, images, sequential, tmp_path, attempts):
    seq_out, _ = sequential
    out = tmp_path / "killed"
    out.mkdir()
    # an earlier run of the same settings was killed while writing image 0062: its temporary file remains
    (out / "config.json").write_bytes((seq_out / "config.json").read_bytes())
    stale = out / "probability" / ".0062.tif.abcd1234.part"
    stale.parent.mkdir()
    stale.write_bytes(b"half a TIFF")
    cfg = _config(model, images, out, dask=DaskOptions(scheduler=cluster.scheduler_address, retries=0))
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_predict, cfg)
        deadline = time.monotonic() + 120
        busy: list[tuple[str, str]] = []
        while not busy:
            assert not run.done(), f"the run ended before a worker could be killed: {run.result()}"
            assert time.monotonic() < deadline
            busy = [(w, k) for w, keys in client.run(_executing).items() for k in keys if "-predict-" in k]
            time.sleep(0.02)
        worker, key = busy[0]
        pid = client.run(os.getpid, workers=[worker])[worker]
        os.kill(pid, signal.SIGKILL)  # the worker process dies mid-task (its nanny starts a new one)
        summary = run.result(timeout=300)
    assert summary["n_predicted"] == 6 and [f["image"] for f in summary["failed"]] == ["broken"]
    assert attempts.counts[key] == 2, attempts.counts  # the killed task ran again (not a retry: a reschedule)
    assert worker in attempts.workers[key]
    assert not stale.exists() and not list(out.rglob("*.part"))
    assert_same_outputs(seq_out, out, IDS)


def test_failing_image_is_retried_then_reported(cluster, model, images, tmp_path, attempts, capsys):
    out = tmp_path / "failing"
    args = ["predict", str(images), "--model", str(model), "--out", str(out), "--tta", "none", "--threads", "1"]
    assert main([*args, "--quiet", "--no-progress"]) == 1  # a folder predict made (only broken.tif fails)
    # 0062 not done, and a folder where its file must go: its task always fails (predict never writes into
    # a folder it did not make, so the obstacle goes into one it made)
    (out / "per_image" / "0062.json").unlink()
    (out / "probability" / "0062.tif").unlink()
    (out / "probability" / "0062.tif").mkdir()
    capsys.readouterr()
    rc = main([*args, "--scheduler", cluster.scheduler_address, "--retries", "1", "--json", "--no-progress"])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1 and res["ok"] is False and res["n_predicted"] == 0 and res["n_skipped"] == 5
    failed = {f["image"]: f["error"] for f in res["failed"]}
    assert set(failed) == {"0062", "broken"}
    assert "IsADirectoryError" in failed["0062"] and "failed 2 time(s)" in failed["0062"]
    assert attempts.of("-predict-0062-") == 2  # tried, retried once, reported
    assert attempts.of("-predict-0001-") == 1
    assert not list(out.rglob("*.part"))


@pytest.mark.slow
def test_cli_predict_on_a_local_cluster_it_starts(model, images, sequential, tmp_path, capsys):
    out = tmp_path / "local"
    rc = main(["predict", str(images), "--model", str(model), "--out", str(out), "--tta", TTA, "--threads", "1",
               "--workers", "2", "--json", "--no-progress"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 1 and res["n_predicted"] == 6 and res["dask"]["workers"] == 2  # 1: the unreadable file
    assert_same_outputs(sequential[0], out, IDS)


# ----------------------------------------------------------------------------------------------- training


def _member_weights(folder: Path, k: int) -> dict[str, torch.Tensor]:
    return torch.load(folder / f"member_{k}.pt", weights_only=True)


def assert_same_members(a: Path, b: Path, n: int) -> None:
    for k in range(n):
        wa, wb = _member_weights(a, k), _member_weights(b, k)
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (k, name)
    ma = json.loads((a / "ensemble.json").read_text())
    mb = json.loads((b / "ensemble.json").read_text())
    keys = ("index", "seed", "sha256", "iterations", "best_iteration", "val_per_image", "train_ids", "val_ids")
    assert [{k: m[k] for k in keys} for m in ma["members"]] == [{k: m[k] for k in keys} for m in mb["members"]]
    assert ma["provenance"]["fingerprint"] == mb["provenance"]["fingerprint"]


def test_parallel_training_equals_sequential(cluster, model, sample, tmp_path, attempts):
    runner = functools.partial(D.train_members, options=DaskOptions(scheduler=cluster.scheduler_address))
    out = tmp_path / "parallel"
    summary = train_ensemble(sample["images"], sample["targets"], out, tiny(), image_ids=sample["ids"],
                             member_runner=runner)
    assert summary["selected"] == [0, 1]
    assert_same_members(model, out, 2)
    keys = [k for k in attempts.counts if "train-member" in k]
    assert len(keys) == 2 and len({attempts.workers[k][0] for k in keys}) == 2  # one member per worker


def test_cli_train_with_scheduler_equals_sequential(cluster, sample, tmp_path, capsys):
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labels.mkdir()
    for iid, img, tgt in zip(sample["ids"], sample["images"], sample["targets"]):
        iio.imwrite(imgs / f"{iid}.png", img)
        iio.imwrite(labels / f"{iid}_cFOS.png", (tgt * 255).astype(np.uint8))
    args = ["train", "--images", str(imgs), "--labels", str(labels), "--members", "2", "--iterations", "4",
            "--depth", "2", "--base-channels", "4", "--patch-size", "32", "--batch-size", "2",
            "--validate-every", "2", "--device", "cpu", "--threads", "1", "--json", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "seq")]) == 0
    assert main([*args, "--out", str(tmp_path / "par"), "--scheduler", cluster.scheduler_address]) == 0
    capsys.readouterr()
    assert_same_members(tmp_path / "seq", tmp_path / "par", 2)


# ----------------------------------------------------------------------------------------------- chunked


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A real 150 x 180 crop tiled 2 x 2 (300 x 360) as a zarr array in 64² chunks."""
    zarr = pytest.importorskip("zarr")  # zarr 3: Python >= 3.11
    crop = iio.imread(SAMPLE / "images" / "0001.png")[300:450, 350:530]
    image = np.tile(crop, (2, 2))
    path = tmp_path_factory.mktemp("zarr") / "big.zarr"
    z = zarr.create_array(str(path), shape=image.shape, chunks=(64, 64), dtype=image.dtype)
    z[:] = image
    return image, path


def test_chunked_zarr_equals_in_memory_seams_included(cluster, model, big, tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    image, path = big
    ens = load_ensemble(model)
    tiled = predict(ens, image, tta="flips", tile=128)  # the in-memory tiled path (= one window, test_predict)
    cfg = PredictConfig(model=model, inputs=[path], out=tmp_path / "local.zarr", tta="flips", chunk=96)
    summary = run_predict(cfg)  # no cluster: Dask's local threaded scheduler
    assert summary["shape"] == [300, 360] and summary["chunks"] == [96, 96] and summary["n_blocks"] == 12
    # the exact normalisation of the in-memory path
    norm = ens.normalization
    assert summary["normalization"] == list(
        compute_percentiles(image, low=norm["min_percentile"], high=norm["max_percentile"])
    )
    # the same through the CLI on the cluster
    rc = main(["predict", str(path), "--model", str(model), "--out", str(tmp_path / "cluster.zarr"), "--tta", "flips",
               "--chunk", "96", "--scheduler", cluster.scheduler_address, "--json", "--no-progress"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["n_blocks"] == 12
    seams = np.zeros(image.shape, bool)
    seams[[95, 96, 191, 192], :] = seams[:, [95, 96, 191, 192, 287, 288]] = True  # pixels beside block borders
    for name in ("local.zarr", "cluster.zarr"):
        g = zarr.open_group(str(tmp_path / name), mode="r")
        assert g["probability"].chunks == (96, 96) and g["probability"].dtype == np.float32
        assert g.attrs["fiji_consensus"]["measure"] == "entropy"
        prob, unc = g["probability"][:], g["uncertainty"][:]
        np.testing.assert_allclose(prob, tiled.probability, atol=2e-6, rtol=0)
        np.testing.assert_allclose(unc, tiled.uncertainty, atol=2e-6, rtol=0)
        np.testing.assert_allclose(prob[seams], tiled.probability[seams], atol=2e-6, rtol=0)
        np.testing.assert_allclose(unc[seams], tiled.uncertainty[seams], atol=2e-6, rtol=0)
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(FileExistsError, match="exists already"):
        run_predict(cfg)


def test_zarr_inputs_and_errors(model, tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (2, 70, 90)).astype(np.uint16)
    g = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=(1, 2, 70, 90), chunks=(1, 1, 32, 32), dtype="uint16")[:] = img[None]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "tcyx"],
                               "datasets": [{"path": "0"}]}]
    np.testing.assert_array_equal(D.open_zarr_image(tmp_path / "ome.zarr", channel=1).compute(), img[1])
    with pytest.raises(ValueError, match="choose a channel"):
        D.open_zarr_image(tmp_path / "ome.zarr")
    g2 = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    g2.create_array("a", shape=(4, 4), dtype="uint8")
    g2.create_array("b", shape=(4, 4), dtype="uint8")
    with pytest.raises(ValueError, match=r"arrays \['a', 'b'\]: give the path of one array"):
        D.open_zarr_image(tmp_path / "two.zarr")
    cfg = dict(model=model, inputs=[tmp_path / "ome.zarr"], channel=0, chunk=64)
    with pytest.raises(ValueError, match="must be a .zarr path"):
        run_predict(PredictConfig(**cfg, out=tmp_path / "out"))
    net = UNet(depth=2, base_channels=4, norm="group", groups=2)
    meta = {"architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
            "normalization": {"method": "scale_range", "min_percentile": 1.0, "max_percentile": 99.8, "eps": 1e-6},
            "members": [{"index": 0}]}
    save_ensemble(tmp_path / "gn", {0: net.state_dict()}, meta)
    with pytest.raises(ValueError, match="'group' normalisation, which would show seams"):
        run_predict(PredictConfig(**{**cfg, "model": tmp_path / "gn"}, out=tmp_path / "o.zarr"))
    pkg = Path(__file__).resolve().parents[1] / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
    with pytest.raises(FileNotFoundError, match="block by block with one ensemble folder .* got --model .*cfos-wue1.zip"):
        run_predict(PredictConfig(**{**cfg, "model": pkg}, out=tmp_path / "p.zarr"))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64", "int32"])
def test_exact_percentiles_equal_numpy(dtype):
    import dask
    import dask.array as da

    rng = np.random.default_rng(1)
    with dask.config.set(scheduler="sync"):
        _check_percentiles(rng, dtype, da)


def _check_percentiles(rng, dtype, da):
    for shape in [(1, 1), (7, 13), (61, 97)]:
        a = (rng.standard_normal(shape) * 3000).astype(dtype) if dtype.startswith("f") else \
            rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
        for q in ([1.0, 99.8], [0, 100], [50, 12.5, 33.3]):
            expected = np.percentile(np.asarray(a, np.float64), q).tolist()
            assert D.exact_percentiles(da.from_array(a, chunks=(16, 20)), q) == expected, (shape, q)
    with pytest.raises(ValueError, match="NaN"):
        D.exact_percentiles(da.from_array(np.array([[1.0, np.nan]])), [50])


# ----------------------------------------------------------------------------------------------- options


def test_options_cli_and_light_import(tmp_path):
    with pytest.raises(ValueError, match="either scheduler .* or workers"):
        DaskOptions()
    with pytest.raises(ValueError, match="either scheduler .* or workers"):
        DaskOptions(scheduler="tcp://x:8786", workers=2)
    with pytest.raises(SystemExit):
        main(["predict", "x", "--model", "m", "--out", "o", "--scheduler", "tcp://x:8786", "--workers", "2"])
    with pytest.raises(FileNotFoundError, match="scheduler file .* does not exist"):
        with D.dask_client(DaskOptions(scheduler=str(tmp_path / "scheduler.json"))):
            pass
    code = ("import sys, fiji_consensus.distributed, fiji_consensus.predict, fiji_consensus.jobs\n"
            "print([m for m in ('dask', 'distributed', 'zarr', 'torch') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_worker_threads_share_the_cores(client):
    plan = D._threads_plan(client, per="thread")
    cores = D._cpu_count()
    assert set(plan) == set(client.scheduler_info()["workers"])
    assert all(n == max(1, cores // 2) for n in plan.values())  # 2 single-thread workers on this host

    def threads_in_a_task():
        return D._set_task_threads(None, plan, per="thread"), torch.get_num_threads()

    for worker in plan:  # torch's threads are per thread: set inside every task
        got = client.submit(threads_in_a_task, workers=[worker], pure=False).result()
        assert got == (max(1, cores // 2),) * 2, (worker, got)


def _reciprocal(image_id: str, item: float) -> tuple[str, float, int]:
    return image_id, 1.0 / item, torch.get_num_threads()


def test_map_images_runs_any_callable_and_reports_failures(cluster, attempts):
    """The Dask mapping knows no job: any picklable ``task(image_id, item)``; a failing item is retried
    ``retries`` times, then reported with its error, and the others still finish."""
    items = {"a": 2.0, "zero": 0.0, "b": 4.0}
    results, errors, info = D.map_images(_reciprocal, items, DaskOptions(scheduler=cluster.scheduler_address, retries=1),
                                         threads=1, name="recip")
    assert results == {"a": ("a", 0.5, 1), "b": ("b", 0.25, 1)}
    assert list(errors) == ["zero"] and errors["zero"].startswith("ZeroDivisionError")
    assert errors["zero"].endswith("(failed 2 time(s))")
    assert attempts.of("-recip-zero-") == 2 and attempts.of("-recip-a-") == 1
    assert info["workers"] == 2 and info["retries"] == 1
