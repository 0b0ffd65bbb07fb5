"""Consensus of several experts' annotations: majority vote, soft labels, STAPLE and object-level consensus.

Every function takes the experts' annotations as one ``(R, Y, X)`` array (``R`` experts) or a sequence of
``R`` two-dimensional arrays, and returns arrays; nothing here reads or writes files.

* :func:`majority_vote` and :func:`expert_fraction`: pixel-wise voting and the soft label (fraction of
  experts marking a pixel).
* :func:`staple`: binary STAPLE (Warfield, Zou & Wells, IEEE TMI 23(7):903-921, 2004), a faithful
  replication of ITK's ``STAPLEImageFilter`` as wrapped by SimpleITK (``SimpleITK.STAPLE``): same
  initialisation, prior, update order and stopping rule, so ``staple(masks).mask()`` reproduces the
  published consensus ``est_GT`` of Segebarth et al. (eLife 2020) pixel for pixel. It also returns every
  expert's sensitivity and specificity.
* :func:`staple_pooled` (:func:`vote_patterns`, :func:`staple_fit`, :func:`staple_posterior`): binary STAPLE
  when experts annotated different images (missing raters): each expert's sensitivity and specificity pooled
  over the images that expert annotated, each image's posterior from its own experts.
* :func:`staple_multiclass`: multi-class STAPLE with per-expert confusion matrices, following ITK's
  ``MultiLabelSTAPLEImageFilter``.
* :func:`object_consensus`: an object-level consensus in which touching cells stay separate objects.

Speed
-----
For binary masks the STAPLE EM depends on a pixel only through its *vote pattern* (which experts marked
it). The stack is compressed to one pattern code per pixel (bit packing for up to 16 experts, unique
rows beyond), the patterns are counted once, the EM runs on at most ``2**R`` weighted patterns and the
posterior is expanded back with a lookup table. This gives the same numbers as the pixel-wise EM (up to
floating-point summation order) at a small fraction of the cost. The multi-class STAPLE is compressed
the same way.

The package's modules: :mod:`~fiji_consensus.consensus.voting`, :mod:`~fiji_consensus.consensus.patterns`,
:mod:`~fiji_consensus.consensus.binary`, :mod:`~fiji_consensus.consensus.pooled`,
:mod:`~fiji_consensus.consensus.multiclass`, :mod:`~fiji_consensus.consensus.objects` and
:mod:`~fiji_consensus.consensus.dispatch` (:func:`consensus_of`, the one switch between the methods);
every public name is importable from ``fiji_consensus.consensus``.
"""

from __future__ import annotations

from fiji_consensus.consensus._common import STAPLE_MAX_ITER, STAPLE_TOL
from fiji_consensus.consensus.dispatch import CONSENSUS_METHODS, consensus_of, training_targets
from fiji_consensus.consensus.multiclass import MultiClassStapleResult, staple_multiclass
from fiji_consensus.consensus.objects import ObjectConsensusResult, object_consensus
from fiji_consensus.consensus.patterns import vote_patterns
from fiji_consensus.consensus.pooled import (
    PooledStapleResult,
    StapleFit,
    staple_fit,
    staple_pooled,
    staple_posterior,
)
from fiji_consensus.consensus.binary import StapleResult, staple
from fiji_consensus.consensus.voting import expert_fraction, majority_vote

__all__ = [
    "majority_vote",
    "expert_fraction",
    "StapleResult",
    "staple",
    "vote_patterns",
    "StapleFit",
    "staple_fit",
    "staple_posterior",
    "PooledStapleResult",
    "staple_pooled",
    "MultiClassStapleResult",
    "staple_multiclass",
    "ObjectConsensusResult",
    "object_consensus",
    "CONSENSUS_METHODS",
    "consensus_of",
    "training_targets",
    "STAPLE_TOL",
    "STAPLE_MAX_ITER",
]
