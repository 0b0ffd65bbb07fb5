"""The old path of the predict job, kept so that users' imports and the macros keep working: this name is the
module :mod:`fiji_consensus.jobs.predict` itself (same object, so attributes and monkeypatching agree)."""

import sys

from .jobs import predict as _job

sys.modules[__name__] = _job
