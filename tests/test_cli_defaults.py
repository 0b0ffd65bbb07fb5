"""Every CLI default equals its config model's default: the options a user does not give mean what the
config models (and so the library, the Fiji macros and the provenance records) say they mean.

Two checks per command: the parser's declared defaults against the model's field defaults, and, end to end,
the config the CLI builds from only the required arguments against the model built from the same arguments.
"""

from __future__ import annotations

import argparse
import importlib
import json

import pytest
from pydantic_core import PydanticUndefined

from fiji_consensus import cli
from fiji_consensus import config as C

#: command -> (config model, module and name of the job function the CLI calls, the required arguments)
COMMANDS = {
    "consensus": (C.ConsensusConfig, "fiji_consensus.jobs", "run_consensus",
                  ["--project", "P", "--out", "O"], dict(project="P", out="O")),
    "agreement": (C.AgreementConfig, "fiji_consensus.jobs", "run_agreement",
                  ["--project", "P"], dict(project="P")),
    "predict": (C.PredictConfig, "fiji_consensus.predict", "run_predict",
                ["IMG", "--model", "M", "--out", "O"], dict(inputs=["IMG"], model=["M"], out="O")),
    "evaluate": (C.EvaluateConfig, "fiji_consensus.evaluate_job", "run_evaluate",
                 ["--project", "P", "--out", "O"], dict(project="P", out="O")),
    "package": (C.PackageConfig, "fiji_consensus.zoo", "run_package",
                ["--model", "M", "--out", "O.zip"], dict(model="M", out="O.zip")),
    "train": (C.TrainJobConfig, "fiji_consensus.jobs", "run_train",
              ["--project", "P", "--out", "O"], dict(project="P", out="O", train=C.TrainConfig())),
    "crossval": (C.CrossvalConfig, "fiji_consensus.crossval", "run_crossval",
                 ["--lab", "A", "--lab", "B", "--out", "O"], dict(labs=["A", "B"], out="O", train=C.TrainConfig())),
}

#: CLI option (dest) -> config field, where the names differ; "!" = the flag is the field's negation.
RENAMED = {
    "consensus": {"no_overlays": "!write_overlays"},
    "evaluate": {"model_predictions": "models", "strategy": "strategies", "no_report": "!report"},
    "package": {"pkg_version": "version", "weights": "weight_formats"},
    "train": {"percentiles": ("low_percentile", "high_percentile"), "lab": "labs", "lab_min_size": "lab_min_sizes"},
    "crossval": {"percentiles": ("low_percentile", "high_percentile"), "lab": "labs", "lab_min_size": "min_sizes"},
}
#: Options whose parser default is None on purpose: the CLI then leaves the field out, so the model's default
#: applies (checked end to end below). ``--author`` appends: a default list would be extended, not replaced.
UNSET_MEANS_MODEL_DEFAULT = {"package": {"authors"}}
#: Options of the CLI only (output, logging, the Dask cluster: DaskOptions is built only when one is named).
CLI_ONLY = {"help", "json", "no_progress", "quiet", "verbose", "debug", "scheduler", "workers",
            "threads_per_worker", "retries", "test"}

PARAMS = list(COMMANDS)


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _fields(model) -> dict:
    fields = dict(model.model_fields)
    if model in (C.TrainJobConfig, C.CrossvalConfig):  # training options fill TrainConfig and its AugmentOptions
        fields.update(C.TrainConfig.model_fields)
        fields.update(C.TrainConfig.model_fields["augment"].annotation.model_fields)
    return fields


@pytest.mark.parametrize("command", PARAMS)
def test_parser_defaults_are_the_config_defaults(command):
    model = COMMANDS[command][0]
    fields = _fields(model)
    renamed = RENAMED.get(command, {})
    problems, matched = [], 0
    for action in _subparser(command)._actions:
        dest = action.dest
        if dest in CLI_ONLY:
            continue
        name = renamed.get(dest, dest)
        names = list(name) if isinstance(name, tuple) else [name]  # one option, several fields (LOW HIGH)
        negated = names[0].startswith("!")
        names = [n.lstrip("!") for n in names]
        missing = [n for n in names if n not in fields]
        if missing:
            problems.append(f"--{dest.replace('_', '-')}: no config field {missing} in {model.__name__}")
            continue
        matched += 1
        name = ", ".join(names)
        wants = [fields[n].get_default(call_default_factory=True) for n in names]
        want = wants[0] if len(wants) == 1 else list(wants)
        if want is PydanticUndefined:
            if not (action.required or not action.option_strings):
                problems.append(f"--{dest}: required in {model.__name__} but optional in the CLI")
            continue
        got = action.default
        if dest in UNSET_MEANS_MODEL_DEFAULT.get(command, ()):
            if got is not None:
                problems.append(f"--{dest}: expected no parser default (the model's applies); got {got!r}")
            continue
        if negated:
            got = not got
        if isinstance(want, (tuple, list)) and isinstance(got, (tuple, list)):
            got, want = list(got), list(want)
        if isinstance(want, dict) and got == []:  # NAME=VALUE pairs collected into the field's mapping
            got = {}
        if got != want:
            problems.append(f"--{dest.replace('_', '-')}: CLI default {got!r} != {model.__name__}.{name} {want!r}")
    assert matched >= 3
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", PARAMS)
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
