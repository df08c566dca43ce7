"""The loader: valid manifests load, every broken one gives one clean ManifestError naming where."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bobkit.errors import BadInput
from bobkit.manifest.loader import ManifestError, load_catalog


def copy_mini(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_yaml(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def test_mini_loads(mini_catalog):
    assert set(mini_catalog.backbones) == {"tiny_resnet", "tiny_vit"}
    assert mini_catalog.resolved_hparams["ft_short"]["epochs"] == 10
    assert mini_catalog.resolved_hparams["ft_short"]["lr"] == 1e-3  # inherited from base
    assert len(mini_catalog.published) == 1


def test_typo_field_is_an_error(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    edit_yaml(d / "backbones.yaml", lambda data: data["backbones"][0].update(param_m=3))
    with pytest.raises(ManifestError) as exc:
        load_catalog([d], builtin=False)
    msg = str(exc.value)
    assert "backbones.yaml" in msg and "tiny_resnet" in msg and "param_m" in msg


def test_bad_hparam_names_recipe_and_field(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    edit_yaml(d / "recipes.yaml", lambda data: data["recipes"][0]["hparams"].update(optimizer="adam-ish"))
    with pytest.raises(ManifestError) as exc:
        load_catalog([d], builtin=False)
    assert "recipe 'ft'" in str(exc.value) and "hparams.optimizer" in str(exc.value)


def test_unknown_reference_suggests_close_ids(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    edit_yaml(d / "experiments.yaml", lambda data: data["experiments"][0]["grid"][0].update(backbones=["tiny_resnt"]))
    with pytest.raises(ManifestError) as exc:
        load_catalog([d], builtin=False)
    assert "tiny_resnet" in str(exc.value) and "grid.0.backbones" in str(exc.value)


def test_duplicate_id_across_folders(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    with pytest.raises(ManifestError, match="defined twice"):
        load_catalog([mini_dir, d], builtin=False)


def test_base_cycle_is_reported(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    edit_yaml(d / "recipes.yaml", lambda data: data["recipes"][0].update(base="ft_short"))
    with pytest.raises(ManifestError, match="cycle"):
        load_catalog([d], builtin=False)


def test_task_mismatch_between_recipe_and_dataset(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    edit_yaml(d / "experiments.yaml", lambda data: data["experiments"][0]["grid"][0].update(datasets=["toy_retrieval"]))
    with pytest.raises(ManifestError, match="retrieval dataset"):
        load_catalog([d], builtin=False)


def test_published_csv_bad_value(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    p = d / "published" / "toy.csv"
    p.write_text(p.read_text().replace("0.5,fraction", "abc,fraction"))
    with pytest.raises(ManifestError) as exc:
        load_catalog([d], builtin=False)
    assert "toy.csv" in str(exc.value) and "row 2" in str(exc.value) and "value" in str(exc.value)


def test_invalid_yaml_names_line(mini_dir, tmp_path):
    d = copy_mini(mini_dir, tmp_path / "m")
    (d / "broken.yaml").write_text("backbones:\n  - id: [unclosed\n")
    with pytest.raises(ManifestError, match=r"broken.yaml: not valid YAML line \d+"):
        load_catalog([d], builtin=False)


def test_missing_folder(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_catalog([tmp_path / "nope"], builtin=False)
