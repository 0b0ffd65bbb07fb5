"""Every CLI default equals its config model's default: the options a user does not give mean what the
config models (and so the library, the Fiji macros and the provenance records) say they mean.

The options are made from the config fields (``fiji_consensus.cli._builder``), so the defaults agree by
construction; these tests check that construction: walking the whole parser, every option of a command
with a config model is either made from a field (and then its default and help are the field's) or one of
the CLI's own output options; end to end, the config the CLI builds from only the required arguments equals
the model built from the same arguments; and the builder refuses a field type it cannot map, by name.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

from fiji_consensus import cli
from fiji_consensus import config as C
from fiji_consensus.cli import _builder
from fiji_consensus.cli._common import add_common

#: command -> (config model, module and name of the job function the CLI calls, the required arguments)
COMMANDS = {
    "consensus": (C.ConsensusConfig, "fiji_consensus.jobs", "run_consensus",
                  ["--project", "P", "--out", "O"], dict(project="P", out="O")),
    "agreement": (C.AgreementConfig, "fiji_consensus.jobs", "run_agreement",
                  ["--project", "P"], dict(project="P")),
    "plan": (C.PlanConfig, "fiji_consensus.jobs", "run_plan", ["--project", "P"], dict(project="P")),
    "predict": (C.PredictConfig, "fiji_consensus.predict", "run_predict",
                ["IMG", "--model", "M", "--out", "O"], dict(inputs=["IMG"], model=["M"], out="O")),
    "evaluate": (C.EvaluateConfig, "fiji_consensus.evaluate_job", "run_evaluate",
                 ["--project", "P", "--out", "O"], dict(project="P", out="O")),
    "package": (C.PackageConfig, "fiji_consensus.jobs", "run_package",
                ["--model", "M", "--out", "O.zip"], dict(model="M", out="O.zip")),
    "train": (C.TrainJobConfig, "fiji_consensus.jobs", "run_train",
              ["--project", "P", "--out", "O"], dict(project="P", out="O", train=C.TrainConfig())),
    "crossval": (C.CrossvalConfig, "fiji_consensus.crossval", "run_crossval",
                 ["--lab", "A", "--lab", "B", "--out", "O"], dict(labs=["A", "B"], out="O", train=C.TrainConfig())),
}
#: A required field whose option is optional on purpose: `plan next` shares the `plan` parser, so `plan`
#: checks --project itself (with a one-line error).
OPTIONAL_ON_PURPOSE = {("plan", "project")}


def _cli_only() -> set[str]:
    """The CLI's own options (output and logging), the only ones not made from a config field."""
    p = argparse.ArgumentParser()
    add_common(p)
    return {a.dest for a in p._actions}


def _walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command path, parser) of every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _walk(sub, (*prefix, name))


def _field_default(model, name) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def test_every_option_of_a_config_command_is_a_config_field():
    cli_only = _cli_only()
    seen, problems = set(), []
    for path, parser in _walk(cli.build_parser()):
        if path[0] not in COMMANDS or len(path) > 1:  # `plan next` and the commands without a config model
            continue
        seen.add(path[0])
        for action in parser._actions:
            link = getattr(action, "config_field", None)
            if isinstance(action, argparse._SubParsersAction):  # `plan next`: a subcommand, not an option
                continue
            if link is None:
                if action.dest not in cli_only:
                    problems.append(f"{path[0]} {action.option_strings or action.dest}: not made from a config field")
                continue
            model, names = link
            if len(names) == 1 and action.dest != names[0] and action.option_strings:
                problems.append(f"{path[0]} {action.option_strings}: dest {action.dest!r} != field {names[0]!r}")
    assert seen == set(COMMANDS)
    assert not problems, "\n".join(problems)


def test_every_command_is_classified():
    """A new command either runs a config model's job (COMMANDS above, checked option by option) or is one
    of these, which have no config model."""
    without_model = {("adapt",), ("calibrate",), ("demo",), ("zoo",), ("zoo", "list"), ("fiji",), ("fiji", "install-macros"),
                     ("fiji", "write-macros"), ("fiji", "model-summary"), ("plan", "next")}
    found = {path for path, _ in _walk(cli.build_parser())}
    assert found == {(c,) for c in COMMANDS} | without_model


def test_adapt_default_is_the_functions():
    """adapt has no config model: its one setting defaults to what ``adapt_ensemble`` takes."""
    pytest.importorskip("torch")
    from fiji_consensus.nn.adapt import adapt_ensemble

    (parser,) = [s for p, s in _walk(cli.build_parser()) if p == ("adapt",)]
    want = inspect.signature(adapt_ensemble).parameters["patches_per_image"].default
    assert parser.get_default("patches_per_image") == want


@pytest.mark.parametrize("command", list(COMMANDS))
def test_parser_defaults_and_help_are_the_config_fields(command):
    (path, parser), = [(p, s) for p, s in _walk(cli.build_parser()) if p == (command,)]
    assert parser.description == inspect.getdoc(COMMANDS[command][0])  # the command's text: its model's docstring
    checked, problems = 0, []
    for action in parser._actions:
        if not hasattr(action, "config_field"):
            continue
        model, names = action.config_field
        option = "/".join(action.option_strings) or action.dest
        wants = [_field_default(model, n) for n in names]
        for n in names:  # the help text is the field's description (the CLI writes none of its own)
            description = model.model_fields[n].description
            if not description or description.replace("%", "%%") not in (action.help or ""):
                problems.append(f"{command} {option}: help {action.help!r} is not {model.__name__}.{n}'s description")
        if PydanticUndefined in wants:
            if not (action.required or not action.option_strings or (command, names[0]) in OPTIONAL_ON_PURPOSE):
                problems.append(f"{command} {option}: required in {model.__name__} but optional in the CLI")
            continue
        want = wants[0] if len(wants) == 1 else tuple(wants)
        got = action.default
        if isinstance(action, argparse._StoreFalseAction):  # --no-X: the field is on unless the flag is given
            assert option.startswith("--no-") and want is True, (command, option)
        if got != want or type(got) is not type(want):
            problems.append(f"{command} {option}: CLI default {got!r} != {model.__name__}.{names} {want!r}")
        checked += 1
    assert checked >= 3
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_builds_the_config_models_defaults(command, monkeypatch, capsys):
    model, module, func, argv, required = COMMANDS[command]
    seen = []

    def capture(cfg, **kwargs):
        seen.append(cfg)
        return {"ok": True, "command": command}

    monkeypatch.setattr(importlib.import_module(module), func, capture)
    assert cli.main([command, *argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True
    (cfg,) = seen
    got, want = cfg.model_dump(), model(**required).model_dump()
    diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
    assert not diff, f"{command}: CLI-built != {model.__name__} defaults: {diff}"


def test_given_options_reach_the_config(monkeypatch, capsys):
    """Renamed, negated, repeated, paired and NAME=VALUE options land in their fields."""
    seen = []
    monkeypatch.setattr(importlib.import_module("fiji_consensus.jobs"), "run_train",
                        lambda cfg, **kw: seen.append(cfg) or {"ok": True})
    monkeypatch.setattr(importlib.import_module("fiji_consensus.evaluate_job"), "run_evaluate",
                        lambda cfg, **kw: seen.append(cfg) or {"ok": True})
    monkeypatch.setattr(importlib.import_module("fiji_consensus.jobs"), "run_package",
                        lambda cfg, **kw: seen.append(cfg) or {"ok": True})
    assert cli.main(["train", "--lab", "A", "--lab", "B", "--lab-min-size", "A=16", "--percentiles", "2", "99",
                     "--zoom", "0.5", "1.5", "--noise", "0.1", "--batch-size", "8", "--background", "1",
                     "--background-renormalize", "--out", "O", "--json"]) == 0
    assert cli.main(["evaluate", "--project", "P", "--out", "O", "--model-predictions", "m1=D1", "m2=D2",
                     "--strategy", "s=m1,m2", "--no-report", "--json"]) == 0
    assert cli.main(["package", "--model", "M", "--out", "O.zip", "--author", "Ann", "--author", "Bob",
                     "--tag", "x", "--version", "1.2.3", "--weights", "onnx", "--domain-lab", "L1", "--domain-lab",
                     "L2", "--json"]) == 0
    train, ev, pkg = seen
    assert train.labs == [Path("A"), Path("B")] and train.lab_min_sizes == {"A": 16}
    assert (train.train.low_percentile, train.train.high_percentile, train.train.batch_size) == (2.0, 99.0, 8)
    assert train.train.augment.zoom == (0.5, 1.5) and train.train.augment.noise == 0.1
    assert train.train.augment.background == 1.0 and train.train.augment.background_renormalize is True
    assert ev.models == {"m1": Path("D1"), "m2": Path("D2")} and ev.strategies == {"s": ["m1", "m2"]}
    assert ev.report is False
    # a repeated flag replaces the default list; the default stays untouched for the next parse
    assert pkg.authors == ["Ann", "Bob"] and pkg.tags == ["x"] and pkg.version == "1.2.3"
    assert pkg.domain_labs == [Path("L1"), Path("L2")]
    assert pkg.weight_formats == ["onnx"] and C.PackageConfig.model_fields["authors"].get_default(
        call_default_factory=True) == ["fiji-consensus"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # a NAME=VALUE option names the expected form
        cli.main(["train", "--project", "P", "--out", "O", "--lab-min-size", "A=many"])
    assert e.value.code == 2 and "NAME=N" in capsys.readouterr().err


class _Odd(BaseModel):
    ok: int = Field(3, description="An int.")
    nested: C.DaskOptions | None = Field(None, description="A model inside a model.")
    on: bool = Field(True, description="On by default.")


def test_the_builder_refuses_a_type_it_cannot_map():
    p = argparse.ArgumentParser()
    action = _builder.add_field(p, _Odd, "ok")
    assert action.default == 3 and action.dest == "ok" and action.option_strings == ["--ok"]
    with pytest.raises(_builder.FieldTypeError, match=r"_Odd\.nested: its type .*DaskOptions.* write this option by hand"):
        _builder.add_field(p, _Odd, "nested")
    with pytest.raises(_builder.FieldTypeError, match=r"_Odd\.on is on by default: its flag must turn it off"):
        _builder.add_field(p, _Odd, "on")
    assert _builder.add_field(p, _Odd, "on", flag="--no-on").default is True
