"""One model interface (fiji_consensus.models): what a model is is decided in one place."""

from __future__ import annotations

import numpy as np
import pytest

from fiji_consensus import models
from fiji_consensus._util import sha256_file


def test_model_kind_decides_folders_packages_and_keras_files(tmp_path):
    folder = tmp_path / "ens"
    folder.mkdir()
    (folder / "ensemble.json").write_text("{}")
    pkg_dir = tmp_path / "pkg"
    pkg_dir.mkdir()
    (pkg_dir / "rdf.yaml").write_text("type: model\n")
    assert models.model_kind(folder) == "ensemble"
    assert models.model_kind(folder / "ensemble.json") == "ensemble"
    assert models.model_kind([tmp_path / "a.zip"]) == "packages"
    assert models.model_kind([pkg_dir, pkg_dir / "rdf.yaml", tmp_path / "m.keras", tmp_path / "m.h5"]) == "packages"
    with pytest.raises(ValueError, match="mixes bioimage.io packages and ensemble folders"):
        models.model_kind([folder, tmp_path / "a.zip"])
    with pytest.raises(ValueError, match="several models must all be bioimage.io packages"):
        models.model_kind([folder, folder])
    with pytest.raises(ValueError, match="at least one path"):
        models.model_kind([])


def test_missing_models_and_keras_without_normalisation_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ensemble.json found at .*nowhere: is this an ensemble folder"):
        models.load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="bioimage.io package not found: .*gone.zip"):
        models.model_sha256([tmp_path / "gone.zip"])
    (tmp_path / "m.keras").write_bytes(b"not loaded: the normalisation is checked first")
    with pytest.raises(ValueError, match="plain Keras models need their normalisation"):
        models.load_model([tmp_path / "m.keras"])


def test_an_ensemble_folder_predicts_as_nn_predict_does(tmp_path):
    torch = pytest.importorskip("torch")
    from fiji_consensus.nn.ensemble import load_ensemble, save_ensemble
    from fiji_consensus.nn.predict import predict
    from fiji_consensus.nn.unet import UNet

    torch.manual_seed(0)
    nets = {}
    for k in range(2):
        net = UNet(depth=2, base_channels=4).eval()
        nets[k] = net.state_dict()
    meta = {"architecture": {"name": "UNet", "config": net.config, "halo": net.halo},
            "normalization": {"method": "scale_range", "mode": "per_sample", "min_percentile": 1.0,
                              "max_percentile": 99.8, "eps": 1e-6},
            "members": [{"index": k, "selected": True} for k in range(2)], "threshold": 0.5}
    save_ensemble(tmp_path / "ens", nets, meta)
    image = np.random.default_rng(0).normal(100, 20, (72, 90)).astype(np.float32)
    model = models.load_model(tmp_path / "ens")
    assert model.kind == "ensemble" and model.describe() == {} and len(model.metadata) == 1
    got = model.predict(image, tile=64, measure="std")
    ref = predict(load_ensemble(tmp_path / "ens"), image, tta="flips", tile=64, measure="std")
    assert got.views == ref.views and len(got.views) > 1  # the folder's default views: the flips
    np.testing.assert_array_equal(got.probability, ref.probability)
    np.testing.assert_array_equal(got.uncertainty, ref.uncertainty)
    one = model.predict(image, tile=64, tta="none")
    assert len(one.views) == 1
    assert models.model_sha256(tmp_path / "ens") == sha256_file(tmp_path / "ens" / "ensemble.json")
    ens = models.load_torch_ensemble(tmp_path / "ens")
    np.testing.assert_array_equal(predict(ens, image, tta="flips", tile=64).probability, ref.probability)
