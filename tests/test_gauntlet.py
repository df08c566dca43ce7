"""bobkit gauntlet: a user's backbone described, checked, planned like the paper's, run, and ranked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bobkit.errors import BadInput
from tests.conftest import run_cli

FIXTURE = "tests.fixtures.user_backbone"


def backbone_yaml(bid: str, function: str, tasks: str = "[classification, ood_classification, retrieval]",
                  extra: str = "") -> str:
    return f"""  - id: {bid}
    name: {bid}
    source: tests/fixtures/user_backbone.py
    confidence: bobkit
    architecture: tiny CNN
    family: custom
    timm_model: entry
    entry: {FIXTURE}:{function}
    params_m: 0.003
    method: none
    kind: supervised
    pretrain_data: none
    weights: {{format: python}}
    resolution: 32
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
    tasks: {tasks}
{extra}"""


@pytest.fixture
def user_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text("backbones:\n" + backbone_yaml("tiny_user", "build_backbone")
                    + backbone_yaml("tiny_peer", "build_backbone", "[classification, retrieval]",
                                    "    timm_kwargs: {width: 8}\n"))
    return path


@pytest.fixture
def catalog(user_manifest):
    from bobkit.manifest.loader import load_catalog

    return load_catalog([user_manifest])


# ----------------------------------------------------------------------------- init

def test_init_measures_and_writes_a_valid_manifest(tmp_path, monkeypatch):
    from bobkit.gauntlet_init import draft_entry, measure, write_manifest
    from bobkit.manifest.loader import load_catalog

    raw = draft_entry("pyramid", entry=f"{FIXTURE}:build_multiscale", timm_arch=None, checkpoint=None, hub_id=None)
    filled = measure(raw)
    assert "detection" in filled["tasks"] and filled["params_m"] > 0
    path = write_manifest(filled, tmp_path / "pyramid.yaml")
    entry = load_catalog([path]).backbones["pyramid"]
    assert entry.family == "custom" and entry.entry == f"{FIXTURE}:build_multiscale"
    assert "EDIT" in path.read_text()
    with pytest.raises(BadInput, match="exists"):
        write_manifest(filled, path)
    plain = measure(draft_entry("plain", entry=f"{FIXTURE}:build_backbone", timm_arch=None, checkpoint=None,
                                hub_id=None))
    assert "detection" not in plain["tasks"] and "no detection" in plain["note"]


def test_init_timm_checkpoint(tmp_path):
    import timm
    import torch

    from bobkit.backbones import build
    from bobkit.gauntlet_init import draft_entry, measure, write_manifest
    from bobkit.manifest.loader import load_catalog

    ckpt = tmp_path / "mine.pt"
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    torch.save({"state_dict": model.state_dict()}, ckpt)
    filled = measure(draft_entry("my_r18", entry=None, timm_arch="resnet18", checkpoint=str(ckpt), hub_id=None))
    assert filled["family"] == "resnet" and filled["weights"]["format"] == "checkpoint"
    assert filled["params_m"] == pytest.approx(11.18, abs=0.05)
    entry = load_catalog([write_manifest(filled, tmp_path / "r18.yaml")]).backbones["my_r18"]
    built = build(entry, pretrained=True)
    assert torch.equal(built.model.conv1.weight, model.conv1.weight)


@pytest.mark.parametrize("kwargs,problem", [
    ({"entry": None, "timm_arch": None}, "exactly one of"),
    ({"entry": "pkg.mod:fn", "timm_arch": "resnet18"}, "exactly one of"),
    ({"entry": "no_colon", "timm_arch": None}, "package.module:function"),
    ({"entry": None, "timm_arch": "resnet_nope"}, "no such architecture"),
    ({"entry": None, "timm_arch": "efficientnet_b0"}, "use --entry"),
])
def test_init_refuses_bad_arguments(kwargs, problem):
    from bobkit.gauntlet_init import draft_entry

    with pytest.raises(BadInput, match=problem):
        draft_entry("x", checkpoint=None, hub_id=None, **kwargs)


# ----------------------------------------------------------------------------- planning

def test_budgets_plan_the_papers_runs(catalog):
    from bobkit.gauntlet import build_gauntlet, plan_runs

    quick = build_gauntlet(catalog, "tiny_user", budget="quick")
    recipes = {g.recipe for g in quick.experiment.grid}
    assert recipes == {"linear_probe", "retrieval_frozen", "retrieval_cub200", "retrieval_first50", "retrieval_inat"}
    assert any(x.startswith("finetune") for x in quick.left_out)
    assert any("ood_classification" in x for x in quick.left_out)
    assert {s.id for s in quick.experiment.table.settings} >= {"cls_imagenet_lp", "ret_cub200", "ret_copydays"}
    assert all(s.gpus == 1 for s in plan_runs(quick))  # one GPU; the runner accumulates to the recipe's batch
    full = build_gauntlet(catalog, "tiny_user", budget="full")
    specs = plan_runs(full)
    table2 = catalog.experiments["table2"]
    ft = next(g for g in table2.grid if g.recipe == "finetune")
    assert {s.dataset for s in specs if s.recipe == "finetune"} == set(ft.datasets)
    ood = [s for s in specs if s.recipe == "ood_eval"]
    assert ood and all(s.depends_on for s in ood)  # the fine-tune it evaluates is planned first
    assert not full.left_out and all(s.backbone == "tiny_user" for s in specs)
    smoke = build_gauntlet(catalog, "tiny_user", budget="smoke", tasks=["classification", "retrieval"])
    assert smoke.peers == list(catalog.experiments["table3"].smoke.backbones)
    specs = plan_runs(smoke)
    assert all(s.smoke and s.dataset in ("imagenet", "cub200") for s in specs)
    assert {s.backbone for s in specs} == {"tiny_user", *smoke.peers}
    with pytest.raises(BadInput, match="does not list detection"):
        build_gauntlet(catalog, "tiny_user", tasks=["detection"], budget="full")
    with pytest.raises(BadInput, match="leaves no run"):
        build_gauntlet(catalog, "tiny_user", tasks=["ood_classification"], budget="quick")


def test_ranked_among_published_values(catalog):
    """Runs of the new backbone rank among the 33 published retrieval backbones; a published value of a paper
    backbone wins over its own run; smoke runs never mix with real ones."""
    from bobkit.gauntlet import build_gauntlet, rank

    g = build_gauntlet(catalog, "tiny_user", tasks=["retrieval"], budget="quick")
    datasets = {d for grid in g.experiment.grid for d in grid.datasets}
    recipe_of = {d: grid.recipe for grid in g.experiment.grid for d in grid.datasets}

    def row(backbone, dataset, mrr, smoke=False, exp=None):
        return {"run_id": f"{backbone}-{dataset}-{smoke}", "experiment": exp or g.id, "backbone": backbone,
                "dataset": dataset, "recipe": recipe_of[dataset], "lr": 0.0, "seed": 0, "smoke": smoke,
                "metrics": {"mrr": mrr}}

    rows = [row("tiny_user", d, 0.99) for d in datasets]
    rows += [row("resnet50", "cub200", 0.0, exp="retrieval"), row("tiny_user", "cub200", 0.0, smoke=True)]
    used, table, st = rank(g, rows)
    assert st.overall == (1, 34, pytest.approx(st.overall[2])) and st.tasks["retrieval"][0] == 1
    assert not [r for r in used if r["backbone"] == "resnet50" and not r.get("published")]
    assert not [r for r in used if r.get("smoke")]
    low = [row("tiny_user", d, 0.0) for d in datasets]
    _, _, st_low = rank(g, low)
    assert st_low.overall[0] == 34


# ----------------------------------------------------------------------------- bad plug-ins

BAD = [
    ("no_such_module", "tests.fixtures.no_such_module:build", "classification", "cannot import 'tests.fixtures.no_such_module'"),
    ("missing_function", f"{FIXTURE}:build_nothing", "classification", "has no function 'build_nothing'"),
    ("wrong_shape", f"{FIXTURE}:build_wrong_shape", "classification", "returns (1, 1024, 3)"),
    ("bad_head", f"{FIXTURE}:build_bad_head", "retrieval", "pooled features have shape (2, 32, 2, 2)"),
    ("no_pyramid", f"{FIXTURE}:build_backbone", "detection", "cannot run detection"),
]


@pytest.mark.parametrize("bid,entry,tasks,problem", BAD, ids=[b[0] for b in BAD])
def test_bad_plugins_get_one_clear_line(tmp_path, bid, entry, tasks, problem):
    module, _, function = entry.partition(":")
    text = backbone_yaml(bid, function, "[classification, detection, retrieval]").replace(
        f"{FIXTURE}:{function}", entry)
    (tmp_path / "bad.yaml").write_text("backbones:\n" + text)
    r = run_cli("gauntlet", bid, "-m", str(tmp_path / "bad.yaml"), "--budget", "smoke", "--tasks", tasks,
                "--peers", "", "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and problem in r.stderr.replace("\n", " ")
    assert bid in r.stderr and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- end to end

def test_smoke_gauntlet_end_to_end(tmp_path, user_manifest):
    """The tiny user backbone and a tiny peer go through table3's smoke classification and retrieval runs
    for real (CPU, synthetic data), and the user's backbone appears in the ranking and the report page."""
    runs = tmp_path / "runs"
    r = run_cli("gauntlet", "tiny_user", "-m", str(user_manifest), "--budget", "smoke",
                "--tasks", "classification,retrieval", "--peers", "tiny_peer", "--runs-dir", str(runs),
                "--data-root", str(tmp_path / "data"), "--jobs", "2", "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["smoke"] and out["experiment"] == "gauntlet-tiny_user"
    assert {o["state"] for o in out["runs"]} == {"done"} and len(out["runs"]) == 10
    ranked = {e["backbone"]: e["rank"] for e in out["table"]["ranking"]["overall"]}
    assert set(ranked) == {"tiny_user", "tiny_peer"}
    st = out["standing"]
    assert st["overall"]["of"] == 2 and st["overall"]["rank"] == ranked["tiny_user"]
    assert set(st["tasks"]) == {"classification", "retrieval"}
    for o in out["runs"]:
        assert (Path(o["run_dir"]) / "metrics.json").is_file()
    md = Path(out["report"]["md"]).read_text()
    assert "| tiny_user |" in md and "Runs behind each number" in md and "NOT comparable" in md
    assert any(str(runs / o["run_id"]) in md for o in out["runs"])  # the run folders behind the numbers
    assert "<img" in Path(out["report"]["html"]).read_text()
    # a second call finds every run finished and runs nothing
    again = run_cli("gauntlet", "tiny_user", "-m", str(user_manifest), "--budget", "smoke",
                    "--tasks", "classification,retrieval", "--peers", "tiny_peer", "--runs-dir", str(runs),
                    "--data-root", str(tmp_path / "data"), "--json")
    assert {o["state"] for o in json.loads(again.stdout)["runs"]} == {"skipped"}
