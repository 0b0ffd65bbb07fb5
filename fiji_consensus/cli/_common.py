"""What every command shares: logging, the JSON line, error texts, tables, the common and Dask options."""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._builder import add_field, field_values

logger = logging.getLogger("fiji_consensus.cli")


def setup_logging(verbosity: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("fiji_consensus")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def emit_json(payload: dict[str, Any]) -> None:
    from .._util import json_safe

    sys.stdout.write(json.dumps(json_safe(payload), allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


def error_text(exc: BaseException) -> str:
    """One line for a failure: a config's validation errors name the options (``--kebab-name: ...``)."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            got = err.get("input")
            if "got" not in msg and isinstance(got, (int, float, str)) and not isinstance(got, bool):
                msg += f" (got {got!r})"  # what was received, next to what was expected
            parts.append(f"{loc.replace('_', '-')}: {msg}" if loc else msg)
        return "invalid arguments: " + "; ".join(parts)
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file not found: {exc.filename}"
    return str(exc) or type(exc).__name__


def fmt(v: Any) -> str:
    """A table cell: floats with 3 decimals, missing values as ``nan``.

    >>> fmt(0.12345), fmt(None), fmt(7)
    ('0.123', '  nan', '7')
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "  nan"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (first column left-aligned, the others right-aligned)."""
    if not rows:
        return ""
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths)))
              for row in cells]
    return "\n".join(lines)


def progress(a: argparse.Namespace) -> bool:
    """Show a progress bar (stderr) unless --no-progress or --quiet."""
    return not (a.no_progress or a.quiet)


def job_command(
    sub: Any, name: str, model: type, job: str, *, help: str, report: Callable[[dict[str, Any]], None],
    config: Callable[[argparse.Namespace], Any] | None = None, progress_bar: bool = True,
) -> argparse.ArgumentParser:
    """A command that runs one job on one config model; its description is the model's docstring.

    ``job``: ``"module.function"`` under ``fiji_consensus``, looked up when the command runs (so the job's
    module is imported only then); ``config``: builds the model from the arguments (default:
    ``model(**field_values(args, model))``); ``report``: prints the job's summary unless ``--json``.
    """
    p = sub.add_parser(name, help=help, description=inspect.getdoc(model))
    run = functools.partial(_run_job, job=job, config=config or functools.partial(_config_of, model),
                            report=report, progress_bar=progress_bar)
    p.set_defaults(func=run)
    return p


def _config_of(model: type, a: argparse.Namespace) -> Any:
    return model(**field_values(a, model))


def _run_job(a: argparse.Namespace, *, job: str, config: Callable, report: Callable, progress_bar: bool) -> Any:
    cfg = config(a)
    module, _, name = job.rpartition(".")
    fn = getattr(importlib.import_module(f"fiji_consensus.{module}"), name)
    summary = fn(cfg, progress=progress(a)) if progress_bar else fn(cfg)
    if not a.json:
        report(summary)
    return summary


def add_common(p: argparse.ArgumentParser) -> None:
    """Output and logging options of every command (the CLI's own: no config model holds them)."""
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON result line on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    p.add_argument("-v", "--verbose", action="count", default=1, help="more log output (-vv for debug)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def add_dask(p: argparse.ArgumentParser, *, task: str) -> None:
    """The fields of ``DaskOptions``: an existing scheduler or a local cluster (one of them)."""
    from ..config import DaskOptions

    g = p.add_argument_group(
        f"Dask (the distributed extra): one task per {task} on a cluster; the machines share the files"
    )
    x = g.add_mutually_exclusive_group()
    add_field(x, DaskOptions, "scheduler", metavar="ADDRESS")
    add_field(x, DaskOptions, "workers", metavar="N")
    add_field(g, DaskOptions, "threads_per_worker", metavar="N")
    add_field(g, DaskOptions, "retries", metavar="N")


def dask_options(a: argparse.Namespace) -> Any:
    """The ``DaskOptions`` of the arguments, or None when neither --scheduler nor --workers is given."""
    if a.scheduler is None and a.workers is None:
        return None
    from ..config import DaskOptions

    return DaskOptions(**field_values(a, DaskOptions))
