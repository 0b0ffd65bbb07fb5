"""The old path of the evaluate job, kept so that users' imports and the macros keep working: this name is the
module :mod:`fiji_consensus.jobs.evaluate` itself (same object, so attributes and monkeypatching agree)."""

import sys

from .jobs import evaluate as _job

sys.modules[__name__] = _job
