"""Table 1 (the synopsis): measured rows, the 1 % parameter check, the renderer, and the commands
that print it (`bobkit show table1 --measure`, `bobkit reproduce table1 --smoke`)."""

from __future__ import annotations

import json

import pytest

from bobkit.manifest.loader import load_catalog
from bobkit.manifest.models import Backbone
from bobkit.synopsis import exit_code, measure_synopsis, mismatches, synopsis_table

CATALOG = load_catalog()


def test_rows_measure_what_the_manifest_states():
    rows = measure_synopsis(CATALOG, ["resnet50", "vit_small_in1k", "clip_rn50"], progress=False)
    by_id = {r["backbone"]: r for r in rows}
    r50 = by_id["resnet50"]
    assert r50["params_ok"] and abs(r50["params_measured_m"] - 23.5) < 0.1
    assert r50["feature_dims"] == [256, 512, 1024, 2048] and r50["strides"] == [4, 8, 16, 32]
    assert r50["method"] == "supervised" and r50["pretrain_data"] == "ImageNet-1k" and not r50["plain_vit"]
    vit = by_id["vit_small_in1k"]
    assert vit["plain_vit"] and vit["feature_dims"] == [384] and vit["strides"] == [16]
    assert by_id["clip_rn50"]["num_features"] == 1024 and by_id["clip_rn50"]["kind"] == "vision-language"
    assert mismatches(rows) == [] and exit_code(rows) == 0


def test_a_wrong_manifest_count_is_flagged():
    wrong = Backbone.model_validate({**CATALOG.backbones["resnet50"].model_dump(), "id": "r50_wrong", "params_m": 25.0})
    CATALOG.backbones["r50_wrong"] = wrong
    try:
        [row] = measure_synopsis(CATALOG, ["r50_wrong"], device="meta", progress=False)
    finally:
        del CATALOG.backbones["r50_wrong"]
    assert not row["params_ok"] and row["params_delta_pct"] < -5
    assert mismatches([row]) == [f"r50_wrong: measured {row['params_measured_m']} M, manifest 25.0 M "
                                 f"({row['params_delta_pct']:+.2f} %)"]
    assert exit_code([row]) == 1
    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(synopsis_table([row]))
    assert "✗" in console.export_text()


def test_missing_weights_become_an_error_row(tmp_path, monkeypatch):
    monkeypatch.setenv("BOBKIT_WEIGHTS", str(tmp_path))
    [row] = measure_synopsis(CATALOG, ["resnet50"], pretrained=True, offline=True, progress=False)
    assert "not in the cache" in row["error"] and exit_code([row]) == 3


def test_meta_rows_equal_real_rows():
    real = measure_synopsis(CATALOG, ["swinv2_tiny_w8"], progress=False)[0]
    meta = measure_synopsis(CATALOG, ["swinv2_tiny_w8"], device="meta", progress=False)[0]
    for key in ("params_measured_m", "feature_dims", "strides", "num_features"):
        assert real[key] == meta[key]


def test_show_measure_and_reproduce_smoke(cli):
    shown = cli("show", "convnext_tiny", "--measure", "--json")
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert row["backbone"] == "convnext_tiny" and row["params_ok"] and row["weights"] == "random init"
    refused = cli("show", "table2", "--measure")
    assert refused.returncode == 2 and "synopsis table" in refused.stderr
    plain = cli("show", "convnext_tiny")
    assert plain.returncode == 0 and "params_m" in plain.stdout


@pytest.mark.slow
def test_reproduce_table1_smoke_covers_every_backbone(cli):
    out = cli("reproduce", "table1", "--smoke", "--json", timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert {r["backbone"] for r in rows} == set(CATALOG.backbones)
    assert all(r["params_ok"] for r in rows)


def test_show_does_not_import_torch_without_measure():
    import subprocess
    import sys

    code = ("import sys; from bobkit.cli_app import app; import bobkit.commands; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['show', 'resnet50']); "
            "assert r.exit_code == 0, r.output; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
