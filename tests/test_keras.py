"""Keras / TensorFlow: our ensembles exported to Keras and SavedModel (equal to torch within 1e-5, passing
bioimageio.core's test), and Keras models imported as ensemble members next to torch packages.

Needs the ``keras`` extra (Keras 3 + tensorflow-cpu); skipped without it. The real members are those of the
zoo package model_zoo/cfos-wue1 (trained on lab-wue1); the crops are real images of data/segebarth2020.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the keras extra: pip install 'fiji-consensus[keras]'")
pytest.importorskip("keras", reason="needs the keras extra: pip install 'fiji-consensus[keras]'")
torch = pytest.importorskip("torch")
pytest.importorskip("bioimageio.core")

import imageio.v3 as iio  # noqa: E402

from fiji_consensus import zoo  # noqa: E402
from fiji_consensus.keras import export as kx  # noqa: E402
from fiji_consensus.keras import member as km  # noqa: E402
from fiji_consensus.nn.ensemble_net import ENSEMBLE_VIEWS, EnsembleNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
DATA = ROOT / "data" / "segebarth2020"
TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def zoo_ensemble():
    """The members of the zoo package (real weights; read with weights_only, no package code runs)."""
    return zoo.ensemble_from_package(ZOO)


def _crops(n: int = 2, size: int = 128) -> list[np.ndarray]:
    """Real crops of two labs' images (lab-mue, lab-inns1), normalised as in training."""
    out = []
    for lab in ("lab-mue", "lab-inns1")[:n]:
        path = sorted((DATA / lab / "images").glob("*.png"))[0]
        img = iio.imread(path).astype(np.float64)
        img = img[..., 0] if img.ndim == 3 else img
        crop = img[200 : 200 + size, 300 : 300 + size]
        lo, hi = np.percentile(crop, [1.0, 99.99])
        out.append(((crop - lo) / (hi - lo + 1e-6)).astype(np.float32))
    return out


def _net(ens, *, n_members: int, views, measure: str) -> EnsembleNet:
    net = EnsembleNet(dict(ens.metadata["architecture"]["config"]), n_members=n_members, views=views,
                      measure=measure)
    for dst, src in zip(net.members, ens.members[:n_members]):
        dst.load_state_dict(src.state_dict())
    return net.eval()


def _torch_out(net: EnsembleNet, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in net(torch.from_numpy(x))]


def test_import_fiji_consensus_loads_no_tensorflow_keras_or_torch():
    code = ("import sys, fiji_consensus, fiji_consensus.keras, fiji_consensus.keras.export, "
            "fiji_consensus.keras.member, fiji_consensus.zoo, fiji_consensus.predict\n"
            "print(','.join(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"imported {proc.stdout.strip()}"


def test_keras_ensemble_equals_torch_on_real_crops(zoo_ensemble):
    """Real members, all 8 dihedral views inside, predictive entropy: Keras within 1e-5 of torch."""
    net = _net(zoo_ensemble, n_members=2, views=ENSEMBLE_VIEWS, measure="entropy")
    model = kx.from_ensemble_net(net)
    x = np.stack(_crops())[:, None]  # (2, 1, 128, 128)
    got = model.predict(x, verbose=0)
    ref = _torch_out(net, x)
    assert [o.shape for o in got] == [r.shape for r in ref] == [(2, 1, 128, 128)] * 2
    for g, r in zip(got, ref):
        assert np.abs(g - r).max() <= TOL
    assert 0.01 < float((ref[0] > 0.5).mean()) < 0.5 and float(ref[1].max()) > 0.5  # real, informative crops
    assert [layer.__class__.__module__.split(".")[0] for layer in model.layers] == ["keras"] * len(model.layers)


@pytest.mark.parametrize("measure", ["expected_entropy", "mutual_information", "std", "deepflash2"])
def test_every_uncertainty_measure_matches_torch(zoo_ensemble, measure):
    net = _net(zoo_ensemble, n_members=2, views=("identity", "rot90"), measure=measure)
    x = _crops(1, 96)[0][None, None]
    got = kx.from_ensemble_net(net).predict(x, verbose=0)
    for g, r in zip(got, _torch_out(net, x)):
        assert np.abs(g - r).max() <= TOL


@pytest.mark.parametrize("cfg", [{"norm": "group", "groups": 4, "upsample": "nearest"},
                                 {"norm": "none", "convs_per_block": 1}])
def test_other_unet_configurations_match_torch(cfg):
    torch.manual_seed(0)
    net = EnsembleNet({"depth": 2, "base_channels": 4, **cfg}, n_members=1, views=("flip_x", "antitranspose"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net.eval()
    x = _crops(1, 64)[0][None, None]
    for g, r in zip(kx.from_ensemble_net(net).predict(x, verbose=0), _torch_out(net, x)):
        assert np.abs(g - r).max() <= TOL


def test_keras_unet_refuses_mismatched_weights(zoo_ensemble):
    cfg = dict(zoo_ensemble.metadata["architecture"]["config"], depth=2)
    with pytest.raises(ValueError, match="state dict of unet (does not fit|does not use|has no)"):
        kx.keras_unet(cfg, zoo_ensemble.members[0].state_dict())
