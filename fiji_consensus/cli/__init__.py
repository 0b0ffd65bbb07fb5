"""Command line: ``fiji-consensus <command>``.

Each command parses its arguments, builds a validated config, calls one library function and exits with
0 only on success. ``--json`` prints exactly one machine-readable line on stdout (what Fiji's macro
``exec()`` returns); progress bars and logs go to stderr. This is the only package that configures logging.

Every option that sets a config field is made from that field (``_builder.add_field``): its default and
help text are the config model's. Modules: ``_builder`` (Field -> argparse), ``_common`` (logging, JSON line,
tables, the common and Dask options), ``experts`` (consensus, agreement, plan, evaluate), ``training``
(train, crossval, adapt), ``models`` (predict, package, zoo, demo, fiji), ``main`` (the parser, ``main``).
"""

from .main import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, build_parser, main

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED"]
