"""Wall time of one smoke run under the docker executor, divided by the same run under the local one.

    python benchmarks/container_overhead.py [--image bobkit/classification:latest] [--repeats 1]

Both executors run the same RunSpec from scratch (fresh runs directory each time), on CPU. The
docker side includes creating, starting, following and removing the container. Target: <= 1.2.
Needs a Docker daemon and the image (`bobkit images build classification`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bobkit.manifest.loader import load_catalog
from bobkit.plan import plan

TARGET = 1.2


def one(executor, spec, root: Path) -> float:
    t0 = time.perf_counter()
    report = executor.execute([spec], root / "runs", root / "data")
    took = time.perf_counter() - t0
    states = [o.state for o in report.outcomes]
    if states != ["done"]:
        raise SystemExit(f"{executor.name}: run ended {states}: {[o.message for o in report.outcomes]}")
    return took


def main() -> int:
    from bobkit.exec.docker import DockerExecutor
    from bobkit.exec.local import LocalExecutor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="bobkit/classification:latest")
    ap.add_argument("--experiment", default="classification")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--dataset", default="cifar100")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("BOBKIT_NO_GPU", "1")
    (spec,) = plan(load_catalog(()), args.experiment, backbones=[args.backbone], datasets=[args.dataset],
                   smoke=True)[:1]
    times: dict[str, list[float]] = {"local": [], "docker": []}
    for _ in range(args.repeats):  # alternate, so load on the machine hits both alike
        for name in ("local", "docker"):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                (root / "weights").mkdir()
                ex = (LocalExecutor(progress=False) if name == "local" else
                      DockerExecutor(gpus=[], images={spec.image_family: args.image}, shm_size="1g",
                                     progress=False, weights_dir=root / "weights"))
                times[name].append(one(ex, spec, root))
    local, docker = statistics.median(times["local"]), statistics.median(times["docker"])
    print(f"run: {spec.backbone} / {spec.dataset} / {spec.recipe} (smoke, CPU), {args.repeats} repeat(s)")
    print(f"local   {local:8.1f} s   {['%.1f' % t for t in times['local']]}")
    print(f"docker  {docker:8.1f} s   {['%.1f' % t for t in times['docker']]}   image {args.image}")
    print(f"ratio   {docker / local:8.3f}     (target <= {TARGET})")
    return 0 if docker / local <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
