"""`bobkit report`: one experiment's published and reproduced numbers side by side, with figures.

The report works with published numbers alone (e.g. the authors' retrieval MRR table), with results
alone, or with both; deltas carry the verify verdict's colour. Markdown and LaTeX reference PNG files
under figures/; HTML is one self-contained file with the figures embedded as base64 PNGs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bobkit.manifest.models import Setting
from bobkit.ranking import Correlation, Ranking, size_correlations
from bobkit.results import atomic_write_text
from bobkit.tables import ExperimentTable, canonical_backbone, experiment_table, rank_cells, task_groups
from bobkit.verify import VerifyReport, Verdict, describe, to_pp, tolerance_text, verify

GLYPH = {"pass": "✓", "warn": "⚠", "fail": "✗", "missing": "·", "smoke": "~", "info": ""}
HTML_COLOUR = {"pass": "#1a7f37", "warn": "#b08800", "fail": "#cf222e", "missing": "#6e7781", "smoke": "#8250df",
               "info": "#0969da"}
LATEX_COLOUR = {"pass": "green!50!black", "warn": "orange!80!black", "fail": "red!80!black", "missing": "gray",
                "smoke": "violet", "info": "blue"}


@dataclass
class ShownCell:
    published: float | None  # pp
    reproduced: float | None  # pp
    delta: float | None
    status: str | None


@dataclass
class Figure:
    name: str
    caption: str
    fig: Any


@dataclass
class ReportData:
    experiment: str
    title: str
    description: str
    source: str
    kind: str
    settings: list[Setting]
    backbones: list[str]
    cells: dict[tuple[str, str], ShownCell]
    published_table: ExperimentTable
    reproduced_table: ExperimentTable
    verification: VerifyReport
    published_ranks: dict[str, dict[str, int]]
    ranking: Ranking | None
    ranking_source: str
    correlations: list[Correlation]
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def published_rows(catalog, experiment_id: str) -> list[dict[str, Any]]:
    """The experiment's published fractions/percentages as finished_results()-shaped records.

    A value published for a whole setting is given to each of its datasets, so the setting's mean is it.
    """
    exp = catalog.experiments[experiment_id]
    settings = {s.id: s for s in exp.table.settings}
    rows = []
    for pv in catalog.published:
        if pv.experiment != experiment_id or pv.unit not in ("fraction", "percent") or pv.tier == "info":
            continue
        datasets = list(settings[pv.dataset].datasets) if pv.dataset in settings else [pv.dataset]
        for d in datasets:
            rows.append({"run_id": f"published:{pv.backbone}:{d}", "experiment": experiment_id,
                         "backbone": canonical_backbone(catalog, pv.backbone), "dataset": d, "recipe": None,
                         "lr": None, "seed": 0, "smoke": False, "metrics": {pv.metric: to_pp(pv.value, pv.unit) / 100}})
    return rows


def _verdict_for(by_key: dict[tuple[str, str], Verdict], backbone: str, s: Setting) -> Verdict | None:
    v = by_key.get((backbone, s.id))
    if v is None and len(s.datasets) == 1:
        v = by_key.get((backbone, s.datasets[0]))
    return v


def build_report(catalog, experiment_id: str, rows: list[dict[str, Any]], *, notes: list[str] | None = None,
                 figures: bool = True) -> ReportData:
    exp = catalog.experiments[experiment_id]
    pub_table = experiment_table(catalog, experiment_id, published_rows(catalog, experiment_id))
    rep_table = experiment_table(catalog, experiment_id, rows)
    verification = verify(catalog, rows, experiments=[experiment_id])
    by_key = {(v.backbone, v.dataset): v for v in verification.verdicts if v.tier in ("eval", "train")}
    backbones = list(dict.fromkeys(pub_table.backbones + rep_table.backbones))
    if exp.table.params_below_m is not None:
        backbones = [b for b in backbones if b in catalog.backbones
                     and catalog.backbones[b].params_m < exp.table.params_below_m]
    cells: dict[tuple[str, str], ShownCell] = {}
    for s in exp.table.settings:
        for b in backbones:
            pc, rc = pub_table.cell(b, s.id), rep_table.cell(b, s.id)
            v = _verdict_for(by_key, b, s)
            pub = pc.value * 100 if pc and pc.value is not None else None
            rep = rc.value * 100 if rc and rc.value is not None else None
            delta = v.delta if v is not None else (rep - pub if pub is not None and rep is not None and
                                                   not (rc and rc.smoke) else None)
            status = v.status if v is not None else ("smoke" if rc is not None and rc.smoke else None)
            if pub is not None or rep is not None:
                cells[(b, s.id)] = ShownCell(pub, rep, delta, status)
    published_ranks: dict[str, dict[str, int]] = {}
    for pv in catalog.published:
        if pv.experiment == experiment_id and pv.unit == "rank":
            published_ranks.setdefault(pv.dataset, {})[canonical_backbone(catalog, pv.backbone)] = int(pv.value)
    real = {k: c for k, c in rep_table.cells.items() if not c.smoke}
    groups = task_groups(catalog, rep_table.settings) if exp.table.kind == "ranking" else None
    if real:
        ranking, source = rank_cells(rep_table.settings, rep_table.backbones, real, groups), "reproduced"
    elif pub_table.cells:
        ranking, source = rank_cells(pub_table.settings, pub_table.backbones, pub_table.cells, groups), "published"
    else:
        ranking, source = None, "none"
    correlations = size_correlations(catalog, ranking, with_p=True) if ranking else []
    all_notes = list(notes or [])
    if rep_table.smoke:
        all_notes.append("SMOKE results (synthetic data): shown, never compared with published numbers")
    all_notes += [n for n in rep_table.notes if "SMOKE" not in n]
    data = ReportData(exp.id, exp.title, exp.description, exp.source, exp.table.kind, list(exp.table.settings),
                      backbones, cells, pub_table, rep_table, verification, published_ranks, ranking, source,
                      correlations, list(dict.fromkeys(all_notes)))
    if figures:
        data.figures = build_figures(catalog, data)
    return data


def _values(table: ExperimentTable, setting: str, real_only: bool = False) -> dict[str, float]:
    return {b: c.value for (b, s), c in table.cells.items()
            if s == setting and c.value is not None and not (real_only and c.smoke)}


def build_figures(catalog, data: ReportData) -> list[Figure]:
    """Task-vs-task scatters (pairs of settings), z-score vs size, one bar chart per setting."""
    from bobkit.figures import bar_chart, task_scatter, zscore_vs_size

    figs: list[Figure] = []
    settings = data.settings

    def source_values(s: Setting) -> tuple[dict[str, float], str]:
        rep = _values(data.reproduced_table, s.id, real_only=True)
        return (rep, "reproduced") if len(rep) >= 3 else (_values(data.published_table, s.id), "published")

    for i in range(0, min(len(settings) - 1, 8), 2):
        a, b = settings[i], settings[i + 1]
        (xa, sa), (yb, sb) = source_values(a), source_values(b)
        if len([k for k in xa if k in yb]) < 2:
            continue
        src = sa if sa == sb else f"{sa} x, {sb} y"
        fig = task_scatter(catalog, xa, yb, xlabel=f"{a.title} ({a.metric}, %)", ylabel=f"{b.title} ({b.metric}, %)",
                           title=f"{b.title} vs {a.title} ({src})")
        figs.append(Figure(f"scatter_{a.id}_vs_{b.id}", f"{b.title} against {a.title}, {src} values; marker size ∝ "
                                                        "parameters, colour = pretraining kind (as the paper's "
                                                        "Figure 1)", fig))
    if data.ranking is not None and len(data.ranking.entries) >= 3:
        scores = {e.backbone: e.score for e in data.ranking.entries}
        for attr, label, name in (("params_m", "parameters (millions)", "params"),
                                  ("pretrain_images_m", "pretraining images (millions)", "pretraining_data")):
            fig = zscore_vs_size(catalog, scores, attr=attr, xlabel=label,
                                 title=f"{data.experiment}: z-score vs {label} ({data.ranking_source})")
            figs.append(Figure(f"zscore_vs_{name}", f"overall z-score ({data.ranking_source} values) against "
                                                    f"{label}; Spearman ρ per group in the legend", fig))
    for s in settings:
        pub = _values(data.published_table, s.id)
        rep = _values(data.reproduced_table, s.id, real_only=True)
        if not pub and not rep:
            continue
        fig = bar_chart(catalog, pub, rep, title=f"{s.title} ({s.metric})", ylabel=f"{s.metric} (%)")
        figs.append(Figure(f"bars_{s.id}", f"{s.title}: {s.metric} per backbone", fig))
    return figs


# ----------------------------------------------------------------------------------- rendering

def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def _cell_text(c: ShownCell | None) -> tuple[str, str, str]:
    if c is None:
        return "–", "–", ""
    return _num(c.published), _num(c.reproduced), _num(c.delta, True) if c.delta is not None else ""


def _order(data: ReportData) -> list[str]:
    if data.ranking is not None:
        first = [e.backbone for e in data.ranking.entries if e.backbone in data.backbones]
        return first + [b for b in data.backbones if b not in first]
    return list(data.backbones)


def _summary(data: ReportData) -> str:
    counts = data.verification.counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no published value to compare"


def _tolerance_lines(data: ReportData) -> list[str]:
    return [f"{t.id} ({t.tier}): {tolerance_text(t)}; {t.source}" for t in data.verification.tolerances]


def _rank_verdicts(data: ReportData) -> list[Verdict]:
    return [v for v in data.verification.verdicts if v.tier == "rank"]


def _ranking_heads(data: ReportData) -> list[str]:
    return ["rank", "backbone", "overall z", "published rank"] + [t for _, t in _ranking_cols(data)]


def _ranking_cols(data: ReportData) -> list[tuple[str, str]]:
    if data.ranking is None:
        return []
    if data.ranking.group_ranks:
        return [(g, g) for g in data.ranking.group_ranks]
    return [(s.id, s.title) for s in data.settings if s.id in data.ranking.setting_ranks]


def _ranking_rows(data: ReportData) -> list[list[str]]:
    rows = []
    if data.ranking is None:
        return rows
    pub_overall = data.published_ranks.get("overall", {})
    cols = _ranking_cols(data)
    for e in data.ranking.entries:
        row = [str(e.rank), e.backbone, f"{e.score:+.2f}", str(pub_overall.get(e.backbone, "–"))]
        for name, _ in cols:
            z = data.ranking.score(e.backbone, name)
            row.append("–" if z is None else f"{z:+.2f}")
        rows.append(row)
    return rows


def render_markdown(data: ReportData, figure_paths: dict[str, str]) -> str:
    out = [f"# {data.experiment}: {data.title}", "", data.description, "",
           f"Experiment source: {data.source}", "", f"**Verdicts:** {_summary(data)}", ""]
    out += [f"> {n}" for n in data.notes] + ([""] if data.notes else [])
    out += ["## Published vs reproduced", "",
            "Each setting shows published / reproduced / Δ (percentage points); the mark is the verify verdict "
            "(✓ pass, ⚠ warn, ✗ fail, · missing, ~ smoke).", ""]
    head = ["backbone"] + [f"{s.title} ({s.metric})" for s in data.settings]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in _order(data):
        cells = []
        for s in data.settings:
            c = data.cells.get((b, s.id))
            pub, rep, delta = _cell_text(c)
            mark = GLYPH.get(c.status or "", "") if c else ""
            cells.append(f"{pub} / {rep} / {delta} {mark}".strip() if c else "–")
        out.append("| " + " | ".join([b] + cells) + " |")
    out.append("")
    if data.ranking is not None:
        out += [f"## Ranking ({data.ranking_source} values)", "", data.ranking.rule, ""]
        head = _ranking_heads(data)
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in _ranking_rows(data)]
        out.append("")
    rv = _rank_verdicts(data)
    if rv:
        out += ["## Orderings", ""]
        out += [f"- {GLYPH[v.status]} **{v.status}** {v.dataset} ({v.metric}): {describe(v)}. Rule: {v.rule}" for v in rv]
        out.append("")
    if data.correlations:
        out += ["## Correlations (Spearman ρ)", "", "| what | group | n | ρ | p |", "|---|---|---|---|---|"]
        out += [f"| {c.what} | {c.group} | {c.n} | {_num3(c.spearman)} | {_num3(c.pvalue)} |" for c in data.correlations]
        out.append("")
    tl = _tolerance_lines(data)
    if tl:
        out += ["## Tolerances", ""] + [f"- {t}" for t in tl] + [""]
    if figure_paths:
        out += ["## Figures", ""]
        for f in data.figures:
            out += [f"![{f.caption}]({figure_paths[f.name]})", "", f"*{f.caption}*", ""]
    return "\n".join(out)


def _num3(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:12px;margin:1em 0}th,td{border:1px solid #d0d7de;padding:3px 6px;
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f6f8fa}
.pass{color:#1a7f37}.warn{color:#b08800}.fail{color:#cf222e;font-weight:bold}.missing{color:#6e7781}
.smoke{color:#8250df}.note{color:#57606a}figure{display:inline-block;margin:1em}figcaption{font-size:12px;
max-width:640px}img{max-width:100%}"""


def render_html(data: ReportData, pngs: dict[str, bytes]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           f"<title>bobkit report: {e(data.experiment)}</title>", f"<style>{CSS}</style></head><body>",
           f"<h1>{e(data.experiment)}: {e(data.title)}</h1>", f"<p>{e(data.description)}</p>",
           f"<p class='note'>Experiment source: {e(data.source)}</p>",
           f"<p><b>Verdicts:</b> {e(_summary(data))}</p>"]
    out += [f"<p class='note'>{e(n)}</p>" for n in data.notes]
    out += ["<h2>Published vs reproduced</h2>",
            "<p>Per setting: published, reproduced and Δ (percentage points), Δ coloured by the verify verdict.</p>",
            "<table><tr><th rowspan='2'>backbone</th>"]
    out += [f"<th colspan='3'>{e(s.title)} ({e(s.metric)})</th>" for s in data.settings]
    out += ["</tr><tr>"] + ["<th>pub</th><th>rep</th><th>Δ</th>" for _ in data.settings] + ["</tr>"]
    for b in _order(data):
        out.append(f"<tr><td>{e(b)}</td>")
        for s in data.settings:
            c = data.cells.get((b, s.id))
            pub, rep, delta = _cell_text(c)
            status = (c.status or "") if c else ""
            title = f" title='{e(status)}'" if status else ""
            out.append(f"<td>{pub}</td><td>{rep}</td><td class='{status}'{title}>{delta or e(GLYPH.get(status, ''))}</td>")
        out.append("</tr>")
    out.append("</table>")
    if data.ranking is not None:
        out += [f"<h2>Ranking ({e(data.ranking_source)} values)</h2>", f"<p class='note'>{e(data.ranking.rule)}</p>",
                "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in _ranking_heads(data)) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in r) + "</tr>" for r in _ranking_rows(data)]
        out.append("</table>")
    rv = _rank_verdicts(data)
    if rv:
        out += ["<h2>Orderings</h2><ul>"]
        out += [f"<li><span class='{v.status}'>{e(v.status)}</span> {e(v.dataset)} ({e(v.metric)}): {e(describe(v))}. "
                f"<span class='note'>Rule: {e(v.rule)}</span></li>" for v in rv]
        out.append("</ul>")
    if data.correlations:
        out += ["<h2>Correlations (Spearman ρ)</h2><table><tr><th>what</th><th>group</th><th>n</th><th>ρ</th>"
                "<th>p</th></tr>"]
        out += [f"<tr><td>{e(c.what)}</td><td>{e(c.group)}</td><td>{c.n}</td><td>{_num3(c.spearman)}</td>"
                f"<td>{_num3(c.pvalue)}</td></tr>" for c in data.correlations]
        out.append("</table>")
    tl = _tolerance_lines(data)
    if tl:
        out += ["<h2>Tolerances</h2><ul>"] + [f"<li>{e(t)}</li>" for t in tl] + ["</ul>"]
    if pngs:
        out.append("<h2>Figures</h2>")
        for f in data.figures:
            b64 = base64.b64encode(pngs[f.name]).decode("ascii")
            out.append(f"<figure><img alt='{e(f.caption)}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{e(f.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_TEXT = {"Δ": r"$\Delta$", "ρ": r"$\rho$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "±": r"$\pm$",
              "–": "--", "→": r"$\to$", "∝": r"$\propto$", "τ": r"$\tau$", "·": r"$\cdot$", "…": r"\ldots{}",
              "|": r"$|$", "✓": "", "⚠": "", "✗": ""}


def tex(text: str) -> str:
    out = []
    for ch in str(text):
        out.append(LATEX_SPECIAL.get(ch) or LATEX_TEXT.get(ch) or (ch if ord(ch) < 128 else "?"))
    return "".join(out)


def render_latex(data: ReportData, figure_paths: dict[str, str]) -> str:
    out = [r"\documentclass{article}", r"\usepackage[margin=1.5cm,landscape]{geometry}", r"\usepackage{booktabs}",
           r"\usepackage[table]{xcolor}", r"\usepackage{graphicx}", r"\usepackage{longtable}", r"\begin{document}",
           rf"\section*{{{tex(data.experiment)}: {tex(data.title)}}}", tex(data.description), "",
           rf"\noindent Experiment source: {tex(data.source)}\\", rf"Verdicts: {tex(_summary(data))}", ""]
    out += [rf"\noindent\emph{{{tex(n)}}}\\" for n in data.notes]
    cols = "l" + "rrr" * len(data.settings)
    out += [r"\scriptsize", rf"\begin{{longtable}}{{{cols}}}", r"\toprule",
            "backbone & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{{tex(s.title)} ({tex(s.metric)})}}"
                                       for s in data.settings) + r" \\",
            " & " + " & ".join(r"pub & rep & $\Delta$" for _ in data.settings) + r" \\", r"\midrule"]
    for b in _order(data):
        cells = []
        for s in data.settings:
            c = data.cells.get((b, s.id))
            pub, rep, delta = _cell_text(c)
            if c is not None and c.status in LATEX_COLOUR and delta:
                delta = rf"\textcolor{{{LATEX_COLOUR[c.status]}}}{{{delta}}}"
            cells += [tex(pub), tex(rep), delta if delta.startswith("\\") else tex(delta)]
        out.append(tex(b) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{longtable}", r"\normalsize"]
    if data.ranking is not None:
        heads = _ranking_heads(data)
        out += [rf"\subsection*{{Ranking ({tex(data.ranking_source)} values)}}", tex(data.ranking.rule), "",
                rf"\begin{{longtable}}{{{'l' * len(heads)}}}", r"\toprule", " & ".join(tex(h) for h in heads) + r" \\",
                r"\midrule"]
        out += [" & ".join(tex(x) for x in r) + r" \\" for r in _ranking_rows(data)]
        out += [r"\bottomrule", r"\end{longtable}"]
    rv = _rank_verdicts(data)
    if rv:
        out += [r"\subsection*{Orderings}", r"\begin{itemize}"]
        out += [rf"\item \textcolor{{{LATEX_COLOUR[v.status]}}}{{{v.status}}} {tex(v.dataset)} ({tex(v.metric)}): "
                f"{tex(describe(v))}. Rule: {tex(v.rule)}" for v in rv]
        out.append(r"\end{itemize}")
    if data.correlations:
        out += [r"\subsection*{Correlations (Spearman $\rho$)}", r"\begin{tabular}{llrrr}", r"\toprule",
                r"what & group & n & $\rho$ & p \\", r"\midrule"]
        out += [rf"{tex(c.what)} & {tex(c.group)} & {c.n} & {_num3(c.spearman)} & {_num3(c.pvalue)} \\"
                for c in data.correlations]
        out += [r"\bottomrule", r"\end{tabular}"]
    tl = _tolerance_lines(data)
    if tl:
        out += [r"\subsection*{Tolerances}", r"\begin{itemize}"] + [rf"\item {tex(t)}" for t in tl] + [r"\end{itemize}"]
    for f in data.figures:
        out += [r"\begin{figure}[h]\centering", rf"\includegraphics[width=0.6\linewidth]{{{figure_paths[f.name]}}}",
                rf"\caption{{{tex(f.caption)}}}", r"\end{figure}"]
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


SUFFIX = {"md": ".md", "html": ".html", "latex": ".tex"}


def write_report(data: ReportData, fmt: str, out_dir: Path, *, figures: bool = True) -> Path:
    """Write the report (and, for md/latex, figures/*.png next to it); returns the report's path."""
    from bobkit.errors import BadInput
    from bobkit.figures import png_bytes

    if fmt not in SUFFIX:
        raise BadInput(f"--format {fmt!r}: choose md, html or latex")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not figures:
        data.figures = []
    pngs = {f.name: png_bytes(f.fig) for f in data.figures}
    paths: dict[str, str] = {}
    if fmt != "html":
        for name, blob in pngs.items():
            rel = f"figures/{data.experiment}_{name}.png"
            _atomic_bytes(out_dir / rel, blob)
            paths[name] = rel
    path = out_dir / f"{data.experiment}{SUFFIX[fmt]}"
    text = {"md": lambda: render_markdown(data, paths), "html": lambda: render_html(data, pngs),
            "latex": lambda: render_latex(data, paths)}[fmt]()
    atomic_write_text(path, text)
    return path


def _atomic_bytes(path: Path, blob: bytes) -> None:
    from bobkit.results import atomic_path

    with atomic_path(path, fsync=False) as tmp, open(tmp, "wb") as fh:
        fh.write(blob)
