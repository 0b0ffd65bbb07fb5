"""The model card of a packaged ensemble (its ``documentation.md``, and byte for byte the zoo's
``model_zoo/<name>/README.md``), written section by section from ``ensemble.json`` and held-out scores, with
hand-written notes added by section title."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ._common import (
    CITATION_DOI,
    CITATION_TEXT,
    ONNX_MAX_IR_VERSION,
    ONNX_OPSET,
    PYTORCH_MIN_VERSION,
    UNCERTAINTY_DEFINITIONS,
    WEIGHT_FORMATS,
)
from .metadata import fmt, num

__all__ = ["model_card", "read_card_notes"]


@dataclass
class _Facts:
    """What the card's sections read from ``ensemble.json``'s metadata (``meta``)."""

    meta: dict[str, Any]
    name: str
    package: str  # the package's file name, as the card tells users to run it

    def __post_init__(self) -> None:
        meta = self.meta
        self.arch = meta.get("architecture", {})
        self.cfg = self.arch.get("config", {})
        self.norm = meta.get("normalization", {})
        self.train = meta.get("training") or {}
        self.prov = prov = meta.get("provenance") or {}
        self.members = [m for m in meta.get("members", []) if m.get("selected", True)]
        k = len(self.members)
        self.ids = sorted((self.norm.get("training_values") or {}).keys()) or sorted(
            str(i) for i in prov.get("image_ids") or [])
        self.n_images = len(self.ids) or prov.get("n_images")
        seconds = [float(m["seconds"]) for m in self.members if m.get("seconds") is not None]
        self.total_s = sum(seconds) if len(seconds) == k and k else num(prov.get("seconds"))
        self.val_of = {i: len(sp.get("validation") or []) for i, sp in enumerate(prov.get("splits") or [])
                       if isinstance(sp, dict)}  # member index -> its validation images (train_ensemble's provenance)
        labs = prov.get("labs") if isinstance(prov.get("labs"), dict) else {}  # lab -> its image ids (multi-lab)
        self.lab_counts = {str(lab): len(ids) for lab, ids in sorted(labs.items()) if isinstance(ids, list)}


def model_card(
    meta: dict[str, Any],
    *,
    name: str,
    measure: str,
    views: Sequence[str],
    validation: dict[str, Any] | None = None,
    description: str | None = None,
    package_file: str | None = None,
    weight_formats: Sequence[str] = WEIGHT_FORMATS,
    notes: dict[str, str] | None = None,
    authors: Sequence[dict[str, str]] = (),
    training_data: dict[str, Any] | None = None,
) -> str:
    """The model card (markdown) of a packaged ensemble, filled from ``ensemble.json`` and held-out scores.

    It is the package's ``documentation.md`` and, byte for byte, the ``model_zoo/<name>/README.md``: data,
    experts, consensus, training budget, member and held-out-lab scores (``## Validation``), how to run it in
    deepImageJ, with bioimageio.core and with fiji-consensus, intended use and limits, citation. One ``#``
    title, every section ``##``.

    ``notes`` adds hand-written markdown at the end of sections, by section title (``{"Validation": "..."}``;
    :func:`read_card_notes` reads them from a markdown file of ``## Title`` blocks, e.g.
    ``model_zoo/<name>/notes.md``), so the packaged card and the zoo's README come from one source.
    """
    f = _Facts(meta, name, package_file or f"{name}.zip")
    lines = [
        *_intro(f, measure=measure, views=views, description=description),
        *_data_section(f),
        *_training_section(f),
        *_validation_section(f, validation, noted=bool((notes or {}).get("Validation"))),
        *_how_to_run_section(f),
        *_limits_section(),
        *_package_section(f, weight_formats),
        *_citation_section(training_data, authors),
    ]
    return _add_notes("\n".join(lines), notes or {})


def _intro(f: _Facts, *, measure: str, views: Sequence[str], description: str | None) -> list[str]:
    lines = [f"# {f.name}", ""]
    if description:
        lines += [description.strip(), ""]
    return lines + [
        f"An ensemble of {len(f.members)} U-Nets trained with fiji-consensus on the consensus of several experts' "
        "annotations (after Segebarth et al. 2020), packaged as **one** bioimage.io network: the members"
        + (f", {len(views)} test-time views (" + ", ".join(views) + ")" if len(views) > 1 else "")
        + " and the sigmoid run inside it, and it returns two images:",
        "",
        "* `probability`: the mean foreground probability over members x views (0 to 1); foreground is "
        f"`probability > {f.meta.get('threshold', 0.5)}`;",
        f"* `uncertainty`: the {UNCERTAINTY_DEFINITIONS[measure]}. Its scale is absolute (never rescaled per "
        "image), so values of different images compare directly.",
        "",
    ]


def _data_section(f: _Facts) -> list[str]:
    prov, ids = f.prov, f.ids
    where = prov.get("lab") or ", ".join(f"{lab}: {n}" for lab, n in f.lab_counts.items())
    return [
        "## Data, experts and consensus",
        "",
        f"* Training images: {f.n_images if f.n_images is not None else 'n/a'}"
        + (f" ({where})" if where else "")
        + (f"; ids {', '.join(ids[:40])}{' ...' if len(ids) > 40 else ''}" if ids else "") + ".",
        f"* Experts: {', '.join(prov['experts']) if prov.get('experts') else 'n/a'}.",
        # single-lab training records `consensus`, multi-lab training `targets` (each lab's own experts)
        "* Training targets (consensus): "
        f"{prov.get('consensus') or prov.get('targets') or f.train.get('targets') or 'n/a'}.",
        f"* Source: {prov.get('source') or prov.get('data') or 'n/a'}; recipe: {prov.get('recipe', 'n/a')}.",
        "",
    ]


def _training_section(f: _Facts) -> list[str]:
    arch, cfg, train, norm = f.arch, f.cfg, f.train, f.norm
    return [
        "## Training",
        "",
        f"* Architecture: U-Net, depth {cfg.get('depth')} (poolings), {cfg.get('base_channels')} base channels, "
        f"{cfg.get('norm')} normalisation, {arch.get('parameters', 'n/a')} parameters per member; receptive-field "
        f"radius {arch.get('receptive_field_radius', 'n/a')} px, halo {arch.get('halo')} px.",
        f"* Members: {len(f.members)} ({train.get('split', 'n/a')} split, seed {train.get('seed', 'n/a')}); patch "
        f"{train.get('patch_size', 'n/a')} px, batch {train.get('batch_size', 'n/a')}, learning rate "
        f"{train.get('learning_rate', 'n/a')}, time budget {train.get('max_minutes', 'n/a')} min, "
        f"iterations per member: {', '.join(str(m.get('iterations', 'n/a')) for m in f.members)}"
        + (f"; training time {f.total_s / 60:.1f} min in total." if f.total_s else "."),
        f"* Normalisation: per image, ({norm.get('min_percentile')}, {norm.get('max_percentile')}) percentiles "
        f"to (0, 1) with eps {norm.get('eps')}, computed over the whole image before any padding or tiling "
        "(bioimage.io `scale_range` over y, x; deepImageJ does the same).",
        "",
    ]


def _validation_section(f: _Facts, validation: dict[str, Any] | None, *, noted: bool = False) -> list[str]:
    """Member scores, then held-out-lab scores: the table of ``validation``, or (``noted``) the hand-written
    Validation notes appended below, or a line saying there are none."""
    many = len(f.lab_counts) > 1
    labs, against = ("labs", "each lab's own consensus") if many else ("lab", "the consensus")
    lines = [
        "## Validation",
        "",
        f"Every member was selected on its held-out images of the training {labs} (Dice and ROI-F1 of "
        f"Segebarth et al. 2020 against {against}):",
        "",
        "| member | seed | validation images | Dice | ROI-F1 |",
        "|---|---|---|---|---|",
    ]
    for m in f.members:
        nval = len(m.get("val_ids") or (m.get("split") or {}).get("val", []) or m.get("val_per_image") or []) \
            or m.get("val_images") or f.val_of.get(int(m.get("index", -1)))
        lines.append(f"| {m.get('index')} | {m.get('seed', 'n/a')} | {nval or 'n/a'} | {fmt(num(m.get('val_dice')))} "
                     f"| {fmt(num(m.get('val_roi_f1')))} |")
    lines.append("")
    if validation and validation.get("labs"):
        lines += _held_out_labs(validation["labs"])
    elif not noted:
        lines += ["No held-out-lab scores were given when this package was made.", ""]
    return lines + [
        "To validate it on your own annotated images: predict them (below), threshold `probability`, and "
        "compare with your experts' consensus (`fiji-consensus consensus`, `fiji-consensus agreement "
        "--reference`).",
        "",
    ]


def _held_out_labs(labs: dict[str, Any]) -> list[str]:
    """The table of held-out-lab scores, then each lab's experts."""
    lines = [
        "Held-out labs (other labs and microscopes, never seen in training), mean over images against "
        "their published consensus (est_GT), with every expert of that lab scored the same way (the "
        "experts are part of that consensus, which favours them):",
        "",
        "| lab | images | ensemble ROI-F1 | ensemble Dice | median expert ROI-F1 | median expert Dice "
        "| average member ROI-F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for lab, e in labs.items():
        ens = e["means"]["ensemble"]
        lines.append(
            f"| {lab} | {e.get('images') or 'n/a'} | {fmt(ens['roi_f1'])} | {fmt(ens['dice'])} | "
            f"{fmt(e['median_expert_roi_f1'])} | {fmt(e['median_expert_dice'])} | "
            f"{fmt(e['average_member_roi_f1'])} |"
        )
    lines.append("")
    for lab, e in labs.items():
        experts = sorted(n for n in e["means"] if n.startswith("expert"))
        if experts:
            lines.append(f"{lab}, experts (ROI-F1 / Dice): " + "; ".join(
                f"{x} {fmt(e['means'][x]['roi_f1'])} / {fmt(e['means'][x]['dice'])}" for x in experts) + ".")
    lines.append("")
    return lines


def _how_to_run_section(f: _Facts) -> list[str]:
    pkg = f.package
    return [
        "## How to run it",
        "",
        f"**deepImageJ** (Fiji): *Plugins > DeepImageJ > DeepImageJ Install Model*, choose *Private model* and "
        f"the file `{pkg}`; open a single-channel image and run *DeepImageJ Run* with this model (weights: "
        "torchscript or onnx). The preprocessing (percentile normalisation) is in the package; the outputs "
        f"open as two images (`probability`, `uncertainty`). Objects: threshold `probability` at "
        f"{f.meta.get('threshold', 0.5)} and drop objects smaller than "
        f"{(f.train.get('min_size') or 0)} px (*Analyze Particles*).",
        "",
        "**bioimageio.core** (Python, offline). Use its blockwise mode, which normalises the whole, unpadded "
        "image first and then tiles it, as deepImageJ and fiji-consensus do; its default whole-image mode "
        "pads the image by the halo *before* the percentile normalisation, which shifts the percentiles and "
        "changes probabilities near the threshold:",
        "",
        "```bash",
        f"bioimageio test {pkg}",
        f"bioimageio predict {pkg} --inputs image.tif --outputs 'out_{{output_id}}.tif' --blockwise 10",
        "```",
        "",
        "In Python: `bioimageio.core.predict(model=..., inputs=..., blocksize_parameter=10)` or "
        "`create_prediction_pipeline(...).predict_sample_with_blocking(sample)`.",
        "",
        "**fiji-consensus** (probability, uncertainty, objects, RoiSets and Fiji overlays per image):",
        "",
        "```bash",
        f"fiji-consensus predict IMAGES/ --model {pkg} --out predictions/{Path(pkg).stem}",
        "```",
        "",
    ]


def _limits_section() -> list[str]:
    return [
        "## Intended use and limits",
        "",
        "* Intended use: segmentation of the structures annotated in the training images, in images of the "
        "same kind (stain, magnification, microscope) and as a starting point that experts correct.",
        "* Other labs, stains, magnifications or microscopes can give lower scores (see the held-out labs "
        "above); check a few images against expert annotations first. High `uncertainty` marks regions and "
        "images to review (`fiji-consensus predict` ranks images by it).",
        "* Single-channel 2-D images only; the input is normalised per image, so images must contain some "
        "background and some signal.",
        "",
    ]


def _package_section(f: _Facts, weight_formats: Sequence[str]) -> list[str]:
    depth, halo = int(f.cfg.get("depth", 0)), f.arch.get("halo")
    return [
        "## Package",
        "",
        f"* Weights: {', '.join(weight_formats)}, all made from the same members (ONNX: opset {ONNX_OPSET}, "
        f"IR version <= {ONNX_MAX_IR_VERSION}, for deepImageJ; TorchScript and state dict load in PyTorch "
        f">= {PYTORCH_MIN_VERSION}; the TorchScript returns the list [probability, uncertainty]).",
        "* Speed on CPU: the ONNX weights run 2 to 3 times faster than the TorchScript weights of the same "
        "network (tests/benchmarks/bench_old_runtimes.py). The time goes to PyTorch's convolutions for these channel "
        "counts, not to TorchScript or the views inside (eager PyTorch is as slow; freezing and "
        "`optimize_for_inference` gain little), so choose the onnx weights in deepImageJ on a CPU.",
        f"* Axes batch, channel, y, x; tiles of `{2 * int(f.arch.get('halo', 0)) + 2 ** depth} "
        f"+ n * {2 ** depth}` px, output halo {halo} px.",
        f"* Made with fiji-consensus {__version__} from ensemble.json (format {f.meta.get('format_version')}).",
        "",
    ]


def _citation_section(training_data: dict[str, Any] | None, authors: Sequence[dict[str, str]]) -> list[str]:
    lines = ["## Citation and licence", "", f"* {CITATION_TEXT}. doi:{CITATION_DOI}"]
    if training_data:
        people = "; ".join(a["name"] + (f" ({a['affiliation']})" if a.get("affiliation") else "")
                           for a in training_data.get("authors") or [])
        lines.append(f"* Training data: {training_data.get('name')} ({training_data.get('license', 'n/a')})"
                     + (f"; {people} and others." if people else "."))
    if authors:
        lines.append("* Model authors: " + "; ".join(
            a.get("name", "") + "".join(f", {k} {a[k]}" for k in ("affiliation", "github_user", "orcid") if a.get(k))
            for a in authors) + ".")
    lines.append("")
    return lines


def read_card_notes(path: str | os.PathLike) -> dict[str, str]:
    """Hand-written additions to a model card: a markdown file of ``## Section title`` blocks (text before
    the first heading is ignored, so the file can say what it is), as :func:`model_card`'s ``notes``."""
    text = Path(path).read_text(encoding="utf-8")
    notes: dict[str, str] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            if title in notes:
                raise ValueError(f"card notes {path}: section {title!r} appears twice")
            notes[title] = ""
        elif line.startswith("# "):
            raise ValueError(f"card notes {path}: use '## Section' headings (got {line!r})")
        elif title is not None:
            notes[title] += line + "\n"
    return {k: v.strip() for k, v in notes.items() if v.strip()}


def _add_notes(card: str, notes: dict[str, str]) -> str:
    """``card`` with each note appended at the end of its ``## section``; unknown sections are an error."""
    lines = card.split("\n")
    heads = {ln[3:].strip(): i for i, ln in enumerate(lines) if ln.startswith("## ")}
    bad = sorted(set(notes) - set(heads))
    if bad:
        raise ValueError(f"card notes for unknown section(s) {bad}; the card's sections are {list(heads)}")
    for title in sorted(notes, key=lambda t: -heads[t]):  # from the bottom up, so indices stay valid
        start = heads[title]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["", notes[title].strip()]
    return "\n".join(lines).rstrip("\n") + "\n"
