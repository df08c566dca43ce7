"""`bobkit report`: files produced and non-empty, figures with the expected number of points and bars."""

from __future__ import annotations

import re

import pytest

from bobkit.figures import bars_in, points_in
from bobkit.manifest.loader import load_catalog
from bobkit.report import build_report, write_report
from tests.test_verify_catalog import PUBLISHED_MRR, record, tiny_catalog
from tests.test_verify_cli import bobkit, tiny  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture()
def cat(tmp_path):
    return tiny_catalog(tmp_path)


def mrr_rows(shift: float = 0.001):
    return [record(b, d, "retr", {"mrr": v + shift}) for (b, d), v in PUBLISHED_MRR.items()]


def figures_by_name(data):
    return {f.name: f.fig for f in data.figures}


def test_figures_have_one_point_per_backbone(cat):
    data = build_report(cat, "retrieval", mrr_rows())
    figs = figures_by_name(data)
    assert set(figs) == {"scatter_ret_a_vs_ret_b", "zscore_vs_params", "zscore_vs_pretraining_data", "bars_ret_a",
                         "bars_ret_b"}
    assert points_in(figs["scatter_ret_a_vs_ret_b"]) == 5
    assert points_in(figs["zscore_vs_params"]) == 5 and points_in(figs["zscore_vs_pretraining_data"]) == 5
    assert bars_in(figs["bars_ret_a"]) == 10  # published and reproduced for five backbones
    legend = [t.get_text() for t in figs["zscore_vs_params"].axes[0].get_legend().get_texts()]
    assert any(t.startswith("ViTs: ρ = ") for t in legend)
    # scatter colours by pretraining kind: three kinds in the tiny catalog
    assert len(figs["scatter_ret_a_vs_ret_b"].axes[0].collections) == 3
    sizes = [s for c in figs["scatter_ret_a_vs_ret_b"].axes[0].collections for s in c.get_sizes()]
    assert max(sizes) > min(sizes)  # sized by parameters


def test_report_files_in_every_format(cat, tmp_path):
    data = build_report(cat, "retrieval", mrr_rows(shift=0.2))
    n_figs = len(data.figures)
    md = write_report(data, "md", tmp_path / "md")
    text = md.read_text()
    assert "| cnx_b |" in text and "✗" in text and "Tolerances" in text and "train-retrieval" in text
    pngs = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert len(pngs) == n_figs and all((md.parent / p).stat().st_size > 1000 for p in pngs)

    data = build_report(cat, "retrieval", mrr_rows(shift=0.2))
    page = write_report(data, "html", tmp_path / "html").read_text()
    assert page.count("data:image/png;base64,") == n_figs
    assert "class='fail'" in page and "<img" in page
    assert not re.search(r"src=['\"](?!data:)", page)  # self-contained: no external images
    assert not (tmp_path / "html" / "figures").exists()

    data = build_report(cat, "retrieval", mrr_rows(shift=0.2))
    tex = write_report(data, "latex", tmp_path / "tex").read_text()
    assert tex.startswith("\\documentclass") and "\\textcolor{red!80!black}" in tex and tex.rstrip().endswith(
        "\\end{document}")
    assert "\\includegraphics" in tex and "vit\\_s" in tex


def test_report_with_published_numbers_only(cat, tmp_path):
    data = build_report(cat, "retrieval", [])
    assert data.ranking_source == "published" and data.reproduced_table.cells == {}
    figs = figures_by_name(data)
    assert points_in(figs["scatter_ret_a_vs_ret_b"]) == 5 and bars_in(figs["bars_ret_b"]) == 5
    text = write_report(data, "md", tmp_path).read_text()
    assert "50.0 / – /" in text and "missing" in text


def test_ranking_report_shows_ranks_and_orderings(cat, tmp_path):
    order = ["cnx_b", "vit_b", "swin_t", "vit_s", "rn50"]
    rows = [record(b, "cls_a", "ft", {"top1": 0.9 - 0.05 * i}, experiment="rank", lr=0.001) for i, b in enumerate(order)]
    rows += [record(b, d, "retr", {"mrr": 0.7 - 0.05 * i}, experiment="rank") for i, b in enumerate(order)
             for d in ("ret_a", "ret_b")]
    data = build_report(cat, "rank", rows, figures=False)
    assert [e.backbone for e in data.ranking.entries] == order
    text = write_report(data, "md", tmp_path, figures=False).read_text()
    assert "| 1 | cnx_b |" in text and "## Orderings" in text and "overall (rank)" in text
    assert "| rank | backbone | overall z | published rank | Cls | Ret |" in text


def test_smoke_results_are_marked(cat, tmp_path):
    rows = [record(b, d, "retr", {"mrr": 0.01}, smoke=True) for (b, d) in PUBLISHED_MRR]
    data = build_report(cat, "retrieval", rows, figures=False)
    assert any("SMOKE" in n for n in data.notes)
    assert {c.status for c in data.cells.values()} == {"smoke"}


def test_report_cli(tiny, capsys):  # noqa: F811
    code, out, _ = bobkit(capsys, "report", "retrieval", "--format", "html", "--out", "rep")
    assert code == 0 and (tiny / "rep" / "retrieval.html").stat().st_size > 10_000
    code, _, err = bobkit(capsys, "report", "nope")
    assert code == 2 and "unknown experiment" in err


def test_builtin_retrieval_report_plots_the_authors_table():
    catalog = load_catalog()
    data = build_report(catalog, "retrieval", [])
    backbones = {p.backbone for p in catalog.published if p.experiment == "retrieval" and p.unit == "fraction"}
    figs = figures_by_name(data)
    first = data.settings[0].id
    assert bars_in(figs[f"bars_{first}"]) == len(backbones)
    scatter = next(f for n, f in figs.items() if n.startswith("scatter_"))
    assert points_in(scatter) == len(backbones)
    assert points_in(figs["zscore_vs_params"]) == len(backbones)
