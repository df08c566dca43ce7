"""The read-only CLI: JSON shapes other tools rely on, exit codes, one-line errors, no torch."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_list_and_show_json(mini_dir):
    r = run_cli("list", "backbones", "--json", "-m", str(mini_dir))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    ids = {row["id"] for row in rows}
    assert {"tiny_resnet", "tiny_vit"} <= ids
    assert {"params_m", "kind", "architecture"} <= set(rows[0])
    r = run_cli("show", "ft_short", "--json", "-m", str(mini_dir))
    assert json.loads(r.stdout)["resolved_hparams"]["lr"] == 1e-3


def test_plan_json_fields(mini_dir):
    r = run_cli("plan", "toy", "--json", "-m", str(mini_dir))
    assert r.returncode == 0, r.stderr
    specs = json.loads(r.stdout)
    for s in specs:
        assert {"id", "experiment", "backbone", "dataset", "task", "protocol", "image", "seed", "hparams"} <= set(s)


def test_unknown_id_exit_2_one_line(mini_dir):
    r = run_cli("show", "tiny_vt", "-m", str(mini_dir))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "tiny_vit" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_validate_broken_manifest(tmp_path, mini_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipes:\n  - id: x\n    title: y\n")
    r = run_cli("validate", str(bad))
    assert r.returncode == 2 and "bad.yaml" in r.stderr and "Traceback" not in r.stderr


def test_bad_arguments_exit_2():
    r = run_cli("list", "nonsense")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_schema_is_json_schema():
    r = run_cli("schema", "backbones")
    schema = json.loads(r.stdout)
    assert schema["properties"]["backbones"]["items"]["additionalProperties"] is False


def test_light_commands_do_not_import_torch(mini_dir):
    """--help, list, show, plan, explain (without --groups), validate and verify stay torch-free (fast start-up)."""
    probe = ("import sys, runpy; sys.argv = ['bobkit'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('bobkit', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "assert 'torch' not in sys.modules, 'torch was imported'\n"
             "print('TORCH-FREE')\n")
    import subprocess
    import sys

    for args in (["--help"], ["list", "backbones", "-m", str(mini_dir)], ["show", "tiny_vit", "-m", str(mini_dir)],
                 ["plan", "toy", "-m", str(mini_dir)], ["validate", str(mini_dir)], ["verify", "--help"],
                 ["explain", "toy", "-m", str(mini_dir)], ["show", "ft_short", "-b", "tiny_vit", "-m", str(mini_dir)]):
        r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert "TORCH-FREE" in r.stdout, (args, r.stdout[-500:], r.stderr[-500:])
