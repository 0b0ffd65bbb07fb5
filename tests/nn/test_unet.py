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
