"""`bobkit verify` and `bobkit results import/export` as a user types them: exit codes, JUnit, bad files.

Most tests run the CLI in-process against the tiny catalog only (the built-in manifests are swapped out);
a few run `python -m bobkit` against the real built-in manifests.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bobkit.resultsio import read_results, write_results
from tests.conftest import run_cli
from tests.test_verify_catalog import PUBLISHED_MRR, record, tiny_catalog, write_run, write_tiny_manifests


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    root = write_tiny_manifests(tmp_path / "manifests")
    import bobkit.manifest.loader as loader

    monkeypatch.setattr(loader, "builtin_manifest_dir", lambda: root)
    monkeypatch.delenv("BOBKIT_MANIFESTS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bobkit(capsys, *args: str) -> tuple[int, str, str]:
    from bobkit.cli_app import main

    argv = sys.argv
    sys.argv = ["bobkit", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def write_mrr_runs(runs: Path, overrides: dict | None = None) -> None:
    for (b, d), v in {**PUBLISHED_MRR, **(overrides or {})}.items():
        write_run(runs, record(b, d, "retr", {"mrr": v}))


def test_verify_exit_codes_follow_fail_on(tiny, capsys):
    runs = tiny / "runs"
    write_mrr_runs(runs, {("cnx_b", "ret_b"): 0.459})  # a warn
    code, out, _ = bobkit(capsys, "verify", str(runs), "-e", "retrieval")
    assert code == 0 and "warn" in out and "train-retrieval" in out and "tolerances" in out
    code, _, _ = bobkit(capsys, "verify", str(runs), "-e", "retrieval", "--fail-on", "warn")
    assert code == 1
    write_mrr_runs(runs, {("vit_s", "ret_a"): 0.95})
    code, out, _ = bobkit(capsys, "verify", str(runs), "-e", "retrieval", "--json")
    data = json.loads(out)
    assert code == 1 and data["holds"] is False and data["counts"]["fail"] >= 1
    assert all("rule" in v and "source" in v and "confidence" in v for v in data["verdicts"])


def test_old_layout_runs_are_verified_like_shared_ones(tiny, capsys):
    """Runs folders of the old layout (runs/<experiment>/<run id>/) are still read, under their folder's experiment."""
    shared, old = tiny / "runs", tiny / "old-runs"
    write_mrr_runs(shared, {("cnx_b", "ret_b"): 0.459})
    for (b, d), v in {**PUBLISHED_MRR, ("cnx_b", "ret_b"): 0.459}.items():
        write_run(old, record(b, d, "retr", {"mrr": v}), old_layout=True)
    assert (old / "retrieval").is_dir() and not (old / "experiments").exists()
    verdicts = {}
    for runs in (shared, old):
        code, out, _ = bobkit(capsys, "verify", str(runs), "-e", "retrieval", "--json")
        data = json.loads(out)
        verdicts[runs.name] = (code, data["counts"])
    assert verdicts["runs"] == verdicts["old-runs"] and verdicts["runs"][1]["warn"] >= 1


def test_verify_missing_level_and_default_runs_folder(tiny, capsys):
    code, out, _ = bobkit(capsys, "verify", "--fail-on", "missing")
    assert code == 1 and "no runs folder" in out
    code, _, _ = bobkit(capsys, "verify")
    assert code == 0


def test_verify_bad_input_exits_2(tiny, capsys):
    code, _, err = bobkit(capsys, "verify", str(tiny / "nope"))
    assert code == 2 and "runs folder not found" in err
    code, _, err = bobkit(capsys, "verify", "-e", "nope")
    assert code == 2 and "unknown experiment 'nope'" in err
    code, _, _ = bobkit(capsys, "verify", "--fail-on", "often")
    assert code == 2


def test_verify_writes_junit(tiny, capsys):
    runs = tiny / "runs"
    write_mrr_runs(runs, {("vit_s", "ret_a"): 0.95})
    junit = tiny / "out" / "verify.xml"
    code, _, _ = bobkit(capsys, "verify", str(runs), "--junit", str(junit), "--json")
    root = ET.parse(junit).getroot()
    assert code == 1
    cases = root.findall(".//testcase")
    assert len(cases) == 20 and root.find(".//failure") is not None
    assert any(c.get("name") == "vit_s/ret_a/mrr [train]" for c in cases)


def test_published_only(tiny, capsys):
    code, out, _ = bobkit(capsys, "verify", "--published-only", "--json")
    data = json.loads(out)
    assert code == 0 and data["counts"]["pass"] == 18
    (tiny / "manifests" / "published" / "odd.csv").write_text(
        "experiment,backbone,dataset,metric,value,unit,source,confidence\nretrieval,vit_s,ret_a,map,7,fraction,x,quoted\n")
    code, out, _ = bobkit(capsys, "verify", "--published-only", "--json")
    assert code == 1 and any("out of range" in v["detail"] for v in json.loads(out)["verdicts"])
    code, out, _ = bobkit(capsys, "verify", "--published-only")
    assert code == 1 and "1 fail" in out
    code, _, err = bobkit(capsys, "verify", "--published-only", "runs")
    assert code == 2 and "drop RUNS_DIR" in err


def authors_wide_csv(path: Path, scale: float = 1.0) -> Path:
    """A pivot like the authors' notebook output: a pt_arch column of aliases, one column per dataset name."""
    lines = ["# a comment line, as in the authors' file", "pt_arch,RetA,RetB"]
    for b in ("vit_s", "vit_b", "swin_t", "cnx_b", "rn50"):
        lines.append(f"alias-{b},{PUBLISHED_MRR[(b, 'ret_a')] * scale},{PUBLISHED_MRR[(b, 'ret_b')] * scale}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_verify_a_wide_pivot_from_anywhere(tiny, capsys):
    csv_path = authors_wide_csv(tiny / "pivot.csv")
    code, out, _ = bobkit(capsys, "verify", "--results", str(csv_path), "-e", "retrieval", "--json")
    data = json.loads(out)
    assert code == 0 and data["counts"]["pass"] == 13 and data["counts"]["missing"] == 0
    assert any("wide over datasets" in n for n in data["notes"])
    pct = authors_wide_csv(tiny / "pct.csv", scale=100)
    code, out, _ = bobkit(capsys, "verify", "--results", str(pct), "-e", "retrieval", "--json")
    assert code == 0 and any("percentages" in n for n in json.loads(out)["notes"])


def test_map_renames_columns(tiny, capsys):
    path = tiny / "other.csv"
    path.write_text("net,set,score\nvit_s,ret_a,0.5\n")
    code, _, err = bobkit(capsys, "verify", "--results", str(path))
    assert code == 2 and "other.csv" in err
    code, out, _ = bobkit(capsys, "verify", "--results", str(path), "--map", "net=backbone", "--map", "set=dataset",
                          "--map", "score=mrr", "-e", "retrieval", "--json")
    data = json.loads(out)
    assert code == 0 and one_status(data, "retrieval/vit_s/ret_a/mrr") == "pass"


def one_status(data: dict, key: str) -> str:
    for v in data["verdicts"]:
        if f"{v['experiment']}/{v['backbone']}/{v['dataset']}/{v['metric']}" == key:
            return v["status"]
    raise AssertionError(key)


@pytest.mark.parametrize("content, needles", [
    ("backbone,dataset,metric,value\nvit_s,ret_a,mrr,abc\n", ["row 2", "column 'value'", "'abc' is not a number"]),
    ("backbone,dataset,metric,value\nvit_s,ret_a,mrr,0.5\nnobody,ret_a,mrr,0.5\n",
     ["row 3", "column 'backbone'", "unknown backbone 'nobody'"]),
    ("pt_arch,RetA,Mystery\nvit_s,0.5,0.4\n", ["column 'Mystery'", "--map Mystery=DATASET_ID"]),
    ("backbone,dataset,metric,value\nvit_s,ret_a,mrr\n", ["row 2", "3 cells but the header has 4"]),
    ("backbone,dataset,metric,value\nvit_s,ret_a,mrr,0.5\nvit_s,ret_a,mrr,0.6\n", ["row 3", "duplicate value"]),
    ("backbone,dataset,metric,value\nvit_s,atlantis,mrr,0.5\n", ["row 2", "unknown dataset 'atlantis'"]),
    ("", ["empty"]),
])
def test_bad_csvs_name_file_row_and_column(tiny, capsys, content, needles):
    path = tiny / "bad.csv"
    path.write_text(content)
    code, _, err = bobkit(capsys, "verify", "--results", str(path), "-e", "retrieval")
    err = " ".join(err.split())
    assert code == 2 and "bad.csv" in err, err
    for needle in needles:
        assert needle in err, err


def test_results_export_import_round_trip(tiny, capsys):
    runs = tiny / "runs"
    write_mrr_runs(runs)
    write_run(runs, record("vit_s", "ret_a", "retr", {"mrr": 0.1}, smoke=True, run_id="smoke1"))
    for suffix in ("csv", "parquet", "json"):
        out = tiny / f"export.{suffix}"
        code, text, _ = bobkit(capsys, "results", "export", str(runs), "-o", str(out))
        assert code == 0 and out.stat().st_size > 0 and "11 values from 11 runs" in text
        again = tiny / f"again.{suffix}"
        code, text, _ = bobkit(capsys, "results", "import", str(out), "-o", str(again), "--json")
        assert code == 0 and json.loads(text)["values"] == 11
    code, _, _ = bobkit(capsys, "results", "export", str(runs), "-o", str(tiny / "x.csv"), "--no-smoke")
    assert code == 0 and len((tiny / "x.csv").read_text().splitlines()) == 11
    code, _, err = bobkit(capsys, "results", "export", str(runs), "-o", str(tiny / "x.xlsx"))
    assert code == 2 and ".xlsx" in err


def test_read_results_keeps_runs_apart_and_matches_finished_results(tmp_path):
    cat = tiny_catalog(tmp_path)
    recs = [record("vit_s", "cls_a", "ft", {"top1": 0.5, "top5": 0.9}, experiment="rank", lr=0.1, seed=s)
            for s in (0, 1)]
    path = tmp_path / "r.parquet"
    assert write_results(recs, path) == 4
    back, notes = read_results(cat, path)
    assert len(back) == 2 and {r["seed"] for r in back} == {0, 1}
    assert all(r["metrics"] == {"top1": 0.5, "top5": 0.9} and r["lr"] == 0.1 for r in back)
    assert "read as long" in notes[0]


def test_real_manifests_published_only_and_help_without_torch():
    proc = run_cli("verify", "--published-only", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["fail"] == 0
    probe = ("import sys; from bobkit.cli_app import main; sys.argv=['bobkit','verify','--published-only','--json'];\n"
             "import io, contextlib\n"
             "try:\n  main()\nexcept SystemExit: pass\n"
             "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'\n")
    import subprocess

    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_listing_shows_problems_and_counts_the_rest(tiny, capsys):
    runs = tiny / "runs"
    write_mrr_runs(runs, {("cnx_b", "ret_b"): 0.459})  # one warn, the other cells pass
    code, out, _ = bobkit(capsys, "verify", str(runs), "-e", "retrieval")
    lines = out.splitlines()
    assert code == 0
    assert any(ln.startswith("warn") and "retrieval/cnx_b/ret_b/mrr" in ln for ln in lines)
    assert not any(ln.startswith("pass ") and "[train]" in ln for ln in lines)  # counted, not listed
    assert any(ln.startswith("pass ") and "[rank]" in ln for ln in lines)  # rankings are always listed
    assert any("not listed" in ln and "--all" in ln for ln in lines)
    assert any(ln.strip().startswith("retrieval:") and "pass" in ln for ln in lines)
    code, out, _ = bobkit(capsys, "verify", str(runs), "-e", "retrieval", "--all")
    listed = [ln for ln in out.splitlines() if ln.startswith("pass ") and "[train]" in ln]
    data = json.loads(bobkit(capsys, "verify", str(runs), "-e", "retrieval", "--json")[1])
    n_pass = sum(1 for v in data["verdicts"] if v["status"] == "pass" and v["tier"] == "train")
    assert code == 0 and n_pass > 0 and len(listed) == n_pass and "not listed" not in out
