"""Paper-style figures with matplotlib (Agg): task-vs-task scatter, z-score vs size, per-task bars.

matplotlib is imported inside each function so the CLI starts without it. Every function returns a
Figure; `png_bytes` turns one into a PNG for a file or an HTML data URI.
"""

from __future__ import annotations

import io
import math
from typing import Mapping

from bobkit.ranking import backbone_groups, spearman

KIND_COLOURS = {
    "supervised": "#1f77b4", "self-supervised": "#ff7f0e", "vision-language": "#2ca02c",
    "generative": "#d62728", "depth": "#9467bd", "copy-detection": "#8c564b", "unknown": "#7f7f7f",
}
GROUP_COLOURS = {"ViTs": "#d62728", "CNNs": "#1f77b4"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _kind(catalog, backbone: str) -> str:
    b = catalog.backbones.get(backbone)
    return b.kind if b is not None else "unknown"


def _marker_size(catalog, backbone: str) -> float:
    b = catalog.backbones.get(backbone)
    params = b.params_m if b is not None else 25.0
    return 12.0 + 2.0 * math.sqrt(params) * 4.0


def task_scatter(catalog, x: Mapping[str, float], y: Mapping[str, float], *, xlabel: str, ylabel: str,
                 title: str):
    """One point per backbone with both values, sized by parameters, coloured by pretraining kind (Figure 1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    common = [b for b in x if b in y]
    by_kind: dict[str, list[str]] = {}
    for b in common:
        by_kind.setdefault(_kind(catalog, b), []).append(b)
    for kind, members in sorted(by_kind.items()):
        ax.scatter([100 * x[b] for b in members], [100 * y[b] for b in members],
                   s=[_marker_size(catalog, b) for b in members], c=KIND_COLOURS.get(kind, "#7f7f7f"),
                   alpha=0.75, edgecolors="black", linewidths=0.5, label=f"{kind} ({len(members)})")
    rho = spearman([x[b] for b in common], [y[b] for b in common])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nSpearman ρ = {rho:.2f}" if rho is not None else title)
    if common:
        ax.legend(title="pretraining (marker size ∝ parameters)", fontsize=7, title_fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def zscore_vs_size(catalog, scores: Mapping[str, float], *, attr: str, xlabel: str, title: str):
    """Overall z-score against a backbone size (log x), one series per group with its Spearman ρ in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    groups = backbone_groups(catalog, scores)
    placed = set()
    for group in ("ViTs", "CNNs"):
        members = [b for b in groups[group] if getattr(catalog.backbones[b], attr) is not None]
        placed.update(members)
        if not members:
            continue
        xs = [getattr(catalog.backbones[b], attr) for b in members]
        ys = [scores[b] for b in members]
        rho = spearman(xs, ys)
        label = f"{group}: ρ = {rho:.2f} (n={len(members)})" if rho is not None else f"{group} (n={len(members)})"
        ax.scatter(xs, ys, c=GROUP_COLOURS[group], alpha=0.8, edgecolors="black", linewidths=0.5, label=label)
    others = [b for b in groups["all"] if b not in placed and getattr(catalog.backbones[b], attr) is not None]
    if others:
        ax.scatter([getattr(catalog.backbones[b], attr) for b in others], [scores[b] for b in others],
                   c="#7f7f7f", alpha=0.8, edgecolors="black", linewidths=0.5, label=f"other (n={len(others)})")
    every = [b for b in groups["all"] if getattr(catalog.backbones[b], attr) is not None]
    rho_all = spearman([getattr(catalog.backbones[b], attr) for b in every], [scores[b] for b in every])
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("overall z-score (bobkit's rule)")
    ax.set_title(title + (f"\nall backbones: ρ = {rho_all:.2f}" if rho_all is not None else ""))
    if every:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def bar_chart(catalog, published: Mapping[str, float], reproduced: Mapping[str, float], *, title: str,
              ylabel: str):
    """Backbones sorted by value; published and reproduced bars side by side where both exist."""
    plt = _pyplot()
    names = sorted(set(published) | set(reproduced),
                   key=lambda b: -(published.get(b) if b in published else reproduced.get(b, 0.0)))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.32 * len(names) + 2), 4.8))
    both = bool(published) and bool(reproduced)
    width = 0.4 if both else 0.8
    pos = list(range(len(names)))
    if published:
        idx = [i for i, b in enumerate(names) if b in published]
        ax.bar([i - width / 2 if both else i for i in idx], [100 * published[names[i]] for i in idx], width,
               label="published", color="#9ecae1", edgecolor="black", linewidth=0.4)
    if reproduced:
        idx = [i for i, b in enumerate(names) if b in reproduced]
        ax.bar([i + width / 2 if both else i for i in idx], [100 * reproduced[names[i]] for i in idx], width,
               label="reproduced", color="#fd8d3c", edgecolor="black", linewidth=0.4)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if names:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _pyplot().close(fig)
    return buf.getvalue()


def points_in(fig) -> int:
    """How many scatter points a figure shows (tests and sanity checks)."""
    from matplotlib.collections import PathCollection

    return sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection))


def bars_in(fig) -> int:
    from matplotlib.patches import Rectangle

    return sum(1 for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle))
