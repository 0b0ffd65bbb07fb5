"""U-Net: shapes, allowed ops, exact receptive field, tile-size errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import warnings  # noqa: E402

from torch import nn  # noqa: E402

from fiji_consensus.nn.unet import UNet, check_tile_shape, halo_for, receptive_field_radius  # noqa: E402




@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("upsample", ["transpose", "nearest"])
@pytest.mark.parametrize("shape", [(16, 16), (32, 48), (48, 16)])
def test_same_padding_any_multiple(norm, upsample, shape):
    net = UNet(depth=2, base_channels=4, norm=norm, upsample=upsample).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 1, *shape)
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.allclose(torch.sigmoid(net.forward_logits(x)), y)


def test_in_channels_and_depth():
    net = UNet(in_channels=3, out_channels=2, depth=3, base_channels=4).eval()
    assert net(torch.zeros(1, 3, 24, 40)).shape == (1, 2, 24, 40)
    assert net.depth == 3


@pytest.mark.parametrize("shape", [(30, 32), (32, 2), (6, 8)])
def test_bad_tile_size_is_a_clear_error(shape):
    net = UNet(depth=2, base_channels=4)
    with pytest.raises(ValueError, match=r"multiples of 2\*\*depth = 4.*got \("):
        net(torch.zeros(1, 1, *shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(norm="layer")
    with pytest.raises(ValueError, match="upsample"):
        UNet(upsample="bicubic")
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=0)
    with pytest.raises(ValueError, match="multiples"):
        check_tile_shape((0, 8), 2)


def test_only_exportable_ops():
    allowed = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.ReLU, nn.MaxPool2d, nn.Upsample)
    for upsample in ("transpose", "nearest"):
        for norm in ("batch", "group"):
            net = UNet(depth=2, base_channels=4, norm=norm, upsample=upsample)
            leaves = [m for m in net.modules() if not list(m.children())]
            bad = [type(m).__name__ for m in leaves if not isinstance(m, allowed)]
            assert not bad, bad


def test_traceable_without_warnings():
    net = UNet(depth=2, base_channels=4).eval()
    x = torch.randn(1, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TracerWarning (Python control flow on shapes) fails the test
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace itself is deprecated in 2.13
        traced = torch.jit.trace(net, x)
    assert torch.equal(traced(x), net(x))


def test_config_round_trip():
    net = UNet(depth=2, base_channels=4, norm="group", groups=2)
    clone = UNet.from_config(net.config)
    clone.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(clone.eval()(x), net.eval()(x))


def _empirical_radius(depth: int) -> int:
    net = UNet(depth=depth, base_channels=4, norm="none").double().eval()
    m = 2**depth
    size = 2 * receptive_field_radius(depth) + 4 * m
    size += (-size) % m
    radius = 0
    for phase in range(m):
        x = torch.randn(1, 1, size, size, dtype=torch.double, requires_grad=True)
        c = size // 2 + phase
        net.forward_logits(x)[0, 0, c, c].backward()
        cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
        radius = max(radius, c - int(cols.min()), int(cols.max()) - c, c - int(rows.min()), int(rows.max()) - c)
    return radius


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_is_exact(depth):
    assert _empirical_radius(depth) == receptive_field_radius(depth)


def test_halo_values():
    assert [receptive_field_radius(d) for d in (1, 2, 3, 4)] == [9, 23, 51, 107]
    assert [halo_for(d) for d in (1, 2, 3, 4)] == [10, 24, 56, 112]
    net = UNet(depth=3)
    assert net.halo == 56 and net.halo % 8 == 0 and net.halo >= net.receptive_field_radius


def test_batchnorm_eval_output_is_local():
    # in eval mode, pixels beyond the receptive field do not change an output pixel (tiling is seamless)
    net = UNet(depth=2, base_channels=4, norm="batch").eval()
    r = net.receptive_field_radius
    x = torch.randn(1, 1, 128, 128)
    y0 = net(x)[0, 0, 60, 60]
    x2 = x.clone()
    x2[..., 60 + r + 1 :, :] = 5.0
    x2[..., :, : 60 - r] = -5.0
    assert torch.equal(net(x2)[0, 0, 60, 60], y0)
    x2[..., 61, 60] = 9.0
    assert not torch.equal(net(x2)[0, 0, 60, 60], y0)


# --- in-network background removal (white top-hat) -------------------------------------------------------

def test_tophat_removes_smooth_background_and_keeps_spots():
    from fiji_consensus.nn.unet import TopHat

    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    background = 40 + 0.3 * xx + 20 * torch.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 30.0**2))
    spots = torch.zeros(96, 96)
    spots[20:26, 30:36] = 10.0  # narrower than the window (2 * 8 + 1)
    spots[60:64, 70:75] = 5.0
    out = TopHat(8)(((background + spots)[None, None]))[0, 0]
    assert abs(float(out[20:26, 30:36].mean()) - 10.0) < 1.0 and abs(float(out[60:64, 70:75].mean()) - 5.0) < 1.0
    far = torch.ones(96, 96, dtype=torch.bool)
    far[10:36, 20:46] = False
    far[50:74, 60:85] = False
    far[:8], far[-8:], far[:, :8], far[:, -8:] = False, False, False, False  # windows cut by the image edge
    assert float(out[far].abs().max()) < 1.5  # a background 40-108 high is gone (up to its curvature)
    assert float(out.min()) >= 0.0
    with pytest.raises(ValueError, match="radius"):
        TopHat(0)


def test_tophat_network_is_local_within_its_receptive_field():
    net = UNet(depth=2, base_channels=4, norm="batch", background_radius=6).eval()
    r = net.receptive_field_radius
    assert r == receptive_field_radius(2) + 12 and net.halo == halo_for(2, background_radius=6) == 36
    x = torch.randn(1, 1, 160, 160)
    y0 = net(x)[0, 0, 80, 80]
    x2 = x.clone()
    x2[..., 80 + r + 1 :, :] = 5.0
    x2[..., :, : 80 - r] = -5.0
    assert torch.equal(net(x2)[0, 0, 80, 80], y0)
    x3 = x.clone()
    x3[..., 80 - 20 : 80 - 10, 75:85] = 9.0  # a bright block inside the receptive field
    assert not torch.equal(net(x3)[0, 0, 80, 80], y0)
    assert torch.allclose(net(x + 3.0), net(x), atol=1e-5)  # a constant background is removed exactly


def test_tophat_config_round_trip_and_old_configs():
    net = UNet(depth=2, base_channels=4, background_radius=5)
    assert net.config["background_radius"] == 5
    assert "background_radius" not in UNet(depth=2, base_channels=4).config  # ensemble.json of older models
    clone = UNet.from_config(net.config)
    clone.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(clone.eval()(x), net.eval()(x))
    with pytest.raises(ValueError, match="background_radius"):
        UNet(background_radius=-1)


def test_tophat_exports_to_torchscript_and_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = UNet(depth=2, base_channels=4, background_radius=7).eval()
    x = torch.randn(1, 1, 64, 80) * 10 + torch.linspace(0, 30, 80)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = net(x).numpy()
        traced = torch.jit.trace(net, x)
        torch.onnx.export(net, (x,), str(tmp_path / "n.onnx"), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["p"],
                          dynamic_axes={"input": {2: "y", 3: "x"}, "p": {2: "y", 3: "x"}})
    with torch.no_grad():
        assert abs(traced(x).numpy() - ref).max() < 1e-6
    sess = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    assert abs(got - ref).max() < 1e-5
    x2 = torch.randn(1, 1, 96, 48)  # another size through the dynamic axes
    with torch.no_grad():
        assert abs(sess.run(None, {"input": x2.numpy()})[0] - net(x2).numpy()).max() < 1e-5
