"""The gauntlet's report page: the backbone's row in the tables next to the published values, its point
in the Figure-1-style scatter, and the runs behind each number. Built from bobkit.report's pieces."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from bobkit.gauntlet import SMOKE_WARNING, Gauntlet, Standing


def build_page(g: Gauntlet, rows: list[dict[str, Any]], table, notes: list[str]):
    """A bobkit.report.ReportData whose 'published' column is the paper's values and 'reproduced' the runs."""
    from bobkit.report import ReportData, ShownCell
    from bobkit.tables import experiment_table
    from bobkit.verify import VerifyReport

    pub_rows = [r for r in rows if r.get("published")]
    run_rows = [r for r in rows if not r.get("published")]
    pub_t = experiment_table(g.catalog, g.id, pub_rows)
    run_t = experiment_table(g.catalog, g.id, run_rows)
    cells = {}
    for s in table.settings:
        for b in table.backbones:
            pc, rc = pub_t.cell(b, s.id), run_t.cell(b, s.id)
            pub = pc.value * 100 if pc and pc.value is not None else None
            rep = rc.value * 100 if rc and rc.value is not None else None
            if pub is not None or rep is not None:
                delta = rep - pub if pub is not None and rep is not None else None
                cells[(b, s.id)] = ShownCell(pub, rep, delta, "smoke" if rc is not None and rc.smoke else None)
    exp = g.experiment
    all_notes = ([SMOKE_WARNING] if g.smoke else []) + notes + [n for n in table.notes if "SMOKE" not in n]
    data = ReportData(exp.id, exp.title, exp.description, exp.source, "ranking", list(table.settings),
                      list(table.backbones), cells, pub_t, run_t, VerifyReport([], []), {}, table.ranking,
                      "published values and finished runs", [], list(dict.fromkeys(all_notes)))
    data.figures = figures(g, table)
    return data


def figures(g: Gauntlet, table) -> list:
    """Figure 1 of BoB: one task against another, every backbone a point; the new one labelled."""
    from bobkit.figures import task_scatter, zscore_vs_size
    from bobkit.report import Figure

    out = []
    if table.ranking is None:
        return out
    groups = list(table.ranking.group_ranks) or [s.id for s in table.settings]
    scores = {name: {e.backbone: table.ranking.score(e.backbone, name) for e in table.ranking.entries
                     if table.ranking.score(e.backbone, name) is not None} for name in groups}
    pairs = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1:]][:3]
    for a, b in pairs:
        common = [k for k in scores[a] if k in scores[b]]
        if g.backbone not in common or len(common) < 2:
            continue
        # task_scatter prints values x100 (percent); z-scores are passed /100 so the axes read as z
        fig = task_scatter(g.catalog, {k: scores[a][k] / 100 for k in common}, {k: scores[b][k] / 100 for k in common},
                           xlabel=f"{a} z-score", ylabel=f"{b} z-score", title=f"{b} vs {a}")
        ax = fig.axes[0]
        ax.annotate(g.backbone, (scores[a][g.backbone], scores[b][g.backbone]), xytext=(6, 6),
                    textcoords="offset points", fontsize=9, fontweight="bold", color="#cf222e")
        out.append(Figure(f"scatter_{a}_vs_{b}", f"{b} against {a} (task z-scores; Figure-1 style; marker size ∝ "
                                                 f"parameters); {g.backbone} labelled", fig))
    overall = {e.backbone: e.score for e in table.ranking.entries}
    if len(overall) >= 3:
        fig = zscore_vs_size(g.catalog, overall, attr="params_m", xlabel="parameters (millions)",
                             title=f"{g.id}: overall z-score vs parameters")
        b = g.catalog.backbones[g.backbone]
        fig.axes[0].annotate(g.backbone, (b.params_m, overall[g.backbone]), xytext=(6, 6), textcoords="offset points",
                             fontsize=9, fontweight="bold", color="#cf222e")
        out.append(Figure("zscore_vs_params", "overall z-score against parameters; the new backbone labelled", fig))
    return out


def runs_section(g: Gauntlet, rows: list[dict[str, Any]], table, runs_dir: Path) -> list[tuple[str, ...]]:
    """(setting, backbone, value %, part, source) for every number in the table: a published value or run folders."""
    from bobkit.results import RunDir

    folder_of = {r["run_id"]: r["run_dir"] for r in rows if r.get("run_dir")}
    out = []
    for (b, sid), c in sorted(table.cells.items(), key=lambda kv: (kv[0][0] != g.backbone, kv[0])):
        for part, sel in c.parts.items():
            published = all(r.startswith("published:") for r in sel.run_ids)
            where = "published (manifests/published)" if published else ", ".join(
                folder_of.get(r) or str(RunDir.of(runs_dir, r).path) for r in sel.run_ids)
            out.append((sid, b, f"{100 * sel.value:.1f}", part + (f" lr {sel.lr:g}" if sel.lr else ""), where))
    return out


def standing_lines(g: Gauntlet, st: Standing) -> list[str]:
    if st.overall is None:
        return [f"{g.backbone} has no finished run in this gauntlet yet: nothing to rank"]
    r, n, z = st.overall
    lines = [f"overall: rank {r} of {n} (z {z:+.2f})"]
    lines += [f"{task}: rank {r} of {n} (z {z:+.2f})" for task, (r, n, z) in st.tasks.items()]
    if st.missing_settings:
        lines.append(f"settings without a result for {g.backbone}: {', '.join(st.missing_settings)}")
    return lines


def write_page(g: Gauntlet, rows: list[dict[str, Any]], table, st: Standing, notes: list[str], runs_dir: Path,
               out_dir: Path) -> dict[str, str]:
    """report.md (figures under figures/) and report.html (figures embedded); returns their paths."""
    from bobkit.figures import png_bytes
    from bobkit.report import _atomic_bytes, render_html, render_markdown
    from bobkit.results import atomic_write_text

    data = build_page(g, rows, table, notes)
    pngs = {f.name: png_bytes(f.fig) for f in data.figures}
    paths = {}
    for name, blob in pngs.items():
        rel = f"figures/{g.id}_{name}.png"
        _atomic_bytes(Path(out_dir) / rel, blob)
        paths[name] = rel
    runs = runs_section(g, rows, table, runs_dir)
    where = ["## Where it stands", ""] + [f"- {line}" for line in standing_lines(g, st)] + [""]
    md = render_markdown(data, paths).split("\n", 1)
    md_runs = ["## Runs behind each number", "", "| setting | backbone | value (%) | part | source |",
               "|---|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in runs] + [""]
    md_left = (["## Left out by this budget", ""] + [f"- {x}" for x in g.left_out] + [""]) if g.left_out else []
    md_text = md[0] + "\n\n" + "\n".join(where + md_left) + "\n" + md[1] + "\n" + "\n".join(md_runs)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "report.md", md_text)
    paths_out = {"md": str(out_dir / "report.md")}
    e = html.escape
    extra = ("<h2>Where it stands</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in standing_lines(g, st)) + "</ul>"
             + (("<h2>Left out by this budget</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in g.left_out) + "</ul>")
                if g.left_out else "")
             + "<h2>Runs behind each number</h2><table><tr><th>setting</th><th>backbone</th><th>value (%)</th>"
               "<th>part</th><th>source</th></tr>"
             + "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in runs) + "</table>")
    page = render_html(data, pngs).replace("</body></html>", extra + "</body></html>")
    atomic_write_text(out_dir / "report.html", page)
    paths_out["html"] = str(out_dir / "report.html")
    return paths_out
