"""``python -m fiji_consensus.cli`` runs the command line (as ``python -m fiji_consensus`` does)."""

import sys

from .main import main

sys.exit(main())
