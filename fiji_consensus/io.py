"""Files: images and expert annotations paired by id, project folders, atomic writes.

Pairing rule (GUIDE.md): the id of an image is its file stem. An annotation belongs to image ``ID`` if its
stem is ``ID`` or starts with ``ID`` followed by ``_``, ``-`` or ``.`` (so ``0001_cFOS.png`` and
``0001.zip`` both belong to ``0001``). When several image ids fit one file, the longest id wins. Two
candidates for one image and expert is an error, and so is an image an expert did not annotate.

An annotation is any of: a mask image (PNG/TIFF/...; binary 0/1 or 0/255, RGB with equal channels, or a
label image), an ImageJ RoiSet ``.zip``, a single ``.roi``, or a TIFF whose ImageJ overlay holds the ROIs.
Every reader returns an integer label image of the image's shape (0 = background).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_open, atomic_path, check_writable
from ._util import json_safe

__all__ = [
    "IMAGE_SUFFIXES",
    "ANNOTATION_SUFFIXES",
    "AnnotationError",
    "ExpertDataset",
    "list_images",
    "pair_annotations",
    "read_image",
    "read_input",
    "read_calibration",
    "ImageInputError",
    "read_annotation",
    "read_mask",
    "open_dataset",
    "open_project",
    "write_tiff",
    "write_csv",
    "write_json",
    "read_json",
    "one_line",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif")
ANNOTATION_SUFFIXES = IMAGE_SUFFIXES + (".zip", ".roi")
_SEPARATORS = ("_", "-", ".")


class AnnotationError(ValueError):
    """An annotation or image that cannot be used: missing, ambiguous, unreadable or of the wrong shape."""


# --------------------------------------------------------------------------------------------- listing


def _full_suffix_ok(path: Path, suffixes: Sequence[str]) -> bool:
    return path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")


def list_images(folder: str | os.PathLike) -> dict[str, Path]:
    """Map image id (file stem) → path for every image file in ``folder`` (not recursive).

    Raises :class:`AnnotationError` when the folder does not exist, holds no image, or two files share
    one id (``a.png`` and ``a.tif``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError(f"image folder {folder} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not _full_suffix_ok(p, IMAGE_SUFFIXES):
            continue
        if p.stem in found:
            raise AnnotationError(
                f"two images with id {p.stem!r} in {folder}: {found[p.stem].name} and {p.name}"
            )
        found[p.stem] = p
    if not found:
        raise AnnotationError(
            f"no images found in {folder} (expected files ending in {', '.join(IMAGE_SUFFIXES)})"
        )
    return found


def _owner(stem: str, ids_by_length: Sequence[str]) -> str | None:
    for image_id in ids_by_length:
        if stem == image_id or (
            stem.startswith(image_id) and stem[len(image_id)] in _SEPARATORS
        ):
            return image_id
    return None


def pair_annotations(
    image_ids: Iterable[str],
    folder: str | os.PathLike,
    *,
    expert: str | None = None,
    required: bool = True,
) -> dict[str, Path]:
    """Pair the annotation files in ``folder`` with image ids by the GUIDE's id rule.

    Parameters
    ----------
    image_ids
        The ids of the images (file stems).
    folder
        One expert's folder (or an ignore folder).
    expert
        The expert's name, used in error messages (default: the folder name).
    required
        If true, every image must have exactly one annotation; otherwise images may lack one.

    Returns
    -------
    dict
        image id → annotation path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "0001_cFOS.png").write_bytes(b"")
    >>> pair_annotations(["0001"], d)["0001"].name
    '0001_cFOS.png'
    """
    folder = Path(folder)
    expert = expert or folder.name
    if not folder.is_dir():
        raise AnnotationError(f"annotation folder of expert {expert!r} does not exist: {folder}")
    ids = sorted(set(image_ids), key=lambda s: (-len(s), s))
    candidates: dict[str, list[Path]] = {i: [] for i in ids}
    n_files = 0
    for p in sorted(folder.iterdir()):
        if not _full_suffix_ok(p, ANNOTATION_SUFFIXES):
            continue
        n_files += 1
        owner = _owner(p.stem, ids)
        if owner is not None:
            candidates[owner].append(p)
    if n_files == 0:
        raise AnnotationError(
            f"the folder of expert {expert!r} ({folder}) holds no annotation "
            f"(expected mask images, RoiSet .zip, .roi or overlay TIFFs)"
        )
    pairs: dict[str, Path] = {}
    missing = []
    for image_id in sorted(candidates):
        c = candidates[image_id]
        if len(c) > 1:
            raise AnnotationError(
                f"image {image_id!r}: expert {expert!r} has {len(c)} candidate annotations in {folder}: "
                f"{', '.join(x.name for x in c)}; keep one"
            )
        if c:
            pairs[image_id] = c[0]
        else:
            missing.append(image_id)
    if missing and required:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise AnnotationError(
            f"expert {expert!r} has no annotation for {len(missing)} image(s): {shown} "
            f"(looked in {folder} for <id>.<ext> or <id>_*.<ext>)"
        )
    return pairs


# --------------------------------------------------------------------------------------------- reading


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``"TypeName: message"`` of an exception on one line (whitespace collapsed, at most ``limit`` chars)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def check_tiff_single_image(tif: Any, path: Path) -> None:
    """Refuse a TIFF that holds more than one image (several series, e.g. two ``imwrite`` calls or a
    thumbnail next to the image): only its first would be used, silently."""
    series = [s for s in tif.series if not getattr(s, "is_reduced", False)]
    if len(series) > 1:
        shapes = ", ".join(str(tuple(s.shape)) for s in series[:4]) + (" ..." if len(series) > 4 else "")
        raise AnnotationError(
            f"{path} holds {len(series)} images (TIFF series of shapes {shapes}); expected one 2-D image: "
            "save the one to use on its own (Fiji: Image > Duplicate..., then File > Save As > Tiff)"
        )


def _read_pixels(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise AnnotationError(f"{path} is empty (0 bytes); expected an image file")
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                check_tiff_single_image(tif, path)
                return np.asarray(tif.series[0].asarray())
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except (FileNotFoundError, AnnotationError):
        raise
    except Exception as exc:  # imageio/tifffile raise many types for corrupt files
        raise AnnotationError(f"cannot read {path}: {one_line(exc)}") from exc


def _alpha_annotation(arr: np.ndarray, path: Path) -> np.ndarray:
    """The annotation of a grey+alpha or RGBA mask image (last axis 2 or 4), chosen explicitly.

    A uniform alpha carries nothing: the grey (or equal RGB) values are the annotation. When the alpha
    varies, it is the annotation if the grey values are uniform (drawn only in the alpha channel), or the
    grey values are if both mark the same pixels; anything else is ambiguous and refused.
    """
    colour, alpha = arr[..., :-1], arr[..., -1]
    gray = colour[..., 0]
    if any(not np.array_equal(gray, colour[..., c]) for c in range(1, colour.shape[-1])):
        raise AnnotationError(
            f"annotation {path} is a colour (RGB) image with unequal channels; expected a grayscale mask"
        )
    if alpha.min() == alpha.max():
        return gray
    if gray.min() == gray.max():
        logger.info("annotation %s: its colour is uniform, the annotation is read from its alpha channel", path)
        return alpha
    if np.array_equal(gray > 0, alpha > 0):
        return gray
    raise AnnotationError(
        f"annotation {path} has an alpha channel and grey values that mark different pixels "
        f"({np.count_nonzero(alpha > 0)} vs {np.count_nonzero(gray > 0)} non-zero): ambiguous; expected a "
        "mask without transparency"
    )


def _squeeze_gray(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    arr = np.squeeze(arr)
    if what == "annotation" and arr.ndim == 3 and arr.shape[-1] in (2, 4) and min(arr.shape[:2]) > 4:
        return _alpha_annotation(arr, path)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        raise AnnotationError(
            f"{what} {path} is a colour (RGB) image with unequal channels; expected a grayscale "
            f"{what} (for multi-channel images choose one channel first)"
        )
    if arr.ndim == 3:
        raise AnnotationError(
            f"{what} {path} is a 3-D stack of shape {arr.shape}; 3-D stacks are not supported yet "
            f"(expected one 2-D (Y, X) plane)"
        )
    if arr.ndim != 2:
        raise AnnotationError(f"{what} {path} has shape {arr.shape}; expected a 2-D (Y, X) image")
    return arr


class ImageInputError(AnnotationError):
    """An input image that cannot be used (unreadable, 3-D, ambiguous channels, NaN values)."""


def _tiff_calibration(tif: Any) -> tuple[tuple[float, float] | None, str | None]:
    page = tif.pages[0]
    ij = tif.imagej_metadata or {}
    unit = ij.get("unit")
    xr_, yr_ = page.tags.get("XResolution"), page.tags.get("YResolution")
    spacing = None
    if xr_ is not None:
        num, den = xr_.value
        ynum, yden = yr_.value if yr_ is not None else xr_.value
        if num and den and ynum and yden:
            dx, dy = den / num, yden / ynum
            if unit is None:
                ru = page.tags.get("ResolutionUnit")
                ru = int(ru.value) if ru is not None else 2
                unit = {2: "inch", 3: "cm"}.get(ru)
            if unit is not None or (dx, dy) != (1.0, 1.0):
                spacing = (float(dy), float(dx))
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1")
    if unit in ("micron", "microns", "\\u00B5m", "µm"):
        unit = "micron"
    return spacing, (str(unit) if unit is not None else None)


def read_calibration(path: str | os.PathLike) -> dict[str, Any]:
    """The pixel calibration of an image file, ``{"spacing": (dy, dx) or None, "unit": str or None}``,
    read from the TIFF header only (no pixels); other formats have none. :func:`read_input` returns the same.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return {"spacing": None, "unit": None}
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            spacing, unit = _tiff_calibration(tif)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise ImageInputError(f"cannot read {path}: {one_line(exc)}") from exc
    return {"spacing": spacing, "unit": unit}


def _read_array(path: Path) -> tuple[np.ndarray, str, tuple[float, float] | None, str | None]:
    """Pixels, axes (tifffile's, or YX/YXS), spacing and unit of one image file."""
    spacing: tuple[float, float] | None = None
    unit: str | None = None
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                try:
                    check_tiff_single_image(tif, path)
                except AnnotationError as exc:
                    raise ImageInputError(str(exc)) from None
                series = tif.series[0]
                axes = str(series.axes)
                arr = np.asarray(series.asarray())
                spacing, unit = _tiff_calibration(tif)
        else:
            import imageio.v3 as iio

            arr = np.asarray(iio.imread(path))
            axes = {2: "YX", 3: "YXS"}.get(arr.ndim, "Q" * arr.ndim)
    except ImageInputError:
        raise
    except Exception as exc:  # tifffile/imageio raise many types for corrupt files
        raise ImageInputError(f"cannot read {path}: {one_line(exc)}") from exc
    return arr, axes, spacing, unit


def _one_channel(arr: np.ndarray, axes: str, path: Path, channel: int | None, shown_axes: str) -> np.ndarray:
    """The plane of a (channel axis, Y, X) image that ``channel`` names, or the only distinct one."""
    cax = next((i for i, a in enumerate(axes) if a in "CS"), None)
    if cax is None:
        if channel not in (None, 0):
            raise ImageInputError(f"{path} has a single channel; channel {channel} does not exist")
        return arr
    arr = np.moveaxis(arr, cax, 0)
    n = arr.shape[0]
    if channel is not None:
        if not 0 <= int(channel) < n:
            raise ImageInputError(f"{path} has {n} channels (0..{n - 1}); channel {channel} does not exist")
        return arr[int(channel)]
    planes = arr[:-1] if axes[cax] == "S" and n in (2, 4) else arr  # gray+alpha, RGBA: drop alpha
    if len(planes) == 1 or all(np.array_equal(planes[0], p) for p in planes[1:]):
        return planes[0]
    raise ImageInputError(
        f"{path} has {n} channels (axes {shown_axes!r}); choose one with channel= (0-based; CLI: --channel)"
    )


def read_input(
    path: str | os.PathLike, *, channel: int | None = None, finite: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """The one image reader: a 2-D array and ``{"spacing": (dy, dx) or None, "unit", "axes", "dtype",
    "shape"}`` (the calibration and the file's own axes, shape and pixel type).

    TIFF axes come from tifffile (ImageJ hyperstacks, OME, plain); singleton axes are dropped. A channel
    axis (``C``, or ``S`` = RGB samples) needs ``channel`` (0-based) unless it holds one channel, or RGB
    with equal channels (grayscale saved as RGB); an alpha channel is ignored. Z, T or other page axes
    with more than one plane raise :class:`ImageInputError` ("3-D stacks are not supported yet"), as do
    unreadable files and, with ``finite`` (the default), non-finite values. The calibration is the TIFF
    resolution with ImageJ's unit (PNG: none). :func:`read_image` is the same reader without the record.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ImageInputError(f"{path} is empty (0 bytes); expected an image file")
    arr, axes, spacing, unit = _read_array(path)
    info: dict[str, Any] = {"axes": axes, "shape": list(arr.shape), "dtype": str(arr.dtype)}
    if len(axes) != arr.ndim:
        axes = "Q" * (arr.ndim - 2) + "YX"
    keep = [i for i, (a, n) in enumerate(zip(axes, arr.shape)) if n > 1 or a in "YX"]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if not set(axes) <= set("YXCS") or axes.count("Y") != 1 or axes.count("X") != 1:
        raise ImageInputError(
            f"{path} has axes {info['axes']!r} and shape {tuple(info['shape'])}: 3-D stacks and time series "
            "are not supported yet (expected a 2-D image, optionally with channels)"
        )
    if "C" in axes and "S" in axes:
        raise ImageInputError(f"{path} has both channels and RGB samples (axes {info['axes']!r}); not supported")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ImageInputError(f"{path} has unsupported pixel type {arr.dtype}")
    arr = _one_channel(arr, axes, path, channel, info["axes"])
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.size == 0:
        raise ImageInputError(f"{path} holds an empty image of shape {arr.shape}; expected pixels")
    if finite and np.issubdtype(arr.dtype, np.floating):
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ImageInputError(
                f"{path} has {bad} NaN or infinite pixel(s); expected finite values (replace them, e.g. "
                "Fiji: Process > Math > Remove NaNs...)"
            )
    info.update(spacing=spacing, unit=unit)
    return arr, info


def read_image(path: str | os.PathLike, *, channel: int | None = None) -> np.ndarray:
    """Only the pixels of :func:`read_input` (the same reader; NaN allowed, e.g. in uncertainty maps):
    a 2-D grayscale image (8/16-bit or float); RGB with equal channels is reduced to one.

    Colour images with unequal channels (without ``channel``) and 3-D stacks are an
    :class:`ImageInputError` (an :class:`AnnotationError`); a missing file a ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image {path} does not exist")
    return read_input(path, channel=channel, finite=False)[0]


def _tiff_has_overlay(path: Path) -> bool:
    import tifffile

    if path.is_file() and path.stat().st_size == 0:
        raise AnnotationError(f"{path} is empty (0 bytes); expected an image file")
    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata or {}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise AnnotationError(f"cannot read TIFF {path}: {one_line(exc)}") from exc
    return bool(meta.get("Overlays") or meta.get("ROI"))


def _reject_intensity_image(arr: np.ndarray, values: np.ndarray, path: Path) -> None:
    """A mask or label image has a background; a microscopy image passed by mistake has none.

    An annotation with more than 64 distinct values of which 0 covers under half the pixels is taken for an
    intensity image (e.g. the raw image given as an expert's mask) and refused.
    """
    if values.size > 64 and np.count_nonzero(arr == 0) < arr.size / 2:
        raise AnnotationError(
            f"annotation {path} looks like an intensity image ({values.size} distinct values, background 0 "
            f"on {np.count_nonzero(arr == 0) / arr.size:.0%} of the pixels); expected a binary mask "
            "(0/1, 0/255) or a label image (0 = background, 1..N = objects)"
        )


def read_annotation(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one annotation file as an int32 label image (0 = background).

    Mask images keep their values: a binary mask (0/1 or 0/255, also RGB with equal channels) becomes
    0/1; a label image keeps its labels. ROI files (``.zip``, ``.roi``, a TIFF with an ImageJ overlay)
    are rasterised exactly as ImageJ fills them, ROI ``i`` becoming label ``i + 1``.

    Parameters
    ----------
    path
        The annotation file.
    shape
        ``(Y, X)`` of the image it belongs to: required for ROI files, checked for mask images.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    is_roi = suffix in (".zip", ".roi") or (suffix in (".tif", ".tiff") and _tiff_has_overlay(path))
    if is_roi:
        from . import rois

        if shape is None:
            raise ValueError(f"reading ROIs from {path} needs the image shape (Y, X)")
        roi_list = rois.read_rois(path)
        if not roi_list:
            logger.warning("%s holds no ROI: treated as an empty annotation", path)
        return rois.rois_to_labels(roi_list, tuple(shape))
    arr = _squeeze_gray(_read_pixels(path), path, "annotation")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or arr.min() < 0:
            raise AnnotationError(
                f"annotation {path} holds non-integer or negative values "
                f"(range {arr.min()}..{arr.max()}); expected a binary mask or a label image"
            )
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise AnnotationError(f"annotation {path} has unsupported dtype {arr.dtype}")
    elif np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise AnnotationError(f"annotation {path} holds negative values; expected labels >= 0")
    values = np.unique(arr)
    _reject_intensity_image(arr, values, path)
    if values.size <= 2 and set(values.tolist()) <= {0, 255}:
        labels = (arr > 0).astype(np.int32)
    else:
        labels = arr.astype(np.int32)
    if shape is not None and labels.shape != tuple(shape):
        raise AnnotationError(
            f"annotation {path} has shape {labels.shape}, but its image has shape {tuple(shape)}"
        )
    return labels


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an annotation as a boolean foreground mask (any label > 0)."""
    return read_annotation(path, shape) > 0


# --------------------------------------------------------------------------------------------- datasets


@dataclass
class ExpertDataset:
    """Images and the experts' annotations, paired by id; pixels are read lazily, one image at a time.

    Attributes
    ----------
    images
        image id → image path, sorted by id.
    experts
        expert name → (image id → annotation path).
    ignore
        image id → ignore-mask path (only images that have one).
    """

    images: dict[str, Path]
    experts: dict[str, dict[str, Path]]
    ignore: dict[str, Path] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return list(self.images)

    @property
    def expert_names(self) -> list[str]:
        return list(self.experts)

    def raters(self, image_id: str) -> list[str]:
        """The experts who annotated ``image_id`` (all of them unless opened with ``missing_ok``)."""
        return [name for name, paths in self.experts.items() if image_id in paths]

    @property
    def complete(self) -> bool:
        """Whether every expert annotated every image."""
        return all(len(paths) == len(self.images) for paths in self.experts.values())

    def load(self, image_id: str) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """Return ``(image, {expert: label image}, ignore mask or None)`` for one image id.

        Only the experts who annotated the image are in the dict (see :meth:`raters`). Every annotation is checked to have the image's shape; the error names image, expert and shapes.
        """
        if image_id not in self.images:
            raise KeyError(f"no image with id {image_id!r}; ids: {', '.join(self.ids[:10])}")
        path = self.images[image_id]
        if not path.exists():
            raise FileNotFoundError(f"image {path} does not exist")
        image, _ = read_input(path)
        annotations = {}
        for name, paths in self.experts.items():
            path = paths.get(image_id)
            if path is None:
                continue
            try:
                annotations[name] = read_annotation(path, image.shape)
            except AnnotationError as exc:
                raise AnnotationError(f"image {image_id!r}, expert {name!r}: {exc}") from None
        ignore = None
        if image_id in self.ignore:
            try:
                ignore = read_mask(self.ignore[image_id], image.shape)
            except AnnotationError as exc:
                raise AnnotationError(f"image {image_id!r}, ignore mask: {exc}") from None
        return image, annotations, ignore


def open_dataset(
    images: str | os.PathLike,
    experts: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    *,
    ignore: str | os.PathLike | None = None,
    expert_names: Sequence[str] | None = None,
    missing_ok: bool = False,
) -> ExpertDataset:
    """Pair an image folder with one folder per expert (and optionally an ignore folder).

    Parameters
    ----------
    images
        Folder of images.
    experts
        Expert folders (names default to the folder names) or a mapping name → folder.
    ignore
        Optional folder of ignore masks; images without one are fully scored.
    expert_names
        Names for the folders in ``experts`` (when it is a sequence).
    missing_ok
        Allow experts to have annotated only some images (missing raters); by default an image an expert
        did not annotate is an error.
    """
    image_paths = list_images(images)
    if isinstance(experts, Mapping):
        named = {str(k): Path(v) for k, v in experts.items()}
    else:
        folders = [Path(e) for e in experts]
        names = list(expert_names) if expert_names is not None else [f.name for f in folders]
        if len(names) != len(folders):
            raise ValueError(f"expert_names has {len(names)} names for {len(folders)} folders")
        if len(set(names)) != len(names):
            raise ValueError(
                f"expert names must be unique; got {names}: give names with expert_names "
                "(CLI: --expert-names)"
            )
        named = dict(zip(names, folders))
    if not named:
        raise ValueError("no expert folder given; expected at least one")
    pairs = {
        name: pair_annotations(image_paths, folder, expert=name, required=not missing_ok)
        for name, folder in named.items()
    }
    ignore_pairs = (
        pair_annotations(image_paths, ignore, expert="ignore", required=False) if ignore else {}
    )
    return ExpertDataset(images=image_paths, experts=pairs, ignore=ignore_pairs)


def open_project(root: str | os.PathLike, *, missing_ok: bool = False) -> ExpertDataset:
    """Open a project folder: ``images/``, ``annotations/<expert>/`` and optional ``ignore/``.

    ``missing_ok`` as in :func:`open_dataset`.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"project folder {root} does not exist")
    ann = root / "annotations"
    if not ann.is_dir():
        raise AnnotationError(
            f"project folder {root} has no annotations/ folder (expected annotations/<expert>/<id>...)"
        )
    expert_dirs = sorted(p for p in ann.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not expert_dirs:
        raise AnnotationError(f"{ann} holds no expert folder (expected annotations/<expert>/)")
    ignore = root / "ignore"
    return open_dataset(
        root / "images", expert_dirs, ignore=ignore if ignore.is_dir() else None, missing_ok=missing_ok
    )


# --------------------------------------------------------------------------------------------- writing


def write_tiff(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    overwrite: bool = False,
    imagej: bool = True,
    calibration: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Write an array as an (ImageJ) TIFF atomically; refuse to replace a file unless ``overwrite``.

    ``calibration``: ``{"spacing": (dy, dx) or None, "unit": str or None}`` as :func:`read_input` returns it,
    written as the TIFF resolution and ImageJ's unit (so Fiji shows the input's calibration).
    """
    import tifffile

    path = Path(path)
    if calibration is not None:
        if calibration.get("spacing") is not None:
            dy, dx = calibration["spacing"]
            kwargs["resolution"] = (1.0 / dx, 1.0 / dy)
        if calibration.get("unit"):
            kwargs["metadata"] = {**kwargs.get("metadata", {}), "unit": calibration["unit"]}
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(array), imagej=imagej, **kwargs)
    return path


def write_csv(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write dict rows as CSV atomically (floats with up to 6 significant digits; NaN as ``nan``)."""
    path = Path(path)
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return "nan" if not np.isfinite(v) else f"{float(v):.6g}"
        if isinstance(v, np.integer):
            return int(v)
        return v

    with atomic_open(path, "w", overwrite=overwrite) as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: fmt(r.get(k, "")) for k in cols})
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    """Write JSON atomically (NaN and infinities written as null: :func:`fiji_consensus._util.json_safe`)."""
    path = Path(path)
    text = json.dumps(json_safe(data), indent=2, default=_json_default, allow_nan=False)
    with atomic_open(path, "w", overwrite=overwrite) as fh:
        fh.write(text + "\n")
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


__all__ += ["check_writable"]


def read_groups(path: str | os.PathLike) -> dict[str, str]:
    """Read a CSV mapping image id -> group (first two columns; a header row is allowed).

    Ids are kept as written (``0001`` stays ``0001``).
    """
    import csv
    import io as _io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    groups: dict[str, str] = {}
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the groups CSV as UTF-8"
        ) from None
    for i, row in enumerate(csv.reader(_io.StringIO(text, newline=""))):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}, line {i + 1}: expected 'image id, group'; got {row}")
        image_id, group = row[0].strip(), row[1].strip()
        if i == 0 and image_id.lower() in ("file_id", "image", "image_id", "id"):
            continue
        if image_id in groups and groups[image_id] != group:
            raise ValueError(f"{path}: image {image_id!r} is in two groups ({groups[image_id]}, {group})")
        groups[image_id] = group
    if not groups:
        raise ValueError(f"{path} holds no 'image id, group' rows")
    return groups
