"""Config model fields -> argparse options: the CLI states no default and no help text of its own.

:func:`add_field` turns one pydantic ``Field`` of a config model into one option: ``name`` -> ``--kebab-name``
(or the ``flag`` given), ``dest`` = the field's name, the default = the field's default, the help = the
field's description, ``choices`` from a ``Literal``, ``nargs`` for lists and tuples, booleans as flags
(``store_true`` for a field that is off by default, ``store_false`` under a ``--no-...`` flag for one that
is on). :func:`field_values` reads the values of a model's fields back from the parsed arguments, so a
command builds its config as ``Model(**field_values(args, Model))``. Every action made here carries
``config_field = (model, names)``: ``tests/test_cli_defaults.py`` walks the parser and checks each default.

>>> import argparse
>>> from pydantic import BaseModel, Field
>>> class Demo(BaseModel):
...     tile: int = Field(256, ge=32, description="Tile edge in pixels.")
...     tta: Literal["none", "flips"] = Field("flips", description="Test-time views.")
...     overlays: bool = Field(True, description="Write overlays.")
>>> p = argparse.ArgumentParser()
>>> _ = add_field(p, Demo, "tile"); _ = add_field(p, Demo, "tta"); _ = add_field(p, Demo, "overlays", flag="--no-overlays")
>>> args = p.parse_args(["--tile", "512", "--no-overlays"])
>>> Demo(**field_values(args, Demo))
Demo(tile=512, tta='flips', overlays=False)
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["FieldTypeError", "add_field", "add_field_pair", "field_values", "field_default"]

_SCALARS: tuple[type, ...] = (int, float, str, Path)
_METAVARS = {int: "N", float: "X", Path: "PATH"}  # unless a command names the value better (DIR, CSV, ...)
_PAIR_SEP = "+"  # the dest of one option that fills two fields: "low_percentile+high_percentile"


class FieldTypeError(TypeError):
    """A config field whose type has no command-line form (the option must then be written by hand)."""


@dataclass(frozen=True)
class _Form:
    """How a field's type reads from the command line."""

    kind: Literal["flag", "scalar", "list", "tuple", "mapping"]
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    n: int | None = None  # tuple length
    value_type: Any = None  # mapping: the type of the values


def field_default(model: type[BaseModel], name: str) -> Any:
    """The default of ``model.name`` (a factory called), or ``PydanticUndefined`` for a required field."""
    return model.model_fields[name].get_default(call_default_factory=True)


def _scalar(tp: Any) -> tuple[Callable[[str], Any], tuple[Any, ...] | None] | None:
    """(type, choices) of a scalar or a ``Literal`` of one scalar type; None for anything else."""
    if typing.get_origin(tp) is Literal:
        values = typing.get_args(tp)
        kinds = {type(v) for v in values}
        if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
            return next(iter(kinds)), values
        return None
    if tp in _SCALARS:
        return tp, None
    return None


def _without_none(tp: Any) -> Any:
    """``X | None`` -> ``X``; ``X | list[X]`` (one or several) -> ``list[X]``; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        lists = [a for a in args if typing.get_origin(a) is list]
        if len(args) == 2 and len(lists) == 1 and typing.get_args(lists[0]) == tuple(a for a in args if a is not lists[0]):
            return lists[0]
    return tp


def _form(model: type[BaseModel], name: str) -> _Form:
    annotation = model.model_fields[name].annotation
    tp = _without_none(annotation)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return _Form("flag")
    if (s := _scalar(tp)) is not None:
        return _Form("scalar", *s)
    if origin is list and len(args) == 1 and (s := _scalar(args[0])) is not None:
        return _Form("list", *s)
    if origin is tuple and args and Ellipsis not in args and len(set(args)) == 1 and (s := _scalar(args[0])):
        return _Form("tuple", *s, n=len(args))
    if origin is dict and len(args) == 2 and args[0] is str:
        value = args[1]
        if _scalar(value) is not None or value == list[str]:
            return _Form("mapping", value_type=value)
    raise FieldTypeError(
        f"cannot build a command-line option for {model.__name__}.{name}: its type {annotation!r} is none of "
        "bool, int, float, str, Path, a Literal, a list or tuple of those, dict[str, scalar or list[str]] "
        "(optionally | None); write this option by hand"
    )


def _help(model: type[BaseModel], name: str, form: _Form, default: Any) -> str:
    text = (model.model_fields[name].description or "").replace("%", "%%")
    if form.kind == "flag":
        return text + (" (on unless this flag is given)" if default else "")
    if default is PydanticUndefined or default is None or default in ({}, []) or "default" in text.lower():
        return text
    return f"{text} (default: %(default)s)"


def _parse_pair(value_type: Any, metavar: str) -> Callable[[str], tuple[str, Any]]:
    """Parse ``NAME=VALUE`` into ``(name, value)``; a ``list[str]`` value is comma-separated."""

    def parse(text: str) -> tuple[str, Any]:
        name, sep, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"expected {metavar}; got {text!r}")
        if value_type == list[str]:
            return name, [v.strip() for v in value.split(",") if v.strip()]
        try:
            return name, value_type(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {metavar} with a {value_type.__name__} value; got {text!r}"
            ) from None

    return parse


class _Mapping(argparse.Action):
    """``NAME=VALUE`` pairs (repeated, or several after one flag) collected into the field's dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        mapping = {} if current is self.default or current is None else dict(current)
        for name, value in values if isinstance(values, list) else [values]:
            if name in mapping:
                raise argparse.ArgumentError(self, f"{name!r} given twice")
            mapping[name] = value
        setattr(namespace, self.dest, mapping)


class _Append(argparse.Action):
    """A repeatable option whose first use replaces the default list (argparse's ``append`` extends it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is self.default or current is None else list(current)
        setattr(namespace, self.dest, [*items, values])


def add_field(
    container: Any,
    model: type[BaseModel],
    name: str,
    *,
    flag: str | None = None,
    metavar: str | tuple[str, ...] | None = None,
    append: bool = False,
    positional: bool = False,
    required: bool | None = None,
) -> argparse.Action:
    """Add ``model.name`` as an option of ``container`` (a parser, a group or a mutually exclusive group).

    ``flag``: the option string (default ``--kebab-name``; a field that is on by default needs a ``--no-...``
    flag); ``append``: a list or mapping takes one value per use of a repeated flag instead of several
    after one flag; ``positional``: a positional argument; ``required``: override (default: the field is
    required). Raises :class:`FieldTypeError` for a type with no command-line form.
    """
    form = _form(model, name)
    default = field_default(model, name)
    is_required = default is PydanticUndefined if required is None else required
    kw: dict[str, Any] = {"help": _help(model, name, form, default)}
    if not positional:
        kw["dest"] = name
        if default is not PydanticUndefined:
            kw["default"] = default
        if form.kind != "flag":
            kw["required"] = is_required
    elif default is not PydanticUndefined:
        kw["default"] = default
    if metavar is None and form.kind in ("scalar", "list") and not form.choices and not positional:
        metavar = _METAVARS.get(form.type)
    if metavar is not None:
        kw["metavar"] = metavar
    if form.kind == "flag":
        if default:
            if flag is None or not flag.startswith("--no-"):
                raise FieldTypeError(
                    f"{model.__name__}.{name} is on by default: its flag must turn it off (--no-...); got {flag!r}"
                )
            kw["action"] = "store_false"
        else:
            kw["action"] = "store_true"
    elif form.kind == "scalar":
        kw.update(type=form.type, choices=form.choices)
    elif form.kind in ("list", "tuple"):
        kw.update(type=form.type, choices=form.choices)
        if append:
            kw["action"] = _Append
        else:
            kw["nargs"] = form.n if form.kind == "tuple" else ("+" if not positional or is_required else "*")
    else:  # mapping
        shown = metavar if isinstance(metavar, str) else "NAME=VALUE"
        kw.update(type=_parse_pair(form.value_type, shown), action=_Mapping, metavar=shown)
        if not append:
            kw["nargs"] = "+"
    names = [name] if positional else [flag or "--" + name.replace("_", "-")]
    action = container.add_argument(*names, **kw)
    action.config_field = (model, (name,))
    return action


def add_field_pair(
    container: Any, model: type[BaseModel], names: tuple[str, str], *, flag: str, metavar: tuple[str, str]
) -> argparse.Action:
    """One option with two values that fill two scalar fields of the same type (``--percentiles LOW HIGH``)."""
    forms = [_form(model, n) for n in names]
    if any(f.kind != "scalar" for f in forms) or forms[0].type is not forms[1].type:
        raise FieldTypeError(f"{model.__name__}.{names}: one option fills two scalar fields of one type only")
    defaults = tuple(field_default(model, n) for n in names)
    text = " ".join(f"{m}: {model.model_fields[n].description or ''}" for m, n in zip(metavar, names))
    text = text.replace("%", "%%")
    action = container.add_argument(flag, dest=_PAIR_SEP.join(names), type=forms[0].type, nargs=2,
                                    metavar=metavar, default=defaults, help=f"{text} (default: %(default)s)")
    action.config_field = (model, tuple(names))
    return action


def field_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The parsed values of ``model``'s fields: ``Model(**field_values(args, Model))`` is the command's config."""
    values = {k: v for k, v in vars(args).items() if k in model.model_fields}
    for dest, pair in vars(args).items():
        names: Sequence[str] = dest.split(_PAIR_SEP)
        if len(names) > 1 and all(n in model.model_fields for n in names):
            values.update(zip(names, pair))
    return values
