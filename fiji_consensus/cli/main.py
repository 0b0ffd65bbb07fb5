"""The parser of every command, and ``main``: parse -> config model -> one job -> exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ._common import add_common, emit_json, error_text, logger, setup_logging
from .experts import add_agreement, add_consensus, add_evaluate, add_plan
from .models import add_demo, add_fiji, add_package, add_predict, add_zoo
from .training import add_adapt, add_calibrate, add_crossval, add_train

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: The commands in the order ``--help`` lists them.
COMMANDS = (add_consensus, add_agreement, add_plan, add_train, add_crossval, add_adapt, add_calibrate, add_predict, add_package,
            add_zoo, add_evaluate, add_demo, add_fiji)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiji-consensus",
        description="Multi-expert consensus, agreement and (later) U-Net ensembles for Fiji/ImageJ users.",
    )
    parser.add_argument("--version", action="version", version=f"fiji-consensus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in _runnable(parser):
        add_common(command)
    return parser


def _runnable(parser: argparse.ArgumentParser):
    """Every command and subcommand that runs something (``fiji`` and ``zoo`` only group theirs)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if sub.get_default("func") is not None:
                    yield sub
                yield from _runnable(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 only on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return EXIT_USAGE
    setup_logging(args.verbose, args.quiet or args.json)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        msg = ("interrupted; rerun the same command with --resume to continue" if hasattr(args, "resume")
               else "interrupted; rerun the same command")
        if args.json:
            emit_json({"ok": False, "command": args.command, "error": msg})
        print(f"fiji-consensus: {msg}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the CLI turns every failure into a message + exit code
        if args.debug:
            logger.exception("failed")
        msg = error_text(exc)
        if args.json:
            emit_json({"ok": False, "command": args.command, "error": msg, "error_type": type(exc).__name__})
        print(f"fiji-consensus {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        emit_json(result)
    if isinstance(result, dict) and result.get("ok") is False:
        print(f"fiji-consensus {args.command}: error: {result.get('error', 'failed')}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
