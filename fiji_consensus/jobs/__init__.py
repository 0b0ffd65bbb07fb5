"""Jobs: one call per CLI command, from a validated config to files in an output folder.

One module per job: :mod:`.consensus`, :mod:`.agreement`, :mod:`.plan`, :mod:`.train`, :mod:`.crossval`,
:mod:`.predict`, :mod:`.evaluate`, :mod:`.package`; what they share (the dataset a config names, the provenance record,
progress bars, the consensus/agreement output folders) is in :mod:`._common`. A job reads its inputs through
:mod:`fiji_consensus.io`, computes with the layers below, and writes Fiji-native outputs; every file is
written atomically, the folder stores the config that made it (``config.json``), and an interrupted run is
continued (images whose ``per_image/<id>.json`` exists are done).

Nothing here imports torch, Dask, bioimage.io or Java at import time: the jobs import their backends inside
the functions that need them.
"""

from __future__ import annotations

from ..consensus import consensus_of
from ..io import read_groups
from ..style import CONSENSUS_COLOR, EXPERT_COLORS
from ._common import design_of
from .agreement import run_agreement, score_raters
from .consensus import run_consensus
from .crossval import run_crossval
from .evaluate import run_evaluate
from .package import run_package
from .plan import next_planned, run_plan
from .predict import run_predict
from .train import run_train

__all__ = [
    "run_consensus", "run_agreement", "run_plan", "next_planned", "run_train", "run_crossval", "run_predict",
    "run_evaluate", "run_package", "consensus_of", "score_raters", "design_of", "read_groups", "EXPERT_COLORS",
    "CONSENSUS_COLOR",
]
