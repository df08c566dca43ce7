"""Synthetic classification datasets in the real layouts read by bobkit.data.classification.

Each writer fills an empty folder with a few learnable images per class (see bobkit.data.synthetic)
and the index files of the real release (pickles, .mat files, lists, CSVs), so the reader under
test is the one real data goes through.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bobkit.data.classification import CHEXPERT_LABELS, EUROSAT_CLASSES, VISDA_CLASSES
from bobkit.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_SIZE, class_image, class_pixels, rng_for, save_image

TRAIN_PER_CLASS = 12
EVAL_PER_CLASS = 4


def _split_names(spec: dict[str, Any], defaults: dict[str, str]) -> dict[str, str]:
    """role -> split name, from the manifest entry where it gives one."""
    splits = spec.get("splits") or {}
    out = dict(defaults)
    for role in defaults:
        entry = splits.get(role)
        if isinstance(entry, dict) and entry.get("name"):
            out[role] = entry["name"]
    return out


def _per_class(role: str) -> int:
    return TRAIN_PER_CLASS if role == "train" else EVAL_PER_CLASS


def _seed(spec: dict[str, Any], role: str) -> int:
    return int(rng_for("synthetic", spec.get("id"), role).integers(0, 2**31))


def synthetic_wnids(n: int = SYNTHETIC_CLASSES) -> list[str]:
    """ImageNet-like class folder names shared by every synthetic ImageNet-style set (so the OOD
    sets' classes are a subset of the synthetic ImageNet's, as in the real data)."""
    return [f"n{1440764 + 1000 * i:08d}" for i in range(n)]


def write_imagefolder(dest: Path, spec: dict[str, Any], class_names: list[str] | None = None) -> None:
    """<dest>/<split>/<class>/<image>.JPEG (split "all": <dest>/<class>/...), for the roles the entry has."""
    classes = class_names or synthetic_wnids()
    roles = {r: s for r, s in _split_names(spec, {"train": "train", "eval": "val"}).items()
             if r in (spec.get("splits") or {"train": 1, "eval": 1})}
    for role, split in roles.items():
        base = dest if split == "all" else dest / split
        for label, c in enumerate(classes):
            for i in range(_per_class(role)):
                img = class_image(label, i, num_classes=len(classes), seed=_seed(spec, role))
                save_image(img, base / c / f"{c}_{i:05d}.JPEG")


def write_inat2021(dest: Path, spec: dict[str, Any]) -> None:
    names = [f"{i:05d}_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_species{i}" for i in range(SYNTHETIC_CLASSES)]
    write_imagefolder(dest, spec, names)


def write_cifar100(dest: Path, spec: dict[str, Any]) -> None:
    """cifar-100-python/{train,test,meta}: pickled dicts as in the release (32 x 32 images)."""
    base = dest / "cifar-100-python"
    base.mkdir(parents=True)
    names = {"train": "train", "eval": "test"}
    for role, part in names.items():
        rows, labels = [], []
        for label in range(SYNTHETIC_CLASSES):
            for i in range(_per_class(role)):
                px = class_pixels(label, i, num_classes=SYNTHETIC_CLASSES, size=32, seed=_seed(spec, role))
                rows.append(px.transpose(2, 0, 1).reshape(-1))
                labels.append(label)
        data = {"filenames": [f"img_{n}.png" for n in range(len(rows))], "fine_labels": labels,
                "coarse_labels": [0] * len(labels), "data": np.stack(rows).astype(np.uint8)}
        with open(base / part, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    with open(base / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(SYNTHETIC_CLASSES)],
                     "coarse_label_names": ["all"]}, fh, protocol=2)


def write_flowers102(dest: Path, spec: dict[str, Any]) -> None:
    """imagelabels.mat (1-based labels), setid.mat (trnid / valid / tstid, 1-based ids), jpg/."""
    from scipy.io import savemat

    labels: list[int] = []
    setid: dict[str, list[int]] = {"trnid": [], "valid": [], "tstid": []}
    roles = {"trnid": "train", "valid": "eval", "tstid": "eval"}
    for key, role in roles.items():
        for label in range(SYNTHETIC_CLASSES):
            for i in range(_per_class(role)):
                labels.append(label + 1)
                image_id = len(labels)
                setid[key].append(image_id)
                img = class_image(label, i, num_classes=SYNTHETIC_CLASSES, seed=_seed(spec, key))
                save_image(img, dest / "jpg" / f"image_{image_id:05d}.jpg")
    savemat(dest / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(dest / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in setid.items()})


def write_aircraft(dest: Path, spec: dict[str, Any]) -> None:
    """fgvc-aircraft-2013b/data/{images/<7-digit id>.jpg, variants.txt, images_variant_<split>.txt}."""
    data = dest / "fgvc-aircraft-2013b" / "data"
    variants = [f"7{i}7-{100 + i}" for i in range(SYNTHETIC_CLASSES)]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("".join(v + "\n" for v in variants))
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    image_id = 1000000
    for part in lines:
        role = "train" if part == "train" else "eval"
        for label, v in enumerate(variants):
            for i in range(_per_class(role)):
                image_id += 1
                img = class_image(label, i, num_classes=len(variants), seed=_seed(spec, part))
                save_image(img, data / "images" / f"{image_id:07d}.jpg")
                lines[part].append(f"{image_id:07d} {v}")
    lines["trainval"] = lines["train"] + lines["val"]
    for part, rows in lines.items():
        (data / f"images_variant_{part}.txt").write_text("".join(r + "\n" for r in rows))


def write_eurosat(dest: Path, spec: dict[str, Any]) -> None:
    """2750/<Class>/<Class>_<n>.jpg for the ten EuroSAT classes (the split is bobkit's, at read time)."""
    per_class = 10  # 8 / 2 after bobkit's 80/20 split
    for label, c in enumerate(EUROSAT_CLASSES):
        for i in range(per_class):
            img = class_image(label, i, num_classes=len(EUROSAT_CLASSES), seed=_seed(spec, "all"))
            save_image(img, dest / "2750" / c / f"{c}_{i + 1}.jpg")


def write_chexpert(dest: Path, spec: dict[str, Any]) -> None:
    """CheXpert-v1.0-small/{train,valid}.csv with the release's columns, gray frontal and lateral views.

    Each positive finding brightens its own band of the image, so the 5 labels are learnable;
    the CSVs carry uncertain (-1) and blank values to exercise the U-ones / U-zeros policy.
    """
    findings = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                "Pleural Other", "Fracture", "Support Devices"]
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *findings]
    counts = {"train": 40, "valid": 16}
    dest = dest / "CheXpert-v1.0-small"
    for part, n in counts.items():
        rng = rng_for("chexpert", spec.get("id"), part)
        rows = []
        for k in range(n):
            patient = f"patient{k + 1:05d}"
            values = {f: "" for f in findings}
            truth = []
            for j, name in enumerate(CHEXPERT_LABELS):
                positive = bool((k >> j) & 1) if part == "train" else bool(rng.integers(0, 2))
                truth.append(positive)
                values[name] = "1.0" if positive else ("0.0" if rng.random() < 0.7 else "")
            if part == "train" and k % 7 == 3:  # an uncertain label resolved by the policy
                name = CHEXPERT_LABELS[k % len(CHEXPERT_LABELS)]
                ones = name in ("Edema", "Atelectasis")
                values[name] = "-1.0"
                truth[CHEXPERT_LABELS.index(name)] = ones
            pixels = class_pixels(0, k, num_classes=1, size=SYNTHETIC_SIZE, seed=_seed(spec, part), gray=True)
            pixels = pixels.astype(np.int32) // 2
            band = SYNTHETIC_SIZE // len(CHEXPERT_LABELS)
            for j, positive in enumerate(truth):
                if positive:
                    pixels[j * band:(j + 1) * band, :] += 110
            from PIL import Image

            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
            rel = f"{part}/{patient}/study1/view1_frontal.jpg"
            save_image(img, dest / rel)
            rows.append({"Path": f"CheXpert-v1.0-small/{rel}", "Sex": "Female", "Age": "60",
                         "Frontal/Lateral": "Frontal", "AP/PA": "AP", **values})
            if k % 5 == 0:  # lateral views are dropped by the reader
                rel_lat = f"{part}/{patient}/study1/view2_lateral.jpg"
                save_image(img, dest / rel_lat)
                rows.append({**rows[-1], "Path": f"CheXpert-v1.0-small/{rel_lat}", "Frontal/Lateral": "Lateral",
                             "AP/PA": ""})
        with open(dest / f"{part}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header)
            w.writeheader()
            w.writerows(rows)


def write_visda2017(dest: Path, spec: dict[str, Any]) -> None:
    """train/ (synthetic renders) and validation/ (real photos), each with image_list.txt."""
    for part, role in (("train", "train"), ("validation", "eval")):
        lines = []
        for label, c in enumerate(VISDA_CLASSES):
            for i in range(_per_class(role) // 2 or 1):
                img = class_image(label, i, num_classes=len(VISDA_CLASSES), seed=_seed(spec, part))
                name = f"{c}/{'src_1_' if part == 'train' else ''}{c}_{i:05d}.{'png' if part == 'train' else 'jpg'}"
                save_image(img, dest / part / name)
                lines.append(f"{name} {label}")
        (dest / part / "image_list.txt").write_text("".join(ln + "\n" for ln in lines))
