"""Readers for the ImageNet OOD test sets, in their published layouts, and their 200-class masks.

Layouts (the `layout` field of manifests/datasets.yaml):
  imagenet_wnid_folders  <root>/<wnid>/<image> (ImageNet-A, ImageNet-R: 200 wnids; ImageNet-Sketch:
                         1000 wnids, also found under the release's <root>/sketch/)
  imagenet_v2_folders    <root>/<ImageNet-1k index 0..999>/<image> (ImageNet-V2; the folder names are
                         class indices, not wnids, so they are never sorted as strings); also found
                         under the release folder imagenetv2-*-format-val/
VisDA-2017 (synthetic→real) is a fine-tune and is read by bobkit.data.classification (layout visda2017).

Labels are indices into a classifier's class list (the 1000 ImageNet-1k wnids for a real
checkpoint), so an image counts as correct when the predicted class is its wnid.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bobkit.data import missing
from bobkit.data.classification import LabelledSplit
from bobkit.data.retrieval import image_names, subfolders
from bobkit.errors import BadInput

SKETCH_SUBDIR = "sketch"


@functools.lru_cache(maxsize=1)
def _imagenet_wnids() -> tuple[str, ...]:
    # timm ships the list as package data; reading the file avoids importing timm (seconds).
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        from bobkit.errors import EnvironmentMissing

        raise EnvironmentMissing("timm is not installed; it provides the ImageNet-1k class list (pip install timm)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    wnids = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError(f"{path}: not the 1000 sorted ImageNet-1k wnids")
    return wnids


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted), as timm ships them."""
    return list(_imagenet_wnids())


@dataclass(frozen=True)
class ClassSubset:
    """The ImageNet-1k classes an OOD set evaluates (ImageNet-A / -R: 200 of them)."""

    indices: tuple[int, ...]
    wnids: tuple[str, ...]
    source: Path


def read_class_subset(path: Path) -> ClassSubset:
    """'<index> <wnid>' per line ('#' comments); checks sorted, unique, in 0..999."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: class subset file not found (a dataset's class_subset names it)")
    indices: list[int] = []
    wnids: list[str] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].startswith("n"):
            raise BadInput(f"{path}: line {n} is not '<ImageNet-1k index> <wnid>'")
        indices.append(int(parts[0]))
        wnids.append(parts[1])
    if not indices:
        raise BadInput(f"{path}: lists no classes")
    if indices != sorted(set(indices)) or len(set(wnids)) != len(wnids):
        raise BadInput(f"{path}: indices must be sorted and unique, wnids unique")
    if indices[0] < 0 or indices[-1] > 999:
        raise BadInput(f"{path}: indices must lie in 0..999")
    return ClassSubset(tuple(indices), tuple(wnids), path)


def subset_path(dataset_spec: dict[str, Any], manifest_dir: Path | None = None) -> Path | None:
    """The dataset's class_subset file, resolved against the manifest folder."""
    rel = dataset_spec.get("class_subset")
    if not rel:
        return None
    if manifest_dir is None:
        from bobkit.manifest.loader import builtin_manifest_dir

        manifest_dir = builtin_manifest_dir()
    return Path(manifest_dir) / rel


def mask_indices(classes: Sequence[str], subset_wnids: Sequence[str]) -> list[int]:
    """Positions in a classifier's class list of the subset's classes (all must be there)."""
    where = {c: i for i, c in enumerate(classes)}
    lacking = [w for w in subset_wnids if w not in where]
    if lacking:
        raise BadInput(f"the classifier has no output for class {lacking[0]} ({len(lacking)} of the subset's "
                       f"{len(subset_wnids)} classes lacking); was it fine-tuned on ImageNet-1k?")
    return sorted(where[w] for w in subset_wnids)


def _image_files(folder: Path) -> list[Path]:
    return [folder / name for name in image_names(folder)]


def wnid_folders_root(root: Path, dataset_spec: dict[str, Any]) -> Path:
    if not root.is_dir():
        raise missing(dataset_spec, root, "is missing (the dataset folder)")
    if not any(c.startswith("n") and c[1:].isdigit() for c in subfolders(root)) and (root / SKETCH_SUBDIR).is_dir():
        return root / SKETCH_SUBDIR
    return root


def read_wnid_folders(root: Path, dataset_spec: dict[str, Any], classes: Sequence[str]) -> LabelledSplit:
    """<root>/<wnid>/<image>; the label of an image is the index of its wnid in `classes`."""
    folder = wnid_folders_root(root, dataset_spec)
    where = {c: i for i, c in enumerate(classes)}
    items: list[tuple[Any, Any]] = []
    names = subfolders(folder)
    if not names:
        raise missing(dataset_spec, folder, "holds no <wnid> class folders")
    for wnid in names:
        if wnid not in where:
            raise missing(dataset_spec, folder / wnid, "is a class folder the classifier has no output for "
                                                       "(not an ImageNet-1k wnid)")
        items += [(p, where[wnid]) for p in _image_files(folder / wnid)]
    if not items:
        raise missing(dataset_spec, folder, "holds no images")
    return LabelledSplit(items, list(classes))


def v2_root(root: Path, dataset_spec: dict[str, Any]) -> Path:
    if not root.is_dir():
        raise missing(dataset_spec, root, "is missing (the dataset folder)")
    if any(c.isdigit() for c in subfolders(root)):
        return root
    releases = [c for c in subfolders(root) if c.startswith("imagenetv2-") and c.endswith("-format-val")]
    if len(releases) == 1:
        return root / releases[0]
    raise missing(dataset_spec, root, "holds no <class index> folders (nor one imagenetv2-*-format-val/ folder)")


def read_v2_folders(root: Path, dataset_spec: dict[str, Any], classes: Sequence[str]) -> LabelledSplit:
    """<root>/<class index>/<image>: folder k holds images of class k of `classes`."""
    folder = v2_root(root, dataset_spec)
    items: list[tuple[Any, Any]] = []
    for name in sorted((c for c in subfolders(folder) if c.isdigit()), key=int):
        k = int(name)
        if k >= len(classes):
            raise missing(dataset_spec, folder / name, f"is a class index beyond the classifier's {len(classes)} classes")
        items += [(p, k) for p in _image_files(folder / name)]
    if not items:
        raise missing(dataset_spec, folder, "holds no images")
    return LabelledSplit(items, list(classes))


READERS = {"imagenet_wnid_folders": read_wnid_folders, "imagenet_v2_folders": read_v2_folders}


def read_ood_set(dataset_spec: dict[str, Any], root: Path, classes: Sequence[str]) -> LabelledSplit:
    """The images of an OOD test set, labelled by index into the classifier's `classes`."""
    layout = dataset_spec.get("layout")
    reader = READERS.get(layout)
    if reader is None:
        raise BadInput(f"dataset '{dataset_spec.get('id')}': no OOD reader for layout '{layout}'; "
                       f"known: {', '.join(sorted(READERS))}")
    return reader(Path(root), dataset_spec, classes)


# ---------------------------------------------------------------- synthetic stand-ins (same layouts)

SYNTHETIC_PER_CLASS = 3
# A real 1000-way classifier (--classifier with --smoke) gets images of its first few classes only:
# labels stay indices into its 1000 classes, and a smoke run stays seconds long.
SYNTHETIC_MAX_CLASSES = 12


def synthetic_classes(spec: dict[str, Any]) -> list[str]:
    """The classes a synthetic OOD set is written with: the first SYNTHETIC_MAX_CLASSES of the
    classifier's (passed by the runner), else the synthetic ImageNet's."""
    given = spec.get("synthetic_classes")
    if given:
        return list(given)[:SYNTHETIC_MAX_CLASSES]
    from bobkit.data.synthetic import SYNTHETIC_CLASSES

    return [f"n{1440764 + 1000 * i:08d}" for i in range(SYNTHETIC_CLASSES)]


def _write_class(dest: Path, label: int, n_classes: int, spec: dict[str, Any], ext: str) -> None:
    from bobkit.data.synthetic import class_image, rng_for, save_image

    seed = int(rng_for("synthetic-ood", spec.get("id")).integers(0, 2**31))
    for i in range(SYNTHETIC_PER_CLASS):
        save_image(class_image(label, i, num_classes=n_classes, seed=seed), dest / f"{spec.get('id')}_{i:04d}{ext}")


def write_wnid_folders(dest: Path, spec: dict[str, Any]) -> None:
    """<wnid>/<image>.jpg for the subset's classes (ImageNet-Sketch: under sketch/, as released).

    A class subset is written without its last class, so a masked evaluation has a logit to drop.
    Image k of class j looks like synthetic ImageNet class j (bobkit.data.synthetic).
    """
    classes = synthetic_classes(spec)
    keep = classes[:-1] if spec.get("class_subset") and len(classes) > 1 else classes
    base = dest / SKETCH_SUBDIR if spec.get("id") == "imagenet_sketch" else dest
    for label, wnid in enumerate(classes):
        if wnid in keep:
            _write_class(base / wnid, label, len(classes), spec, ".JPEG" if spec.get("id") == "imagenet_sketch" else ".jpg")


def write_v2_folders(dest: Path, spec: dict[str, Any]) -> None:
    """imagenetv2-matched-frequency-format-val/<class index>/<image>.jpeg."""
    classes = synthetic_classes(spec)
    base = dest / "imagenetv2-matched-frequency-format-val"
    for label in range(len(classes)):
        _write_class(base / str(label), label, len(classes), spec, ".jpeg")
