"""A plain 2-D U-Net that old runtimes (deepImageJ's libtorch 2.0 / onnxruntime 1.13, ONNX opset 17) can run.

Only convolutions, batch or group normalisation, ReLU, max-pooling, 2x2 transposed convolutions (or
nearest-neighbour upsampling followed by a convolution), concatenation and a final sigmoid are used. All
convolutions are "same"-padded, so the output has the input's size for any tile whose height and width are
multiples of ``2**depth``.

An optional first step, ``background_radius > 0``, subtracts the image's background inside the network: a
white top-hat, ``x - opening(x)``, with a square window of ``2 * background_radius + 1`` pixels (a grayscale
erosion then dilation, each two 1-D max-poolings; the window is rotation- and flip-invariant). It is Fiji's
*Process > Subtract Background* idea (a rolling ball is an opening with a ball) in layers that every export
format has, so deepImageJ and ``predict`` give the same result and no preprocessing beyond the spec's
percentile scaling is needed. Objects narrower than the window keep their height above the local background;
smooth backgrounds, vignetting and bright tissue wider than the window are removed.

``depth`` counts the pooling steps: a network of depth 3 has 4 resolution levels (the layout of the
Segebarth et al. 2020 / Falk et al. 2019 U-Net). :func:`receptive_field_radius` gives the exact number of
pixels on each side that can influence an output pixel; :func:`halo_for` rounds it up to a multiple of
``2**depth``, the halo that tiled prediction must crop (bioimage.io ``halo``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["UNet", "TopHat", "receptive_field_radius", "halo_for", "check_tile_shape"]

_NORMS = ("batch", "group", "none")
_UPSAMPLES = ("transpose", "nearest")


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        g = math.gcd(channels, max(1, groups))
        return nn.GroupNorm(g, channels)
    return nn.Identity()


class _Block(nn.Sequential):
    """``convs`` times (3x3 conv, norm, ReLU)."""

    def __init__(self, cin: int, cout: int, *, norm: str, groups: int, convs: int) -> None:
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=norm == "none"),
                _norm(norm, cout, groups),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class TopHat(nn.Module):
    """White top-hat ``x - opening(x)`` with a square window of ``2 * radius + 1`` pixels.

    Erosion is ``-maxpool(-x)``; both poolings are separable (a row, then a column) and ignore pixels outside
    the image (max-pooling pads with -inf), the same in torch, ONNX, TorchScript and Keras (``padding="same"``).

    >>> x = torch.zeros(1, 1, 16, 16); x[..., 7:9, 7:9] = 1.0; x += torch.linspace(0, 5, 16)  # spot on a ramp
    >>> y = TopHat(3)(x)
    >>> round(float(y[..., 7, 7]), 3), round(float(y[..., 0, 0]), 3), round(float(y[..., 2, 12]), 3)
    (1.0, 0.0, 0.0)
    """

    def __init__(self, radius: int) -> None:
        super().__init__()
        if radius < 1:
            raise ValueError(f"background radius must be >= 1 pixel; got {radius}")
        self.radius = int(radius)
        k = 2 * self.radius + 1
        self.row = nn.MaxPool2d((1, k), stride=1, padding=(0, self.radius))
        self.col = nn.MaxPool2d((k, 1), stride=1, padding=(self.radius, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eroded = -self.col(self.row(-x))
        opened = self.col(self.row(eroded))
        return x - opened


class UNet(nn.Module):
    """2-D U-Net with same padding and a sigmoid output.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input image and of the output probability map.
    depth : int
        Number of 2x2 max-pooling steps (resolution levels = depth + 1). Tiles must be multiples of
        ``2**depth`` in y and x.
    base_channels : int
        Feature channels at full resolution; doubled at each level.
    norm : {"batch", "group", "none"}
        Normalisation after each convolution.
    groups : int
        Groups for group normalisation (reduced to a divisor of the channel count).
    upsample : {"transpose", "nearest"}
        2x2 stride-2 transposed convolution, or nearest-neighbour upsampling + 1x1 convolution.
    convs_per_block : int
        3x3 convolutions per level.
    background_radius : int
        0 (default): none. Otherwise the input's background is removed first by a white top-hat with a
        square window of ``2 * background_radius + 1`` pixels (:class:`TopHat`); choose it wider than the
        widest object. Adds ``2 * background_radius`` to the receptive field.

    Group normalisation pools statistics over the whole tile, so its outputs depend on the tile size and
    tiled prediction is only approximately seamless; batch normalisation (eval mode) keeps every output
    pixel a function of its receptive field alone.

    ``forward`` returns probabilities in [0, 1] (sigmoid inside the network, as deepImageJ needs);
    ``forward_logits`` returns the logits, for numerically stable training.

    Examples
    --------
    >>> net = UNet(depth=2, base_channels=8)
    >>> net(torch.zeros(1, 1, 32, 48)).shape
    torch.Size([1, 1, 32, 48])
    >>> net.receptive_field_radius, net.halo
    (23, 24)
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 3,
        base_channels: int = 16,
        norm: str = "batch",
        groups: int = 8,
        upsample: str = "transpose",
        convs_per_block: int = 2,
        background_radius: int = 0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        if base_channels < 1 or in_channels < 1 or out_channels < 1 or convs_per_block < 1:
            raise ValueError(
                "base_channels, in_channels, out_channels and convs_per_block must be >= 1; got "
                f"{base_channels}, {in_channels}, {out_channels}, {convs_per_block}"
            )
        if background_radius < 0:
            raise ValueError(f"background_radius must be >= 0 (0 = none); got {background_radius}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}; got {norm!r}")
        if upsample not in _UPSAMPLES:
            raise ValueError(f"upsample must be one of {_UPSAMPLES}; got {upsample!r}")
        self.config: dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            depth=depth,
            base_channels=base_channels,
            norm=norm,
            groups=groups,
            upsample=upsample,
            convs_per_block=convs_per_block,
        )
        if background_radius:  # stored only when used, so older ensemble.json files read the same
            self.config["background_radius"] = int(background_radius)
        self.background = TopHat(background_radius) if background_radius else None
        ch = [base_channels * 2**i for i in range(depth + 1)]
        kw = dict(norm=norm, groups=groups, convs=convs_per_block)
        self.down = nn.ModuleList(
            [_Block(in_channels if i == 0 else ch[i - 1], ch[i], **kw) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.bottom = _Block(ch[depth - 1], ch[depth], **kw)
        ups: list[nn.Module] = []
        for i in reversed(range(depth)):
            if upsample == "transpose":
                ups.append(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2))
            else:
                ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 1)))
        self.up = nn.ModuleList(ups)
        self.up_blocks = nn.ModuleList([_Block(2 * ch[i], ch[i], **kw) for i in reversed(range(depth))])
        self.head = nn.Conv2d(ch[0], out_channels, 1)

    @property
    def depth(self) -> int:
        return int(self.config["depth"])

    @property
    def receptive_field_radius(self) -> int:
        """Pixels on each side of an output pixel that can influence it (exact, worst grid alignment)."""
        return receptive_field_radius(self.depth, convs_per_block=self.config["convs_per_block"],
                                      background_radius=self.config.get("background_radius", 0))

    @property
    def halo(self) -> int:
        """The receptive-field radius rounded up to a multiple of ``2**depth``."""
        return halo_for(self.depth, convs_per_block=self.config["convs_per_block"],
                        background_radius=self.config.get("background_radius", 0))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet:
        """Rebuild a network from :attr:`config` (as stored in ``ensemble.json``)."""
        return cls(**config)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.jit.is_scripting()):
            check_tile_shape(tuple(x.shape[-2:]), self.depth)
        if self.background is not None:
            x = self.background(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))


def check_tile_shape(shape: tuple[int, ...], depth: int) -> None:
    """Raise a clear error unless every spatial size is a positive multiple of ``2**depth``."""
    m = 2**depth
    if any(int(s) <= 0 or int(s) % m for s in shape):
        raise ValueError(
            f"tile height and width must be positive multiples of 2**depth = {m} for a U-Net of depth "
            f"{depth}; got {tuple(int(s) for s in shape)} (pad the image, e.g. with pad_to_multiple)"
        )


def receptive_field_radius(depth: int, *, convs_per_block: int = 2, background_radius: int = 0) -> int:
    """Exact receptive-field radius (pixels) of :class:`UNet` of this depth, worst case over grid phases.

    Propagates, for each output position within one period of ``2**depth`` pixels, the interval of input
    pixels it depends on back through every layer (3x3 convs widen by 1, 2x2 pooling maps ``[a, b]`` to
    ``[2a, 2b + 1]``, 2x2 stride-2 upsampling maps ``[a, b]`` to ``[a // 2, b // 2]``, skip connections take
    the union) and returns the largest distance from an output pixel to the edge of its interval. A top-hat
    background step adds ``2 * background_radius`` (its erosion and its dilation).

    >>> receptive_field_radius(3)
    51
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")

    def at_level(level: int, lo: int, hi: int) -> tuple[int, int]:
        # interval at the *input of the down block* of ``level`` (level 0 = network input) that feeds the
        # interval [lo, hi] of the output of the up block of ``level`` (for level == depth: the bottom block)
        lo -= convs_per_block
        hi += convs_per_block
        if level == depth:
            return lo, hi  # input of the bottom block, coordinates of level ``depth``
        # the up block's input is cat(upsampled deeper output, skip = output of the down block)
        dlo, dhi = lo // 2, hi // 2  # deeper up-block output feeding the upsampling
        dlo, dhi = at_level(level + 1, dlo, dhi)  # input of the deeper down block (pooled level-`level` map)
        plo, phi = 2 * dlo, 2 * dhi + 1  # through 2x2 max-pooling: down-block output at this level
        slo, shi = min(plo, lo), max(phi, hi)  # union with the skip connection
        return slo - convs_per_block, shi + convs_per_block  # through the down block's convs

    period = 2**depth
    radius = 0
    for x in range(period, 2 * period):
        lo, hi = at_level(0, x, x)
        radius = max(radius, x - lo, hi - x)
    return radius + 2 * int(background_radius)


def halo_for(depth: int, *, convs_per_block: int = 2, background_radius: int = 0) -> int:
    """Receptive-field radius rounded up to a multiple of ``2**depth``: the halo for tiled prediction.

    >>> halo_for(3), halo_for(3, background_radius=30)
    (56, 112)
    """
    m = 2**depth
    r = receptive_field_radius(depth, convs_per_block=convs_per_block, background_radius=background_radius)
    return int(math.ceil(r / m) * m)
