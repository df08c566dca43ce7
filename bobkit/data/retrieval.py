"""Readers for the BoB retrieval datasets: each turns its published layout into queries, a database
and per-query ground truth (positives, junk), following the authors' query/database rules (§5.3).

Layouts (the `layout` field of manifests/datasets.yaml):
  class_folders    <root>/<class>/<image> (CUB-200-2011, iNaturalist validation, ObjectNet, INSTRE-S1;
                   the release's own sub-folder such as CUB_200_2011/images is found under <root>)
                   per class: sorted file names, the first N kept (N per dataset, below), the first
                   floor(20 %) are queries, the rest database; positives = same class
  revisitop        <root>/gnd_<name>.pkl + <root>/jpg/<image>.jpg (ROxford5k, RParis6k); full query
                   images, positives easy + hard, junk = junk; images thumbnailed to 224 px first
  gldv2_retrieval  <root>/retrieval_solution_v2.1.csv + query/ + database/ (the authors' extract), or
                   the release's test/ + index/ trees; queries = test ids with a solution
  copydays         <root>/original/ + transformed copies (strong/, jpeg*/, crops/, any depth); a copy's
                   positive is the original of its block (first 4 digits of the 6-digit name);
                   or the authors' <root>/jpg/ + qvmapping.p when present
Every reader checks its layout first and names what is missing.
"""

from __future__ import annotations

import csv
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bobkit.data import missing
from bobkit.errors import BadInput
from bobkit.metrics.retrieval import QueryTruth

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
QUERY_FRACTION = 0.2  # the authors' 20 % queries per class
REVISITOP_THUMBNAIL = 224  # the authors thumbnail Oxford/Paris images to --imsize 224 before the transform


@dataclass(frozen=True)
class ClassFolderProtocol:
    """How many images per class the authors keep, and where the class folders sit in the release."""

    images_per_class: int | None
    subdirs: tuple[str, ...] = ()


# BoB §5.3: CUB all images; iNat the first 5 (1 query + 4 database); ObjectNet and INSTRE the first 50.
CLASS_FOLDER_PROTOCOLS: dict[str, ClassFolderProtocol] = {
    "cub200": ClassFolderProtocol(None, ("CUB_200_2011/images", "images")),
    "inat_retrieval": ClassFolderProtocol(5, ("val",)),
    "objectnet": ClassFolderProtocol(50, ("objectnet-1.0/images", "images")),
    "instre": ClassFolderProtocol(50, ("INSTRE-S1",)),
}
DEFAULT_SUBDIRS = ("images",)


@dataclass
class RetrievalSet:
    """Queries, database and, per query, the database indices of its positives and junk images."""

    queries: list[Path]
    database: list[Path]
    truths: list[QueryTruth]
    thumbnail: int | None = None  # PIL thumbnail to this size before the transform
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.truths) != len(self.queries):
            raise ValueError(f"{len(self.queries)} queries but {len(self.truths)} ground-truth entries")

    @property
    def n_empty_queries(self) -> int:
        return sum(1 for t in self.truths if t.ok.size == 0)

    def describe(self) -> str:
        return (f"{len(self.queries)} queries, {len(self.database)} database images, "
                f"{sum(t.ok.size for t in self.truths) / max(len(self.truths), 1):.1f} positives per query")


@dataclass
class RetrievalContext:
    dataset_spec: dict[str, Any]
    images_per_class: int | None = None  # class folders: first N images per class (None: the dataset's rule)
    queries_fraction: float | None = None  # class folders: fraction of them that query (None: QUERY_FRACTION)

    def missing(self, path: Path, what: str = "is missing"):
        return missing(self.dataset_spec, path, what)

    @property
    def dataset_id(self) -> str:
        return str(self.dataset_spec.get("id"))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def image_names(folder: Path) -> list[str]:
    """Sorted names of the image files directly in `folder` (.jpg/.jpeg/.png, any case)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_image(e.name))


def subfolders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of `folder`."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _holds_class_folders(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    for sub in subfolders(folder)[:5]:
        if image_names(folder / sub):
            return True
    return False


# ---------------------------------------------------------------- class folders


def class_folder_root(root: Path, ctx: RetrievalContext) -> Path:
    """The folder whose sub-folders are the classes: <root> itself or a known release sub-folder."""
    if not root.is_dir():
        raise ctx.missing(root, "is missing (the dataset folder)")
    protocol = CLASS_FOLDER_PROTOCOLS.get(ctx.dataset_id)
    candidates = [root] + [root / s for s in (protocol.subdirs if protocol else DEFAULT_SUBDIRS)]
    for cand in candidates:
        if _holds_class_folders(cand):
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise ctx.missing(root, f"holds no class folders with images (looked in {tried})")


def split_class_folders(root: Path, images_per_class: int | None, query_fraction: float
                        ) -> tuple[list[Path], list[Path], list[QueryTruth]]:
    """The authors' per-class split: sorted names, keep the first N, first floor(fraction·n) are queries.

    Positives of a query are the database images of its class. A class too small for a query
    (floor gives 0) still adds its images to the database.
    """
    queries: list[Path] = []
    database: list[Path] = []
    truths: list[QueryTruth] = []
    for cls in subfolders(root):
        files = image_names(root / cls)
        if images_per_class is not None:
            files = files[:images_per_class]
        n_query = int(math.floor(len(files) * query_fraction))
        first_db = len(database)
        database += [root / cls / f for f in files[n_query:]]
        ok = np.arange(first_db, len(database), dtype=np.int64)
        for f in files[:n_query]:
            queries.append(root / cls / f)
            truths.append(QueryTruth(ok))
    return queries, database, truths


def read_class_folders(root: Path, ctx: RetrievalContext) -> RetrievalSet:
    protocol = CLASS_FOLDER_PROTOCOLS.get(ctx.dataset_id, ClassFolderProtocol(None))
    per_class = protocol.images_per_class if ctx.images_per_class is None else ctx.images_per_class
    fraction = QUERY_FRACTION if ctx.queries_fraction is None else ctx.queries_fraction
    class_root = class_folder_root(root, ctx)
    queries, database, truths = split_class_folders(class_root, per_class, fraction)
    if not queries:
        raise ctx.missing(class_root, f"yields no query (each class needs at least {math.ceil(1 / fraction)} "
                                      "images for one)")
    keep = "all images" if per_class is None else f"the first {per_class} images"
    return RetrievalSet(queries, database, truths,
                        notes=[f"{class_root}: {keep} per class, first {fraction:g} as queries"])


# ---------------------------------------------------------------- revisitop (ROxford5k, RParis6k)


def _revisitop_gnd(root: Path, ctx: RetrievalContext) -> tuple[str, dict[str, Any]]:
    if not root.is_dir():
        raise ctx.missing(root, "is missing (the dataset folder)")
    files = sorted(root.glob("gnd_*.pkl"))
    if not files:
        raise ctx.missing(root / f"gnd_{ctx.dataset_id}.pkl", "is missing (the revisitop ground-truth pickle)")
    path = files[0]
    with open(path, "rb") as fh:
        cfg = pickle.load(fh)
    for key in ("imlist", "qimlist", "gnd"):
        if key not in cfg:
            raise ctx.missing(path, f"has no '{key}' entry (not a revisitop gnd file)")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise ctx.missing(path, f"lists {len(cfg['qimlist'])} queries but {len(cfg['gnd'])} ground-truth entries")
    return path.stem[len("gnd_"):], cfg


def _check_listed(paths: list[Path], listing: Path, ctx: RetrievalContext) -> None:
    lacking = [p for p in paths if not p.is_file()]
    if lacking:
        raise ctx.missing(lacking[0], f"is missing ({len(lacking)} of the {len(paths)} images listed in "
                                      f"{listing.name} are absent)")


def read_revisitop(root: Path, ctx: RetrievalContext) -> RetrievalSet:
    """Medium protocol of the revisited Oxford/Paris: ok = easy + hard, junk = junk; no query crop."""
    name, cfg = _revisitop_gnd(root, ctx)
    images = root / "jpg"
    if not images.is_dir():
        raise ctx.missing(images, "is missing (the folder of .jpg images)")
    database = [images / f"{n}.jpg" for n in cfg["imlist"]]
    queries = [images / f"{n}.jpg" for n in cfg["qimlist"]]
    _check_listed(database + queries, root / f"gnd_{name}.pkl", ctx)
    truths = []
    for g in cfg["gnd"]:
        ok = np.concatenate([np.asarray(g.get("easy", []), dtype=np.int64), np.asarray(g.get("hard", []), dtype=np.int64)])
        truths.append(QueryTruth(ok, np.asarray(g.get("junk", []), dtype=np.int64)))
    return RetrievalSet(queries, database, truths, thumbnail=REVISITOP_THUMBNAIL,
                        notes=[f"{name}: Medium protocol (easy+hard positive, junk ignored), full query images, "
                               f"thumbnail {REVISITOP_THUMBNAIL} px"])


# ---------------------------------------------------------------- Google Landmarks v2 retrieval

GLDV2_SOLUTION = "retrieval_solution_v2.1.csv"


def _images_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if _is_image(f):
                out[os.path.splitext(f)[0]] = Path(dirpath) / f
    return out


def _natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def read_gldv2(root: Path, ctx: RetrievalContext) -> RetrievalSet:
    """Queries: test images whose solution row names index images (not "None"); database: all index images."""
    solution = root / GLDV2_SOLUTION
    if not solution.is_file():
        raise ctx.missing(solution, "is missing (the retrieval ground truth)")
    pairs = (("query", "database"), ("test", "index"))
    chosen = next(((q, d) for q, d in pairs if (root / q).is_dir() and (root / d).is_dir()), None)
    if chosen is None:
        raise ctx.missing(root / "query", "is missing (need query/ + database/, or the release's test/ + index/)")
    query_images = _images_by_stem(root / chosen[0])
    db_images = _images_by_stem(root / chosen[1])
    db_ids = sorted(db_images, key=_natural_key)
    position = {i: n for n, i in enumerate(db_ids)}
    queries: list[Path] = []
    truths: list[QueryTruth] = []
    skipped = 0
    with open(solution, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"id", "images"} <= set(reader.fieldnames or []):
            raise ctx.missing(solution, "lacks the columns id, images")
        rows = sorted((r for r in reader if r["images"].strip() not in ("", "None")), key=lambda r: _natural_key(r["id"]))
    for r in rows:
        if r["id"] not in query_images:
            skipped += 1
            continue
        wanted = r["images"].split()
        lacking = [w for w in wanted if w not in position]
        if lacking:
            raise ctx.missing(root / chosen[1] / f"{lacking[0]}.jpg",
                              f"is missing (a positive of query {r['id']} in {GLDV2_SOLUTION})")
        queries.append(query_images[r["id"]])
        truths.append(QueryTruth(np.asarray(sorted(position[w] for w in wanted), dtype=np.int64)))
    if not queries:
        raise ctx.missing(root / chosen[0], f"holds none of the queries listed in {GLDV2_SOLUTION}")
    notes = [f"{chosen[0]}/ + {chosen[1]}/"]
    if skipped:
        notes.append(f"{skipped} queries of {GLDV2_SOLUTION} are not under {chosen[0]}/ and are left out")
    return RetrievalSet(queries, [db_images[i] for i in db_ids], truths, notes=notes)


# ---------------------------------------------------------------- Copydays


def copydays_block(name: str) -> str:
    """The block an image belongs to: the first 4 digits of its 6-digit name (200000.jpg, 200003.jpg -> 2000)."""
    stem = os.path.splitext(os.path.basename(name))[0]
    if not (stem.isdigit() and len(stem) == 6):
        raise ValueError(f"{name}: not a 6-digit Copydays image name")
    return stem[:4]


def _read_copydays_mapping(root: Path, ctx: RetrievalContext) -> RetrievalSet:
    """The authors' layout: jpg/ + qvmapping.p {query file: [database files]}; sorted queries, sorted database."""
    with open(root / "qvmapping.p", "rb") as fh:
        mapping = pickle.load(fh)
    if not isinstance(mapping, dict) or not mapping:
        raise ctx.missing(root / "qvmapping.p", "is not a non-empty {query: [database images]} mapping")
    db_names = sorted({v for vals in mapping.values() for v in vals})
    position = {v: i for i, v in enumerate(db_names)}
    q_names = sorted(mapping)
    queries = [root / "jpg" / q for q in q_names]
    database = [root / "jpg" / v for v in db_names]
    _check_listed(queries + database, root / "qvmapping.p", ctx)
    truths = [QueryTruth(np.asarray(sorted(position[v] for v in mapping[q]), dtype=np.int64)) for q in q_names]
    return RetrievalSet(queries, database, truths, notes=["jpg/ + qvmapping.p (the authors' mapping)"])


def read_copydays(root: Path, ctx: RetrievalContext) -> RetrievalSet:
    if not root.is_dir():
        raise ctx.missing(root, "is missing (the dataset folder)")
    if (root / "qvmapping.p").is_file() and (root / "jpg").is_dir():
        return _read_copydays_mapping(root, ctx)
    originals_dir = root / "original"
    if not originals_dir.is_dir():
        raise ctx.missing(originals_dir, "is missing (the 157 original images; or give jpg/ + qvmapping.p)")
    originals = image_names(originals_dir)
    if not originals:
        raise ctx.missing(originals_dir, "holds no images")
    database = [originals_dir / f for f in originals]
    by_block: dict[str, list[int]] = {}
    for i, f in enumerate(originals):
        by_block.setdefault(copydays_block(f), []).append(i)
    queries: list[Path] = []
    truths: list[QueryTruth] = []
    for sub in subfolders(root):
        if sub == "original":
            continue
        for dirpath, dirnames, files in os.walk(root / sub):
            dirnames.sort(key=_natural_key)
            for f in sorted(files, key=_natural_key):
                if not _is_image(f):
                    continue
                block = copydays_block(f)
                if block not in by_block:
                    raise ctx.missing(originals_dir / f"{block}00.jpg",
                                      f"is missing (the original of {Path(dirpath, f).relative_to(root)})")
                queries.append(Path(dirpath) / f)
                truths.append(QueryTruth(np.asarray(by_block[block], dtype=np.int64)))
    if not queries:
        raise ctx.missing(root / "strong", "is missing (no transformed copies next to original/)")
    return RetrievalSet(queries, database, truths,
                        notes=["queries: every transformed copy; positive: the original of the same block "
                               "(bobkit's pairing; the authors' qvmapping.p is not shipped)"])


READERS: dict[str, Callable[[Path, RetrievalContext], RetrievalSet]] = {
    "class_folders": read_class_folders,
    "revisitop": read_revisitop,
    "gldv2_retrieval": read_gldv2,
    "copydays": read_copydays,
}


def read_retrieval_set(dataset_spec: dict[str, Any], root: Path, *, images_per_class: int | None = None,
                       queries_fraction: float | None = None) -> RetrievalSet:
    """Queries, database and ground truth of a retrieval dataset at `root` (real or synthetic, same reader).
    The class-folder layouts take the recipe's images_per_class and queries_per_class_fraction (None:
    the dataset's own rule); the other layouts have fixed query sets."""
    layout = dataset_spec.get("layout")
    reader = READERS.get(layout)
    if reader is None:
        raise BadInput(f"dataset '{dataset_spec.get('id')}': no retrieval reader for layout '{layout}'; "
                       f"known: {', '.join(sorted(READERS))}")
    return reader(Path(root), RetrievalContext(dataset_spec, images_per_class=images_per_class,
                                               queries_fraction=queries_fraction))


# ---------------------------------------------------------------- synthetic stand-ins (same layouts)

SYNTHETIC_IMAGES_PER_CLASS = {"inat_retrieval": 6}  # one more than the 5 kept, so truncation is exercised
SYNTHETIC_DEFAULT_PER_CLASS = 10  # 2 queries + 8 database images per class


def _synthetic_seed(spec: dict[str, Any], part: str) -> int:
    from bobkit.data.synthetic import rng_for

    return int(rng_for("synthetic-retrieval", spec.get("id"), part).integers(0, 2**31))


def write_class_folders(dest: Path, spec: dict[str, Any]) -> None:
    """<release sub-folder>/<class>/<image>, e.g. CUB_200_2011/images/001.Black_footed_Albatross/*.jpg."""
    from bobkit.data.synthetic import SYNTHETIC_CLASSES, class_image, save_image

    dataset_id = str(spec.get("id"))
    protocol = CLASS_FOLDER_PROTOCOLS.get(dataset_id)
    base = dest / protocol.subdirs[0] if protocol and protocol.subdirs else dest
    per_class = SYNTHETIC_IMAGES_PER_CLASS.get(dataset_id, SYNTHETIC_DEFAULT_PER_CLASS)
    ext = ".png" if dataset_id == "objectnet" else ".jpg"
    for label in range(SYNTHETIC_CLASSES):
        cls = f"{label + 1:03d}.Synthetic_class_{label}" if dataset_id == "cub200" else f"class_{label:03d}"
        for i in range(per_class):
            img = class_image(label, i, num_classes=SYNTHETIC_CLASSES, seed=_synthetic_seed(spec, "all"))
            save_image(img, base / cls / f"{cls.split('.')[-1]}_{i:04d}{ext}")
        if label == 0:  # INSTRE ships box files next to the images; a reader must skip non-images
            (base / cls / "labels.txt").write_text("not an image\n")


def write_revisitop(dest: Path, spec: dict[str, Any]) -> None:
    """gnd_<name>.pkl (imlist, qimlist, gnd with easy/hard/junk/bbx) + jpg/<name>.jpg, as revisitop ships."""
    from bobkit.data.synthetic import SYNTHETIC_CLASSES, class_image, save_image

    name = str(spec.get("id"))
    per_landmark = 6  # database images per landmark: 3 easy, 2 hard, 1 junk
    imlist, qimlist, gnd = [], [], []
    seed_db, seed_q = _synthetic_seed(spec, "database"), _synthetic_seed(spec, "query")
    for label in range(SYNTHETIC_CLASSES):
        for i in range(per_landmark):
            imname = f"landmark{label}_{i:06d}"
            save_image(class_image(label, i, num_classes=SYNTHETIC_CLASSES, seed=seed_db), dest / "jpg" / f"{imname}.jpg")
            imlist.append(imname)
    for label in range(SYNTHETIC_CLASSES):
        qname = f"landmark{label}_query"
        save_image(class_image(label, 100, num_classes=SYNTHETIC_CLASSES, seed=seed_q), dest / "jpg" / f"{qname}.jpg")
        qimlist.append(qname)
        first = label * per_landmark
        gnd.append({"easy": list(range(first, first + 3)), "hard": list(range(first + 3, first + 5)),
                    "junk": [first + 5], "bbx": [0.0, 0.0, 40.0, 40.0]})
    with open(dest / f"gnd_{name}.pkl", "wb") as fh:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, fh)


def _hex_id(rng: np.random.Generator) -> str:
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, size=8))


def write_gldv2(dest: Path, spec: dict[str, Any]) -> None:
    """retrieval_solution_v2.1.csv (id, images, Usage) + query/<id>.jpg + database/<id>.jpg."""
    from bobkit.data.synthetic import SYNTHETIC_CLASSES, class_image, rng_for, save_image

    rng = rng_for("synthetic-gldv2", spec.get("id"))
    seed_db, seed_q = _synthetic_seed(spec, "database"), _synthetic_seed(spec, "query")
    rows = []
    for label in range(SYNTHETIC_CLASSES):
        db_ids = [_hex_id(rng) for _ in range(4)]
        for i, d in enumerate(db_ids):
            save_image(class_image(label, i, num_classes=SYNTHETIC_CLASSES, seed=seed_db), dest / "database" / f"{d}.jpg")
        for j in range(2):
            q = _hex_id(rng)
            save_image(class_image(label, 50 + j, num_classes=SYNTHETIC_CLASSES, seed=seed_q), dest / "query" / f"{q}.jpg")
            rows.append({"id": q, "images": " ".join(db_ids[: 2 + j * 2]), "Usage": "Public" if j == 0 else "Private"})
    rows.append({"id": _hex_id(rng), "images": "None", "Usage": "Ignored"})  # a test image without landmark
    with open(dest / GLDV2_SOLUTION, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "images", "Usage"])
        writer.writeheader()
        writer.writerows(rows)


def write_copydays(dest: Path, spec: dict[str, Any]) -> None:
    """original/<block>00.jpg, strong/<block>0k.jpg, jpegqual/<q>/ and crops/<pct>/ copies of the originals."""
    from PIL import Image

    from bobkit.data.synthetic import SYNTHETIC_CLASSES, class_image, save_image

    seed = _synthetic_seed(spec, "original")
    for label in range(SYNTHETIC_CLASSES):
        block = 2000 + label
        original = class_image(label, 0, num_classes=SYNTHETIC_CLASSES, seed=seed)
        save_image(original, dest / "original" / f"{block}00.jpg")
        w, h = original.size
        save_image(original.rotate(90), dest / "strong" / f"{block}01.jpg")
        save_image(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((w // 2, h // 2)),
                   dest / "strong" / f"{block}02.jpg")
        save_image(original, dest / "jpegqual" / "20" / f"{block}00.jpg", quality=20)
        save_image(original.crop((w // 4, h // 4, w, h)), dest / "crops" / "50" / f"{block}00.jpg")
