"""The catalog cache: a second load reads the pickled copy; any change to its inputs is seen at once."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from bobkit.errors import BadInput
from bobkit.manifest import cache
from bobkit.manifest.loader import load_catalog


@pytest.fixture()
def manifests(mini_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BOBKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BOBKIT_CATALOG_CACHE", raising=False)
    return shutil.copytree(mini_dir, tmp_path / "m")


def copies(tmp_path):
    return sorted((tmp_path / "cache" / "catalog").glob("*.pickle"))


def test_second_load_comes_from_the_cache_and_equals_a_fresh_read(manifests, tmp_path, monkeypatch):
    first = load_catalog([manifests], builtin=False)
    assert len(copies(tmp_path)) == 1
    reads = []
    monkeypatch.setattr("bobkit.manifest.loader._read_catalog", lambda dirs: reads.append(dirs))
    second = load_catalog([manifests], builtin=False)
    assert reads == []  # nothing was parsed
    assert second.backbones == first.backbones and second.recipes == first.recipes
    assert second.resolved_hparams == first.resolved_hparams and second.published == first.published
    assert second.origin == first.origin


def test_an_edit_of_the_same_size_and_mtime_is_seen(manifests, tmp_path):
    path = manifests / "recipes.yaml"
    load_catalog([manifests], builtin=False)
    text = path.read_text()
    stat = path.stat()
    edited = text.replace("epochs: 10", "epochs: 20")
    assert edited != text and len(edited) == len(text)
    path.write_text(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: only the content differs
    assert load_catalog([manifests], builtin=False).resolved_hparams["ft_short"]["epochs"] == 20
    assert len(copies(tmp_path)) == 2


def test_a_broken_manifest_is_reported_even_after_a_good_one_was_cached(manifests):
    load_catalog([manifests], builtin=False)
    path = manifests / "backbones.yaml"
    data = yaml.safe_load(path.read_text())
    data["backbones"][0]["param_m"] = 3
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(BadInput, match="param_m"):
        load_catalog([manifests], builtin=False)


def test_a_corrupt_copy_is_ignored_and_replaced(manifests, tmp_path):
    load_catalog([manifests], builtin=False)
    (copy,) = copies(tmp_path)
    copy.write_bytes(b"not a pickle")
    assert set(load_catalog([manifests], builtin=False).backbones) == {"tiny_resnet", "tiny_vit"}
    assert copy.read_bytes() != b"not a pickle"


def test_switched_off_or_unwritable_cache_still_loads(manifests, tmp_path, monkeypatch):
    monkeypatch.setenv("BOBKIT_CATALOG_CACHE", "0")
    load_catalog([manifests], builtin=False)
    assert copies(tmp_path) == []
    monkeypatch.delenv("BOBKIT_CATALOG_CACHE")
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("BOBKIT_CACHE", str(blocker))
    assert set(load_catalog([manifests], builtin=False).backbones) == {"tiny_resnet", "tiny_vit"}


def test_only_the_newest_copies_are_kept(manifests, tmp_path):
    path = manifests / "recipes.yaml"
    for i in range(cache.KEEP + 3):
        path.write_text(path.read_text() + f"\n# edit {i}\n")
        load_catalog([manifests], builtin=False)
    assert len(copies(tmp_path)) == cache.KEEP
