"""The torch layer: U-Net, training data, ensemble training and the ensemble folder.

Needs the ``train`` extra (``pip install 'fiji-consensus[train]'``). Importing this package is cheap: torch is
imported only when a torch-backed name is used, so ``fiji_consensus.nn.train.TrainConfig`` (pydantic) and
``fiji_consensus.nn.data`` (numpy) are usable without torch.
"""

from __future__ import annotations

from .._util import lazy_getattr

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


def _require_torch(module: str) -> None:
    if module in ("unet", "ensemble"):
        from .._validate import require

        require("torch", extra="train")


__getattr__ = lazy_getattr(__name__, _EXPORTS, _require_torch)
