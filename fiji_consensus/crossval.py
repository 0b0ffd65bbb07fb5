"""The old path of the crossval job, kept so that users' imports and the macros keep working: this name is the
module :mod:`fiji_consensus.jobs.crossval` itself (same object, so attributes and monkeypatching agree)."""

import sys

from .jobs import crossval as _job

sys.modules[__name__] = _job
