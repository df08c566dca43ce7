"""Retrieval readers: the authors' query/database rules, on synthetic data in the real layouts."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest

from bobkit.data.retrieval import (
    copydays_block,
    read_retrieval_set,
    split_class_folders,
    write_class_folders,
    write_copydays,
    write_gldv2,
    write_revisitop,
)
from bobkit.errors import BadInput, EnvironmentMissing


def _spec(dataset_id: str, layout: str) -> dict:
    return {"id": dataset_id, "layout": layout, "layout_doc": f"{dataset_id} layout", "urls": ["https://example.org/x"]}


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_class_folder_split_rule(tmp_path):
    # class a: 7 images -> keep first 5 -> floor(1.0)=1 query; class b: 12 -> 5 -> 1; class c: 3 -> 0 queries
    for cls, n in (("a", 7), ("b", 12), ("c", 3)):
        for i in range(n):
            _touch(tmp_path / cls / f"img{i:02d}.jpg")
    _touch(tmp_path / "a" / "boxes.txt")
    queries, database, truths = split_class_folders(tmp_path, 5, 0.2)
    assert [q.relative_to(tmp_path).as_posix() for q in queries] == ["a/img00.jpg", "b/img00.jpg"]
    assert [d.relative_to(tmp_path).as_posix() for d in database[:4]] == [f"a/img0{i}.jpg" for i in range(1, 5)]
    assert len(database) == 4 + 4 + 3  # class c has no query but stays in the database
    assert truths[0].ok.tolist() == [0, 1, 2, 3] and truths[1].ok.tolist() == [4, 5, 6, 7]
    # all images, 20 %: class b has 12 -> floor(2.4) = 2 queries
    queries, database, truths = split_class_folders(tmp_path, None, 0.2)
    assert len(queries) == 1 + 2 and len(database) == 6 + 10 + 3
    assert truths[-1].ok.tolist() == list(range(6, 16))


@pytest.mark.parametrize("dataset_id,subdir,n_query,n_db", [
    ("cub200", "CUB_200_2011/images", 8, 32),
    ("inat_retrieval", "", 4, 16),      # first 5 of 6 per class: 1 query + 4 database
    ("objectnet", "objectnet-1.0/images", 8, 32),
    ("instre", "INSTRE-S1", 8, 32),
])
def test_class_folder_datasets(tmp_path, dataset_id, subdir, n_query, n_db):
    write_class_folders(tmp_path, _spec(dataset_id, "class_folders"))
    assert (tmp_path / subdir).is_dir()
    per_class = 5 if dataset_id == "inat_retrieval" else None
    rset = read_retrieval_set(_spec(dataset_id, "class_folders"), tmp_path, images_per_class=per_class)
    assert (len(rset.queries), len(rset.database)) == (n_query, n_db)
    for q, t in zip(rset.queries, rset.truths):
        assert t.ok.size > 0
        assert {rset.database[i].parent.name for i in t.ok} == {q.parent.name}
        assert sum(d.parent.name == q.parent.name for d in rset.database) == t.ok.size
    assert all(p.suffix in (".jpg", ".png") for p in rset.queries + rset.database)


def test_class_folders_hparams_override_the_dataset_default(tmp_path):
    write_class_folders(tmp_path, _spec("inat_retrieval", "class_folders"))
    rset = read_retrieval_set(_spec("inat_retrieval", "class_folders"), tmp_path, images_per_class=None)
    assert len(rset.queries) + len(rset.database) == 4 * 5  # the dataset's own default: first 5
    rset = read_retrieval_set(_spec("inat_retrieval", "class_folders"), tmp_path, images_per_class=6,
                              queries_fraction=0.5)
    assert (len(rset.queries), len(rset.database)) == (12, 12)


def test_class_folders_missing_layout_is_named(tmp_path):
    spec = _spec("cub200", "class_folders")
    with pytest.raises(EnvironmentMissing, match="is missing .*the dataset folder.*https://example.org/x"):
        read_retrieval_set(spec, tmp_path / "nope")
    (tmp_path / "CUB_200_2011" / "images").mkdir(parents=True)
    with pytest.raises(EnvironmentMissing, match="holds no class folders with images .*CUB_200_2011/images"):
        read_retrieval_set(spec, tmp_path)
    with pytest.raises(BadInput, match="no retrieval reader for layout 'zip'"):
        read_retrieval_set(_spec("cub200", "zip"), tmp_path)


def test_revisitop(tmp_path):
    write_revisitop(tmp_path, _spec("roxford5k", "revisitop"))
    rset = read_retrieval_set(_spec("roxford5k", "revisitop"), tmp_path)
    assert rset.thumbnail == 224
    assert len(rset.queries) == 4 and len(rset.database) == 24
    t = rset.truths[1]
    assert t.ok.tolist() == [6, 7, 8, 9, 10] and t.junk.tolist() == [11]  # easy + hard, junk
    assert rset.queries[1].name == "landmark1_query.jpg"
    (tmp_path / "jpg" / "landmark2_000003.jpg").unlink()
    with pytest.raises(EnvironmentMissing, match="landmark2_000003.jpg is missing \\(1 of the 28 images"):
        read_retrieval_set(_spec("roxford5k", "revisitop"), tmp_path)
    (tmp_path / "gnd_roxford5k.pkl").unlink()
    with pytest.raises(EnvironmentMissing, match="gnd_roxford5k.pkl is missing"):
        read_retrieval_set(_spec("roxford5k", "revisitop"), tmp_path)


def test_revisitop_bad_pickle_is_named(tmp_path):
    (tmp_path / "jpg").mkdir()
    with open(tmp_path / "gnd_rparis6k.pkl", "wb") as fh:
        pickle.dump({"imlist": []}, fh)
    with pytest.raises(EnvironmentMissing, match="has no 'qimlist' entry"):
        read_retrieval_set(_spec("rparis6k", "revisitop"), tmp_path)


def test_gldv2_flat_layout(tmp_path):
    write_gldv2(tmp_path, _spec("gldv2_retrieval", "gldv2_retrieval"))
    rset = read_retrieval_set(_spec("gldv2_retrieval", "gldv2_retrieval"), tmp_path)
    with open(tmp_path / "retrieval_solution_v2.1.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["images"] != "None"]
    assert len(rset.queries) == len(rows) == 8 and len(rset.database) == 16
    by_id = {r["id"]: r["images"].split() for r in rows}
    for q, t in zip(rset.queries, rset.truths):
        assert sorted(rset.database[i].stem for i in t.ok) == sorted(by_id[q.stem])


def test_gldv2_release_layout_and_missing_positive(tmp_path):
    write_gldv2(tmp_path, _spec("gldv2_retrieval", "gldv2_retrieval"))
    # the release nests images as <a>/<b>/<c>/<id>.jpg under test/ and index/
    for flat, nested in (("query", "test"), ("database", "index")):
        for p in sorted((tmp_path / flat).iterdir()):
            dest = tmp_path / nested / p.stem[0] / p.stem[1] / p.stem[2] / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            p.rename(dest)
        (tmp_path / flat).rmdir()
    rset = read_retrieval_set(_spec("gldv2_retrieval", "gldv2_retrieval"), tmp_path)
    assert len(rset.queries) == 8 and len(rset.database) == 16
    victim = rset.database[int(rset.truths[0].ok[0])]
    victim.unlink()
    with pytest.raises(EnvironmentMissing, match=f"{victim.stem}.jpg is missing \\(a positive of query"):
        read_retrieval_set(_spec("gldv2_retrieval", "gldv2_retrieval"), tmp_path)


def test_copydays_release_layout(tmp_path):
    write_copydays(tmp_path, _spec("copydays", "copydays"))
    rset = read_retrieval_set(_spec("copydays", "copydays"), tmp_path)
    assert [p.name for p in rset.database] == ["200000.jpg", "200100.jpg", "200200.jpg", "200300.jpg"]
    assert len(rset.queries) == 4 * 4  # two strong copies, one jpeg, one crop per original
    for q, t in zip(rset.queries, rset.truths):
        assert t.ok.size == 1 and copydays_block(rset.database[int(t.ok[0])].name) == copydays_block(q.name)
    with pytest.raises(ValueError, match="6-digit"):
        copydays_block("strong/abc.jpg")


def test_copydays_authors_mapping_layout(tmp_path):
    (tmp_path / "jpg").mkdir()
    for name in ("200000.jpg", "200001.jpg", "200100.jpg", "200101.jpg", "200102.jpg"):
        _touch(tmp_path / "jpg" / name)
    mapping = {"200101.jpg": ["200100.jpg"], "200001.jpg": ["200000.jpg"], "200102.jpg": ["200100.jpg"]}
    with open(tmp_path / "qvmapping.p", "wb") as fh:
        pickle.dump(mapping, fh)
    rset = read_retrieval_set(_spec("copydays", "copydays"), tmp_path)
    assert [q.name for q in rset.queries] == ["200001.jpg", "200101.jpg", "200102.jpg"]
    assert [d.name for d in rset.database] == ["200000.jpg", "200100.jpg"]
    assert [t.ok.tolist() for t in rset.truths] == [[0], [1], [1]]


def test_copydays_without_originals_is_named(tmp_path):
    (tmp_path / "strong").mkdir(parents=True)
    with pytest.raises(EnvironmentMissing, match="original is missing"):
        read_retrieval_set(_spec("copydays", "copydays"), tmp_path)


def test_synthetic_writes_are_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for dest in (a, b):
        write_revisitop(dest, _spec("rparis6k", "revisitop"))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 4 * 7 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
