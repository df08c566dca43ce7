"""Time and peak memory to build every backbone of the manifests, one at a time.

Each backbone is built in its own fresh Python process (so one build's memory never counts for the
next): the child imports torch/timm, records its resident memory, builds the backbone with
`bobkit.backbones.build(id, pretrained=...)`, and reports the build's wall time, the process's
peak RSS and the growth of RSS during the build. Run on demand:

    python benchmarks/build_backbones.py                 # all backbones, random init
    python benchmarks/build_backbones.py resnet50 sd_v1  # some
    python benchmarks/build_backbones.py --pretrained    # with weights (must be fetched first)
    python benchmarks/build_backbones.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
import torch, timm, open_clip, diffusers  # noqa: F401,E401  (imports are not part of the build time)
from bobkit.backbones import build
from bobkit.manifest.loader import load_catalog
entry = load_catalog().backbones[sys.argv[1]]
torch.set_num_threads(int(sys.argv[3]))
before = rss_mb()
t0 = time.perf_counter()
built = build(entry, pretrained=sys.argv[2] == "1")
seconds = time.perf_counter() - t0
after = rss_mb()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
params = sum(p.numel() for p in built.model.parameters()) / 1e6
print(json.dumps({"backbone": entry.id, "params_m": round(params, 2), "manifest_params_m": entry.params_m,
                  "build_s": round(seconds, 2), "rss_before_mb": round(before), "rss_after_mb": round(after),
                  "peak_rss_mb": round(peak), "build_rss_mb": round(after - before)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbones", nargs="*", help="backbone ids (default: all in the manifests)")
    parser.add_argument("--pretrained", action="store_true", help="load the weights (cached; offline)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per build")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this JSON file")
    args = parser.parse_args()

    from bobkit.manifest.loader import load_catalog

    ids = args.backbones or list(load_catalog().backbones)
    env = {**os.environ, "BOBKIT_OFFLINE": "1"} if args.pretrained else dict(os.environ)
    rows = []
    started = time.perf_counter()
    for bid in ids:
        proc = subprocess.run([sys.executable, "-c", CHILD, bid, "1" if args.pretrained else "0", str(args.threads)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            rows.append({"backbone": bid, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(_line(rows[-1]), flush=True)
    total = time.perf_counter() - started
    _table(rows, total, args)
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 1 if any("error" in r for r in rows) else 0


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['backbone']:32s} ERROR {r['error']}"
    return (f"{r['backbone']:32s} {r['params_m']:9.1f} M  {r['build_s']:7.2f} s  peak {r['peak_rss_mb']:7d} MB  "
            f"build +{r['build_rss_mb']} MB")


def _table(rows: list[dict], total: float, args) -> None:
    from rich.console import Console
    from rich.table import Table

    ok = [r for r in rows if "error" not in r]
    t = Table(title=f"build {'with weights' if args.pretrained else 'at random init'}, {len(ok)}/{len(rows)} "
                    f"backbones, one process each, {args.threads} thread(s); {total:.0f} s in all")
    for col in ("backbone", "params (M)", "build (s)", "RSS growth (MB)", "peak RSS (MB)"):
        t.add_column(col, justify="left" if col == "backbone" else "right")
    for r in rows:
        if "error" in r:
            t.add_row(r["backbone"], "error", r["error"][:60], "", "")
        else:
            t.add_row(r["backbone"], f"{r['params_m']:.1f}", f"{r['build_s']:.2f}", str(r["build_rss_mb"]),
                      str(r["peak_rss_mb"]))
    if ok:
        t.add_row("max", "", f"{max(r['build_s'] for r in ok):.2f}", str(max(r["build_rss_mb"] for r in ok)),
                  str(max(r["peak_rss_mb"] for r in ok)))
    Console().print(t)


if __name__ == "__main__":
    sys.exit(main())
