"""Ensemble training on small crops of the bundled real sample: learning, resume, reload, selection, errors."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import imageio.v3 as iio  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from fiji_consensus.nn.data import percentile_normalize  # noqa: E402
from fiji_consensus.nn.ensemble import load_ensemble, save_ensemble  # noqa: E402
from fiji_consensus.nn.train import (  # noqa: E402
    TrainConfig,
    make_splits,
    masked_bce_dice_loss,
    train_ensemble,
)
from fiji_consensus.nn.unet import UNet  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "fiji_consensus" / "data" / "segebarth2020_wue1"
# 96 px windows with many objects in each of the five bundled images
WINDOWS = {"0001": (320, 384), "0015": (320, 320), "0062": (704, 384), "0076": (64, 384), "0092": (832, 576)}
EXPERTS = ["expert_1", "expert_2", "expert_3", "expert_4", "expert_5"]
SIZE = 96


def tiny(**kw) -> TrainConfig:
    base = dict(
        members=2, depth=2, base_channels=8, patch_size=48, batch_size=4, iterations=12, validate_every=6,
        checkpoint_every=5, min_size=10, seed=0, device="cpu", threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)




@pytest.fixture(scope="module")
def sample():
    ids, images, targets, experts = [], [], {}, {e: [] for e in EXPERTS}
    imgs, tgts = [], []
    for iid, (y, x) in WINDOWS.items():
        win = np.s_[y : y + SIZE, x : x + SIZE]
        ids.append(iid)
        imgs.append(iio.imread(SAMPLE / "images" / f"{iid}.png")[win])
        tgts.append((iio.imread(SAMPLE / "labels" / "est_GT" / f"{iid}_cFOS.png")[win] > 0).astype(np.float32))
        for e in EXPERTS:
            m = iio.imread(SAMPLE / "labels" / e / f"{iid}_cFOS.png")
            m = m[..., 0] if m.ndim == 3 else m
            experts[e].append(m[win] > 0)
    del images, targets
    assert all(t.sum() > 50 for t in tgts)
    return {"ids": ids, "images": imgs, "targets": tgts, "experts": experts}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


# ----------------------------------------------------------------------------------------------- learning


def test_loss_decreases_on_real_patches(sample):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=8)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    x = np.stack([percentile_normalize(i)[0][:48, :48] for i in sample["images"][:4]])[:, None]
    t = np.stack([tg[:48, :48] for tg in sample["targets"][:4]])[:, None]
    x, t = torch.from_numpy(x), torch.from_numpy(t)
    v = torch.ones_like(t)
    losses = []
    for _ in range(30):
        loss = masked_bce_dice_loss(net.forward_logits(x), t, v)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_ensemble_writes_a_complete_folder(sample, tmp_path):
    cfg = tiny(iterations=24, validate_every=8)
    out = tmp_path / "model"
    summary = train_ensemble(
        sample["images"], sample["targets"], out, cfg, image_ids=sample["ids"],
        provenance={"consensus": "est_GT", "experts": EXPERTS},
    )
    meta = json.loads((out / "ensemble.json").read_text())
    assert meta["format"] == "fiji-consensus-ensemble" and meta["format_version"] == 1
    assert meta["architecture"]["config"]["depth"] == 2 and meta["architecture"]["halo"] == 24
    assert meta["normalization"]["method"] == "scale_range"
    assert set(meta["normalization"]["training_values"]) == set(sample["ids"])
    assert cfg.learning_rate is None  # the default: recorded as the rate used from scratch
    assert meta["training"] == cfg.model_dump(mode="json") | {"learning_rate": 2e-3}
    prov = meta["provenance"]
    assert prov["image_ids"] == sample["ids"] and prov["consensus"] == "est_GT" and prov["split"] == "kfold"
    assert len(prov["seeds"]) == 2 and prov["seeds"][0] != prov["seeds"][1]
    assert "torch" in prov["packages"]
    for m, split in zip(meta["members"], prov["splits"]):
        assert (out / m["file"]).is_file() and len(m["sha256"]) == 64
        assert not set(split["train"]) & set(split["validation"])
        assert set(m["val_per_image"]) == set(split["validation"])
        assert 0 <= m["val_dice"] <= 1 and m["best_iteration"] in (8, 16, 24)
        rows = (out / m["log"]).read_text().splitlines()
        assert rows[0].startswith("iteration,loss,lr,val_dice,val_roi_f1")
        assert len(rows) == 1 + 3
        losses = [float(r.split(",")[1]) for r in rows[1:]]
        assert losses[-1] < losses[0]  # the training loss decreases
    assert not (out / "checkpoints").exists()  # removed once finished
    assert summary["selected"] == [0, 1] and summary["patches_per_second"] > 0
    # the validation images together are all images (k-fold)
    assert sorted(sum((s["validation"] for s in prov["splits"]), [])) == sorted(sample["ids"])

    # reloading reproduces the recorded validation scores exactly (bit-identical predictions)
    from fiji_consensus.metrics import dice

    ens = load_ensemble(out)
    assert len(ens.members) == 2 and ens.halo == 24 and not any(m.training for m in ens.members)
    for k, m in enumerate(meta["members"]):
        for iid, rec in m["val_per_image"].items():
            j = sample["ids"].index(iid)
            p = ens.predict_members(sample["images"][j])[k]
            d = dice(sample["targets"][j] > 0.5, p > 0.5)
            assert np.isnan(d) if rec["dice"] is None else d == rec["dice"]
    again = load_ensemble(out / "ensemble.json")
    np.testing.assert_array_equal(ens.predict_members(sample["images"][0]), again.predict_members(sample["images"][0]))

    # calling again with resume=True returns the finished ensemble without training
    assert train_ensemble(sample["images"], sample["targets"], out, cfg, image_ids=sample["ids"])["members"] == summary[
        "members"
    ]


def test_save_load_is_bit_identical(tmp_path):
    torch.manual_seed(1)
    net = UNet(depth=2, base_channels=4)
    with torch.no_grad():  # make the batch-norm statistics non-trivial
        net.train()
        net(torch.randn(4, 1, 32, 32) * 3 + 1)
    net.eval()
    meta = {
        "architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
        "normalization": {"method": "scale_range", "mode": "per_sample", "min_percentile": 1.0,
                          "max_percentile": 99.8, "eps": 1e-6},
        "members": [{"index": 0, "selected": True}],
        "provenance": {},
    }
    save_ensemble(tmp_path, {0: net.state_dict()}, meta)
    ens = load_ensemble(tmp_path)
    img = np.random.default_rng(0).integers(0, 255, (40, 38)).astype(np.uint8)
    x = ens.normalize(img)
    xp = np.pad(x, ((0, 0), (0, 2)), mode="reflect")  # to a multiple of 2**depth = 4
    with torch.no_grad():
        expected = net(torch.from_numpy(xp)[None, None])[0, 0, :, :38].numpy()
    np.testing.assert_array_equal(ens.predict_members(img)[0], expected)


def test_unsafe_or_tampered_weights_are_refused(tmp_path):
    net = UNet(depth=1, base_channels=2)
    meta = {
        "architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
        "normalization": {"method": "scale_range", "min_percentile": 1.0, "max_percentile": 99.8, "eps": 1e-6},
        "members": [{"index": 0}],
    }
    save_ensemble(tmp_path, {0: net.state_dict()}, meta)
    w = tmp_path / "member_0.pt"
    torch.save({"x": torch.zeros(1), "obj": Path("evil")}, w)  # a pickled Python object
    with pytest.raises(ValueError, match="SHA-256"):
        load_ensemble(tmp_path)
    with pytest.raises(ValueError, match=r"refusing to unpickle .*pathlib.PosixPath"):
        load_ensemble(tmp_path, verify=False)


# ----------------------------------------------------------------------------------------------- resume


class _Stop(Exception):
    pass


def test_resume_after_interruption_gives_identical_weights(sample, tmp_path):
    cfg = tiny(iterations=12, checkpoint_every=5, validate_every=6)
    args = (sample["images"], sample["targets"])
    ref = tmp_path / "uninterrupted"
    train_ensemble(*args, ref, cfg, image_ids=sample["ids"])

    out = tmp_path / "interrupted"
    seen: list[tuple[int, int]] = []

    def stop_at(member, it):
        def cb(*, member: int, iteration: int, loss: float) -> None:
            seen.append((member, iteration))
            if (member, iteration) == (stop_member, stop_it):
                raise _Stop

        stop_member, stop_it = member, it
        return cb

    with pytest.raises(_Stop):
        train_ensemble(*args, out, cfg, image_ids=sample["ids"], callback=stop_at(0, 8))
    assert (out / "checkpoints" / "member_0.pt").is_file() and not (out / "ensemble.json").exists()
    seen.clear()
    with pytest.raises(_Stop):
        train_ensemble(*args, out, cfg, image_ids=sample["ids"], callback=stop_at(1, 3))
    assert seen[0] == (0, 6)  # resumed after the checkpoint at iteration 5, not from scratch
    seen.clear()
    train_ensemble(*args, out, cfg, image_ids=sample["ids"], callback=stop_at(-1, -1))
    assert seen[0] == (1, 1)  # member 1 had no checkpoint yet (interrupted at 3 < 5): starts over

    for k in range(2):
        a, b = _weights(ref / f"member_{k}.pt"), _weights(out / f"member_{k}.pt")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    ma = json.loads((ref / "ensemble.json").read_text())["members"]
    mb = json.loads((out / "ensemble.json").read_text())["members"]
    assert [m["val_per_image"] for m in ma] == [m["val_per_image"] for m in mb]
    assert [m["sha256"] for m in ma] == [m["sha256"] for m in mb]


def test_resume_refuses_a_different_run(sample, tmp_path):
    out = tmp_path / "m"
    train_ensemble(sample["images"], sample["targets"], out, tiny(iterations=2), image_ids=sample["ids"])
    with pytest.raises(FileExistsError, match="other data or settings"):
        train_ensemble(sample["images"], sample["targets"], out, tiny(iterations=3), image_ids=sample["ids"])
    s = train_ensemble(
        sample["images"], sample["targets"], out, tiny(iterations=3), image_ids=sample["ids"], resume=False
    )
    assert [m["iterations"] for m in s["members"]] == [3, 3]


# ----------------------------------------------------------------------------------------------- options


def test_time_budget_ignore_groups_bootstrap_and_progress(sample, tmp_path, capsys):
    ignore = [None] * 5
    ignore[1] = np.zeros((SIZE, SIZE), bool)
    ignore[1][:, :40] = True
    groups = {"0001": "a", "0015": "a", "0062": "b", "0076": "c", "0092": "c"}
    cfg = tiny(iterations=None, max_minutes=0.03, members=3, validate_every=3)
    s = train_ensemble(
        sample["images"], sample["targets"], tmp_path / "g", cfg, image_ids=sample["ids"], ignore=ignore,
        groups=groups, progress=True,
    )
    meta = json.loads((tmp_path / "g" / "ensemble.json").read_text())
    assert meta["provenance"]["split"] == "group_kfold"
    for sp in meta["provenance"]["splits"]:
        assert len({groups[i] for i in sp["validation"]}) == 1  # a group is never split
    assert all(m["iterations"] >= 1 for m in s["members"])
    assert s["seconds"] < 60
    assert "member 1" in capsys.readouterr().err  # the tqdm bar
    boot = train_ensemble(
        sample["images"], sample["targets"], tmp_path / "b", tiny(split="bootstrap", members=2, iterations=2),
        image_ids=sample["ids"],
    )
    for m in boot["members"]:
        assert m["val_ids"] and not set(m["val_ids"]) & set(m["train_ids"])


def test_paper_selection_rule(sample, tmp_path):
    experts = {"perfect": [t > 0.5 for t in sample["targets"]]}
    s = train_ensemble(
        sample["images"], sample["targets"], tmp_path / "p", tiny(iterations=2, paper_selection=True),
        image_ids=sample["ids"], expert_masks=experts,
    )
    meta = json.loads((tmp_path / "p" / "ensemble.json").read_text())
    # nobody beats an expert who matches the consensus exactly: every member fails, all are kept
    assert meta["selection"]["fallback"] and s["selected"] == [0, 1]
    assert all(v == 1.0 for m in meta["members"] for v in m["lowest_expert_roi_f1"].values())
    experts["blank"] = [np.zeros_like(t, bool) for t in sample["targets"]]  # a lowest expert with F1 = 0
    s2 = train_ensemble(
        sample["images"], sample["targets"], tmp_path / "q", tiny(iterations=2, paper_selection=True),
        image_ids=sample["ids"], expert_masks=experts,
    )
    meta2 = json.loads((tmp_path / "q" / "ensemble.json").read_text())
    assert "fallback" not in meta2["selection"] and s2["selected"] == [0, 1]
    with pytest.raises(ValueError, match="needs expert_masks"):
        train_ensemble(sample["images"], sample["targets"], tmp_path / "r", tiny(paper_selection=True),
                       image_ids=sample["ids"])


def test_make_splits():
    ids = [f"{i:02d}" for i in range(9)]
    sp = make_splits(ids, members=3, split="kfold", seed=1)
    assert sorted(sum((v for _, v in sp), [])) == ids
    assert sp == make_splits(ids, members=3, split="kfold", seed=1)
    groups = {i: str(int(i) // 3) for i in ids}
    g = make_splits(ids, members=3, groups=groups, seed=0)
    assert sorted(len({groups[i] for i in v}) for _, v in g) == [1, 1, 1]
    b = make_splits(ids, members=4, split="bootstrap", seed=0)
    assert all(len(t) == 9 and v and not set(v) & set(t) for t, v in b)


# ----------------------------------------------------------------------------------------------- errors


def test_clear_errors_for_bad_inputs(sample, tmp_path):
    imgs, tgts, ids = sample["images"], sample["targets"], sample["ids"]
    run = lambda i, t, cfg=None, **kw: train_ensemble(i, t, tmp_path / "e", cfg or tiny(), image_ids=kw.pop("ids", ids), **kw)  # noqa: E731
    bad = list(tgts)
    bad[2] = bad[2][:50]
    with pytest.raises(ValueError, match=r"targets\[2\] \(id '0062'\) has shape \(50, 96\) but its image has shape \(96, 96\)"):
        run(imgs, bad)
    with pytest.raises(ValueError, match="all 5 targets are empty"):
        run(imgs, [np.zeros_like(t) for t in tgts])
    with pytest.raises(ValueError, match=r"got values in \[0.0, 255.0\].*divide it by 255"):
        run(imgs, [t * 255 for t in tgts])
    with pytest.raises(ValueError, match="k-fold with 5 folds needs at least 5 images; got 3"):
        run(imgs[:3], tgts[:3], tiny(members=5), ids=ids[:3])
    with pytest.raises(ValueError, match="needs at least 3 groups; got 2"):
        run(imgs, tgts, tiny(members=3), groups={i: str(k % 2) for k, i in enumerate(ids)})
    with pytest.raises(ValueError, match=r"groups has no entry for 1 image id\(s\): \['0092'\]"):
        run(imgs, tgts, groups={i: "x" for i in ids[:4]})
    with pytest.raises(ValueError, match="same length; got 5, 4 and 5"):
        run(imgs, tgts[:4])
    with pytest.raises(ValueError, match="must be unique"):
        run(imgs, tgts, ids=["a", "a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"images\[0\] \(id '0001'\) must be a 2-D"):
        run([np.zeros((2, 8, 8))] + imgs[1:], tgts)
    with pytest.raises(ValueError, match="covers the whole image"):
        run(imgs, tgts, ignore=[np.ones((SIZE, SIZE), bool)] + [None] * 4)
    with pytest.raises(ValueError, match="members .3. cannot exceed folds .2."):
        run(imgs, tgts, tiny(members=3, folds=2))


def test_config_errors():
    with pytest.raises(ValidationError, match="patch_size must be a multiple of 2\\*\\*depth = 8; got 60"):
        TrainConfig(patch_size=60, depth=3)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TrainConfig(epochs=3)
    with pytest.raises(ValidationError, match="give iterations or max_minutes"):
        TrainConfig(iterations=None, max_minutes=None)
    assert TrainConfig.model_validate_json(TrainConfig(members=3).model_dump_json()) == TrainConfig(members=3)
    assert all(f.description for f in TrainConfig.model_fields.values())


def test_full_disk_is_a_clear_error(sample, tmp_path, monkeypatch):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match="no space left on the device while writing .*member_0.pt") as info:
        train_ensemble(sample["images"], sample["targets"], tmp_path / "full", tiny(iterations=6),
                       image_ids=sample["ids"])
    assert info.value.errno == errno.ENOSPC
    assert not list((tmp_path / "full").rglob("*.part"))  # no half-written temporary files left


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_requested_without_gpu(sample, tmp_path):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        train_ensemble(sample["images"], sample["targets"], tmp_path / "c", tiny(device="cuda"),
                       image_ids=sample["ids"])


# ----------------------------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_starts_from_the_initial_members(sample, tmp_path):
    base = tmp_path / "base"
    train_ensemble(sample["images"], sample["targets"], base, tiny(members=2, iterations=8), image_ids=sample["ids"])
    init = load_ensemble(base)
    # other network settings are replaced by the initial ensemble's; a tiny learning rate keeps the weights
    cfg = tiny(members=3, split="all", iterations=2, validate_every=2, depth=3, base_channels=4,
               learning_rate=1e-12, warmup_fraction=0.0, high_percentile=99.0)
    out = tmp_path / "tuned"
    summary = train_ensemble(sample["images"][:2], sample["targets"][:2], out, cfg, image_ids=sample["ids"][:2],
                             init=init)
    tuned = load_ensemble(out)
    meta = tuned.metadata
    assert meta["architecture"]["config"] == init.metadata["architecture"]["config"]
    assert meta["normalization"]["max_percentile"] == init.normalization["max_percentile"]
    assert meta["provenance"]["init"]["members"] == [0, 1]
    # split "all": every member trains and validates on both images
    assert all(m["train_ids"] == sample["ids"][:2] == m["val_ids"] for m in summary["members"])
    for k, member in enumerate(tuned.members):  # member k starts from initial member k mod 2
        start = init.members[k % 2].state_dict()
        for name, t in member.state_dict().items():
            if name.endswith("weight") and t.ndim == 4:  # convolutions (batch-norm statistics do move)
                torch.testing.assert_close(t, start[name], atol=1e-6, rtol=0)
    other = init.members[1].state_dict()
    w0 = next(n for n, t in other.items() if t.ndim == 4)
    assert not torch.allclose(tuned.members[0].state_dict()[w0], other[w0])
    # a different initial ensemble is a different run: resuming in the same folder is refused
    with pytest.raises(FileExistsError):
        train_ensemble(sample["images"][:2], sample["targets"][:2], out, cfg, image_ids=sample["ids"][:2])
    with pytest.raises(TypeError, match="init must be a loaded Ensemble"):
        train_ensemble(sample["images"][:2], sample["targets"][:2], tmp_path / "x", cfg,
                       image_ids=sample["ids"][:2], init=str(base))


def test_learning_rate_default_depends_on_the_start(sample, tmp_path, caplog):
    base = tmp_path / "base"
    train_ensemble(sample["images"], sample["targets"], base, tiny(members=1, split="all", iterations=2),
                   image_ids=sample["ids"])
    init = load_ensemble(base)
    assert init.metadata["training"]["learning_rate"] == 2e-3  # from scratch
    with caplog.at_level(logging.INFO, logger="fiji_consensus.nn.train"):
        train_ensemble(sample["images"][:2], sample["targets"][:2], tmp_path / "tuned",
                       tiny(members=1, split="all", iterations=2), image_ids=sample["ids"][:2], init=init)
    assert load_ensemble(tmp_path / "tuned").metadata["training"]["learning_rate"] == 5e-4  # fine-tuning
    assert "fine-tuning at learning rate 0.0005 (the default with init" in caplog.text
    train_ensemble(sample["images"][:2], sample["targets"][:2], tmp_path / "set",
                   tiny(members=1, split="all", iterations=2, learning_rate=1e-3), image_ids=sample["ids"][:2],
                   init=init)
    assert load_ensemble(tmp_path / "set").metadata["training"]["learning_rate"] == 1e-3  # given: kept


@pytest.mark.parametrize("layers", ["decoder", "head"])
def test_train_layers_freezes_the_rest(sample, tmp_path, layers):
    base = tmp_path / "base"
    train_ensemble(sample["images"], sample["targets"], base, tiny(members=1, split="all", iterations=4), image_ids=sample["ids"])
    init = load_ensemble(base)
    cfg = tiny(members=1, split="all", iterations=4, validate_every=4, learning_rate=1e-2, warmup_fraction=0.0,
               train_layers=layers)
    train_ensemble(sample["images"][:2], sample["targets"][:2], tmp_path / "tuned", cfg,
                   image_ids=sample["ids"][:2], init=init)
    start, tuned = init.members[0].state_dict(), load_ensemble(tmp_path / "tuned").members[0].state_dict()
    frozen = ("down.", "bottom.") if layers == "decoder" else tuple(n for n in start if not n.startswith("head."))
    moved = {n for n, t in tuned.items() if t.is_floating_point() and not torch.equal(t, start[n])}
    # frozen: weights and batch-norm statistics exactly as they were; every other layer has learned
    assert not {n for n in moved if n.startswith(frozen)}
    trained = {n for n in start if not n.startswith(frozen) and start[n].is_floating_point()}
    assert trained and {n for n in trained if n.endswith("weight")} <= moved


def test_later_fields_are_part_of_the_fingerprint_only_when_set():
    from fiji_consensus.nn.inputs import _fingerprint

    args = (["a"], [np.zeros((4, 4), np.float32)], [np.zeros((4, 4), np.float32)], [None], [[0]])
    default = _fingerprint(tiny(), *args)
    assert _fingerprint(tiny(train_layers="all"), *args) == default
    assert _fingerprint(tiny(train_layers="decoder"), *args) != default
    assert _fingerprint(tiny(lab_weights={}), *args) == default
    assert _fingerprint(tiny(lab_weights={"a": 2.0}), *args) != default
    from fiji_consensus.config import AugmentOptions

    assert _fingerprint(tiny(augment=AugmentOptions(background_renormalize=False)), *args) == default
    assert _fingerprint(tiny(augment=AugmentOptions(background_renormalize=True)), *args) != default
    # a run started before the fields existed keeps its fingerprint (the config dump without them)
    import hashlib

    cfg = tiny().model_dump(mode="json", exclude={"device", "threads", "keep_checkpoints", "train_layers",
                                                  "lab_weights"})
    del cfg["augment"]["background_renormalize"]
    h = hashlib.sha256(json.dumps({"config": cfg, "ids": ["a"], "splits": [[0]]}, sort_keys=True).encode())
    for a in (args[1][0], args[2][0]):
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(b"none")
    assert h.hexdigest() == default
