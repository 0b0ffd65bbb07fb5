"""The torch layer: U-Net, training data, ensemble training and the ensemble folder.

Needs the ``train`` extra (``pip install 'fiji-consensus[train]'``). Importing this package is cheap: torch is
imported only when a torch-backed name is used, so ``fiji_consensus.nn.train.TrainConfig`` (pydantic) and
``fiji_consensus.nn.data`` (numpy) are usable without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "UNet": "unet",
    "receptive_field_radius": "unet",
    "halo_for": "unet",
    "TrainConfig": "train",
    "AugmentOptions": "train",
    "train_ensemble": "train",
    "make_splits": "train",
    "masked_bce_dice_loss": "train",
    "Ensemble": "ensemble",
    "load_ensemble": "ensemble",
    "save_ensemble": "ensemble",
    "percentile_normalize": "data",
    "PatchSampler": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        mod = _EXPORTS[name]
        if mod in ("unet", "ensemble"):
            from .._validate import require

            require("torch", extra="train")
        return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
