"""Readers for the BoB classification datasets, each in its published on-disk layout.

A reader turns (dataset root, split name) into a `LabelledSplit`: a list of (image, target) items
plus the class names. Images stay undecoded (paths, or raw arrays for CIFAR) until a transform
asks for them. Each reader first checks its layout and names the first missing file or folder.

Layouts (the `layout` field of manifests/datasets.yaml):
  imagefolder, inat2021  <root>/<split>/<class>/<image>  (split "all": <root>/<class>/<image>)
  cifar_python     <root>/cifar-100-python/{train,test,meta} (the python pickle release)
  flowers102_mat   <root>/{imagelabels.mat,setid.mat,jpg/image_00001.jpg}; splits trnid / valid / tstid
  aircraft_lists   <root>/[fgvc-aircraft-2013b/]data/{images/<id>.jpg, variants.txt, images_variant_<split>.txt}
  eurosat_folders  <root>/2750/<Class>/<Class>_<n>.jpg (EuroSAT RGB) + bobkit's seeded 80/20 split
  chexpert_csv     <root>/[CheXpert-v1.0-small/]{train.csv,valid.csv,train/,valid/}
  visda2017        <root>/<split>/image_list.txt ("<relative path> <label>")
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bobkit.data import missing
from bobkit.errors import BadInput

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

CHEXPERT_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
# BoB §1.5 (Medical-MAE): uncertain (-1) becomes 1 for these, 0 for the rest ("U-ones"/"U-zeros").
CHEXPERT_U_ONES = ("Edema", "Atelectasis")
CHEXPERT_SHUFFLE_SEED = 123
CHEXPERT_MEAN = (0.5056, 0.5056, 0.5056)
CHEXPERT_STD = (0.252, 0.252, 0.252)

EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
EUROSAT_SPLIT = {"train": 0.8, "eval": 0.2}  # bobkit's own per-class split (the authors' was not shipped)
EUROSAT_SPLIT_SEED = 0
EUROSAT_SPLIT_FILE = "eurosat_split.json"

VISDA_CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
                 "skateboard", "train", "truck")


@dataclass
class LabelledSplit:
    """One split of a classification dataset: undecoded images and their targets."""

    items: list[tuple[Any, Any]]  # (path | HxWx3 uint8 array, int label | float vector)
    classes: list[str]
    multilabel: bool = False
    gray: bool = False
    mean: tuple[float, float, float] | None = None  # dataset-specific normalisation (CheXpert)
    std: tuple[float, float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list[Any]:
        return [t for _, t in self.items]

    def subset(self, keep: Sequence[int]) -> "LabelledSplit":
        return LabelledSplit([self.items[i] for i in keep], self.classes, self.multilabel, self.gray,
                             self.mean, self.std, list(self.notes))


@dataclass
class ReadContext:
    """What a reader may need besides the root: the manifest entry (for errors) and a work folder."""

    dataset_spec: dict[str, Any]
    work_dir: Path | None = None  # the run directory; split files bobkit generates are kept here

    def missing(self, path: Path, what: str = "is missing"):
        return missing(self.dataset_spec, path, what)

    def split_name(self, role: str, default: str) -> str:
        splits = self.dataset_spec.get("splits") or {}
        entry = splits.get(role)
        if isinstance(entry, dict) and entry.get("name"):
            return entry["name"]
        return default


class LabelledImages:
    """A torch-style dataset over a LabelledSplit: decodes the image and applies `transform`."""

    def __init__(self, split: LabelledSplit, transform: Callable | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split.items)

    def load(self, index: int):
        from PIL import Image

        source, _ = self.split.items[index]
        if isinstance(source, np.ndarray):
            img = Image.fromarray(source)
        else:
            with Image.open(source) as im:
                img = im.convert("RGB")
        return img.convert("RGB")

    def __getitem__(self, index: int):
        img = self.load(index)
        target = self.split.items[index][1]
        if self.transform is not None:
            img = self.transform(img)
        if self.split.multilabel:
            import torch

            target = torch.as_tensor(target, dtype=torch.float32)
        return img, target


# ---------------------------------------------------------------- helpers


def _need(ctx: ReadContext, path: Path, kind: str = "file") -> Path:
    ok = path.is_file() if kind == "file" else path.is_dir()
    if not ok:
        raise ctx.missing(path, f"is missing (a {kind} of the dataset)")
    return path


def _images_in(folder: Path) -> list[Path]:
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(dirpath) / f)
    return sorted(out)


def _class_folders(ctx: ReadContext, folder: Path) -> list[str]:
    _need(ctx, folder, "folder")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ctx.missing(folder, "holds no class folders")
    return classes


def _known_split(ctx: ReadContext, name: str, aliases: dict[str, str]) -> str:
    if name in aliases:
        return aliases[name]
    raise BadInput(f"dataset '{ctx.dataset_spec.get('id')}': unknown split '{name}' for layout "
                   f"'{ctx.dataset_spec.get('layout')}'; known: {', '.join(sorted(aliases))}")


# ---------------------------------------------------------------- layouts


def _folder_of_split(root: Path, split: str) -> Path:
    """<root>/<split>; split "all" is the root itself, or its only subfolder (ImageNet-Sketch's sketch/)."""
    if split != "all":
        return root / split
    subdirs = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")] if root.is_dir() else []
    if len(subdirs) == 1 and any(e.is_dir() for e in os.scandir(subdirs[0].path)):
        return Path(subdirs[0].path)
    return root


def read_imagefolder(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    """<root>/<split>/<class>/<image>; class indices come from the training split's folders."""
    folder = _folder_of_split(root, split)
    _need(ctx, folder, "folder")
    train_name = ctx.split_name("train", "train")
    class_root = root / train_name if split != "all" and (root / train_name).is_dir() else folder
    classes = _class_folders(ctx, class_root)
    index = {c: i for i, c in enumerate(classes)}
    items: list[tuple[Any, Any]] = []
    for c in sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")):
        if c not in index:
            raise ctx.missing(folder / c, f"is a class folder that {class_root} lacks (the splits disagree)")
        items += [(p, index[c]) for p in _images_in(folder / c)]
    if not items:
        raise ctx.missing(folder, "holds no images")
    return LabelledSplit(items, classes)


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in data.items()}


def read_cifar100(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    """The 'python version' release: pickled dicts with 'data' (N x 3072 uint8) and 'fine_labels'."""
    part = _known_split(ctx, split, {"train": "train", "test": "test", "val": "test", "validation": "test"})
    base = root / "cifar-100-python"
    _need(ctx, base, "folder")
    meta = _unpickle(_need(ctx, base / "meta"))
    data = _unpickle(_need(ctx, base / part))
    if "data" not in data or "fine_labels" not in data:
        raise ctx.missing(base / part, "is not a CIFAR-100 pickle (no 'data'/'fine_labels')")
    pixels = np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = [int(x) for x in data["fine_labels"]]
    classes = list(meta.get("fine_label_names") or [str(i) for i in range(max(labels) + 1)])
    return LabelledSplit([(pixels[i], labels[i]) for i in range(len(labels))], classes)


def read_flowers102(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    """Oxford Flowers-102: 1-based labels in imagelabels.mat, 1-based image ids per split in setid.mat."""
    from scipy.io import loadmat

    key = _known_split(ctx, split, {"trnid": "trnid", "train": "trnid", "valid": "valid", "val": "valid",
                                    "tstid": "tstid", "test": "tstid"})
    labels = loadmat(_need(ctx, root / "imagelabels.mat"))["labels"].reshape(-1).astype(int)
    setid = loadmat(_need(ctx, root / "setid.mat"))
    if key not in setid:
        raise ctx.missing(root / "setid.mat", f"has no '{key}' array")
    _need(ctx, root / "jpg", "folder")
    ids = setid[key].reshape(-1).astype(int)
    items = []
    for i in ids:
        path = root / "jpg" / f"image_{i:05d}.jpg"
        if not path.is_file():
            raise ctx.missing(path, "is missing (listed in setid.mat)")
        items.append((path, int(labels[i - 1]) - 1))
    num = int(labels.max())
    return LabelledSplit(items, [str(c) for c in range(1, num + 1)])


def read_aircraft(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    """FGVC-Aircraft 2013b, variant level (100 classes): images_variant_<split>.txt = '<id> <variant>'."""
    part = _known_split(ctx, split, {s: s for s in ("train", "val", "trainval", "test")})
    data = root / "fgvc-aircraft-2013b" / "data"
    if not data.is_dir() and (root / "data").is_dir():
        data = root / "data"
    _need(ctx, data, "folder")
    classes = [ln.strip() for ln in _need(ctx, data / "variants.txt").read_text().splitlines() if ln.strip()]
    index = {c: i for i, c in enumerate(classes)}
    listing = _need(ctx, data / f"images_variant_{part}.txt")
    _need(ctx, data / "images", "folder")
    items = []
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        image_id, _, variant = line.strip().partition(" ")
        if variant not in index:
            raise ctx.missing(listing, f"line {n}: variant '{variant}' is not in variants.txt")
        path = data / "images" / f"{image_id}.jpg"
        if not path.is_file():
            raise ctx.missing(path, f"is missing (listed in {listing.name} line {n})")
        items.append((path, index[variant]))
    return LabelledSplit(items, classes)


def _eurosat_images_root(root: Path, ctx: ReadContext) -> Path:
    for cand in (root / "2750", root / "EuroSAT_RGB", root):
        if cand.is_dir() and any((cand / c).is_dir() for c in EUROSAT_CLASSES):
            return cand
    raise ctx.missing(root / "2750", f"is missing (the EuroSAT RGB class folders: {', '.join(EUROSAT_CLASSES)})")


def eurosat_split(images_root: Path, classes: list[str], seed: int = EUROSAT_SPLIT_SEED) -> dict[str, list[list]]:
    """bobkit's seeded per-class split (the authors' split file was not released): sorted files,
    shuffled per class with a fixed seed, the first 80 % to train, the rest to eval."""
    from bobkit.data.synthetic import rng_for

    out: dict[str, list[list]] = {k: [] for k in EUROSAT_SPLIT}
    for label, c in enumerate(classes):
        files = sorted(p.relative_to(images_root).as_posix() for p in _images_in(images_root / c))
        order = rng_for("eurosat-split", seed, c).permutation(len(files))
        n_train = int(round(EUROSAT_SPLIT["train"] * len(files)))
        for k, idx in (("train", order[:n_train]), ("eval", order[n_train:])):
            out[k] += [[files[i], label] for i in sorted(idx)]
    return out


def read_eurosat(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    part = _known_split(ctx, split, {"train": "train", "eval": "eval", "val": "eval", "test": "eval"})
    images_root = _eurosat_images_root(root, ctx)
    classes = [c for c in EUROSAT_CLASSES if (images_root / c).is_dir()]
    if len(classes) != len(EUROSAT_CLASSES):
        lacking = [c for c in EUROSAT_CLASSES if c not in classes]
        raise ctx.missing(images_root / lacking[0], f"is missing (class folders lacking: {', '.join(lacking)})")
    split_file = ctx.work_dir / EUROSAT_SPLIT_FILE if ctx.work_dir else None
    if split_file is not None and split_file.is_file():
        splits = json.loads(split_file.read_text())
    else:
        splits = eurosat_split(images_root, classes)
        if split_file is not None:
            from bobkit.results import atomic_write_json

            atomic_write_json(split_file, splits)
    items = [(images_root / rel, int(label)) for rel, label in splits[part]]
    if not items:
        raise ctx.missing(images_root, f"yields an empty '{part}' split")
    return LabelledSplit(items, classes)


def chexpert_targets(row: dict[str, str]) -> list[float]:
    """U-ones for Edema and Atelectasis, U-zeros otherwise; blank (NaN) is 0 (BoB §1.5)."""
    out = []
    for name in CHEXPERT_LABELS:
        raw = (row.get(name) or "").strip()
        value = float(raw) if raw else 0.0
        if value == -1.0:
            value = 1.0 if name in CHEXPERT_U_ONES else 0.0
        out.append(value)
    return out


def _chexpert_path(root: Path, rel: str) -> Path:
    """CSV paths start with the release folder ('CheXpert-v1.0-small/train/...'); resolve under root."""
    parts = Path(rel).parts
    if parts and parts[0] not in ("train", "valid", "test"):
        parts = parts[1:]
    return root.joinpath(*parts)


def read_chexpert(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    """Frontal views only, 5 labels; the train split is shuffled with seed 123 (as the authors do)."""
    part = _known_split(ctx, split, {"train": "train", "train.csv": "train", "valid": "valid", "valid.csv": "valid",
                                     "val": "valid"})
    if (root / "CheXpert-v1.0-small").is_dir():
        root = root / "CheXpert-v1.0-small"
    table = _need(ctx, root / f"{part}.csv")
    with open(table, newline="") as fh:
        reader = csv.DictReader(fh)
        lacking = [c for c in ("Path", "Frontal/Lateral", *CHEXPERT_LABELS) if c not in (reader.fieldnames or [])]
        if lacking:
            raise ctx.missing(table, f"lacks column(s) {', '.join(lacking)}")
        rows = [r for r in reader if r["Frontal/Lateral"] == "Frontal"]
    items = []
    for r in rows:
        path = _chexpert_path(root, r["Path"])
        items.append((path, chexpert_targets(r)))
    if not items:
        raise ctx.missing(table, "lists no frontal views")
    if not items[0][0].is_file():
        raise ctx.missing(items[0][0], f"is missing (first image listed in {table.name})")
    if part == "train":
        order = np.random.RandomState(CHEXPERT_SHUFFLE_SEED).permutation(len(items))
        items = [items[i] for i in order]
    return LabelledSplit(items, list(CHEXPERT_LABELS), multilabel=True, gray=True,
                         mean=CHEXPERT_MEAN, std=CHEXPERT_STD)


def read_visda2017(root: Path, split: str, ctx: ReadContext) -> LabelledSplit:
    """VisDA-2017 classification: <root>/<split>/image_list.txt, paths relative to the split folder."""
    word = split.split()[0] if split.split() else split  # manifest names read "train (synthetic)"
    part = _known_split(ctx, word, {"train": "train", "validation": "validation", "val": "validation",
                                    "test": "test"})
    folder = _need(ctx, root / part, "folder")
    listing = _need(ctx, folder / "image_list.txt")
    items = []
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rel, _, label = line.strip().rpartition(" ")
        if not rel or not label.lstrip("-").isdigit():
            raise ctx.missing(listing, f"line {n} is not '<path> <label>'")
        items.append((folder / rel, int(label)))
    if not items:
        raise ctx.missing(listing, "lists no images")
    if not items[0][0].is_file():
        raise ctx.missing(items[0][0], f"is missing (first image listed in {listing})")
    return LabelledSplit(items, list(VISDA_CLASSES))


READERS: dict[str, Callable[[Path, str, ReadContext], LabelledSplit]] = {
    "imagefolder": read_imagefolder,
    "inat2021": read_imagefolder,
    "cifar_python": read_cifar100,
    "flowers102_mat": read_flowers102,
    "aircraft_lists": read_aircraft,
    "eurosat_folders": read_eurosat,
    "chexpert_csv": read_chexpert,
    "visda2017": read_visda2017,
}


def read_split(dataset_spec: dict[str, Any], root: Path, split: str, work_dir: Path | None = None) -> LabelledSplit:
    """Read one split of a classification dataset from `root` (real or synthetic, same reader)."""
    layout = dataset_spec.get("layout")
    reader = READERS.get(layout)
    if reader is None:
        raise BadInput(f"dataset '{dataset_spec.get('id')}': no classification reader for layout '{layout}'; "
                       f"known: {', '.join(sorted(READERS))}")
    ctx = ReadContext(dataset_spec, work_dir)
    if not Path(root).is_dir():
        raise ctx.missing(Path(root), "is missing (the dataset folder)")
    return reader(Path(root), split, ctx)


def first_fraction(split: LabelledSplit, fraction: float) -> LabelledSplit:
    """The first `fraction` of the rows (after the reader's own seeded shuffle), at least one."""
    keep = max(1, int(math.floor(fraction * len(split.items))))
    return split.subset(range(keep))
