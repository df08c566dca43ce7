"""The 1 % / 10 % ImageNet training subsets (semi-supervised protocol, BoB §1.4).

The authors download SimCLR's lists (`{1,10}percent.txt`, one training file name per line) at
run time. bobkit never downloads at run time: if those files are under the dataset folder
(`<imagenet>/subsets/` or `<imagenet>/`) they are used; otherwise bobkit draws its own
deterministic per-class list (fixed seed, the same for every backbone so the runs stay comparable).
Either way the list used is written into the run directory, and a resumed run reads it back.
"""

from __future__ import annotations

import math
from pathlib import Path

from bobkit.data.classification import LabelledSplit
from bobkit.errors import EnvironmentMissing

FRACTIONS = {"1pct": 0.01, "10pct": 0.10}
SIMCLR_NAMES = {"1pct": "1percent.txt", "10pct": "10percent.txt"}
SUBSET_SEED = 0


def subset_file_name(subset: str) -> str:
    return f"imagenet_subset_{subset}.txt"


def simclr_list(dataset_root: Path, subset: str) -> Path | None:
    for cand in (dataset_root / "subsets" / SIMCLR_NAMES[subset], dataset_root / SIMCLR_NAMES[subset]):
        if cand.is_file():
            return cand
    return None


def draw_subset(split: LabelledSplit, subset: str, seed: int = SUBSET_SEED) -> list[str]:
    """bobkit's own list: per class, ceil(fraction x images) files chosen with a seeded permutation."""
    from bobkit.data.synthetic import rng_for

    frac = FRACTIONS[subset]
    by_class: dict[int, list[str]] = {}
    for path, label in split.items:
        by_class.setdefault(int(label), []).append(Path(path).name)
    chosen: list[str] = []
    for label in sorted(by_class):
        names = sorted(by_class[label])
        k = max(1, math.ceil(frac * len(names)))
        order = rng_for("imagenet-subset", subset, seed, split.classes[label]).permutation(len(names))
        chosen += [names[i] for i in sorted(order[:k])]
    return sorted(chosen)


def imagenet_subset(split: LabelledSplit, subset: str, dataset_root: Path, run_dir: Path | None) -> tuple[LabelledSplit, str]:
    """Restrict the ImageNet training split to the subset; returns (split, where the list came from)."""
    from bobkit.results import atomic_write_text

    if subset not in FRACTIONS:
        raise ValueError(f"unknown subset {subset!r}")
    saved = run_dir / subset_file_name(subset) if run_dir else None
    if saved is not None and saved.is_file():
        names, origin = saved.read_text().split(), f"{saved.name} (run directory)"
    elif (simclr := simclr_list(dataset_root, subset)) is not None:
        names, origin = simclr.read_text().split(), f"SimCLR list {simclr}"
    else:
        names, origin = draw_subset(split, subset), f"bobkit's seeded per-class draw (seed {SUBSET_SEED})"
    wanted = set(names)
    keep = [i for i, (path, _) in enumerate(split.items) if Path(path).name in wanted]
    if len(keep) != len(wanted):
        found = {Path(split.items[i][0]).name for i in keep}
        lacking = sorted(wanted - found)
        raise EnvironmentMissing(f"ImageNet subset {subset}: {len(lacking)} listed training image(s) not found under "
                                 f"{dataset_root}, e.g. {lacking[0]} ({origin}); check the ImageNet train folder")
    if saved is not None and not saved.is_file():
        atomic_write_text(saved, "".join(n + "\n" for n in sorted(wanted)))
    out = split.subset(keep)
    out.notes.append(f"{subset} subset: {len(keep)} images from {origin}")
    return out, origin
