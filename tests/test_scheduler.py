"""GPU packing: placement, reservations, dependencies, failures, and one run per process."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobkit.errors import BadInput
from bobkit.exec.scheduler import (GpuScheduler, Job, RunClaim, claimed_elsewhere, lower_bound, parse_gpu_list,
                                   simulate)


def test_longest_first_and_multi_gpu_runs_get_distinct_devices():
    jobs = [Job("short", 1, 1.0), Job("long", 2, 20.0), Job("mid", 1, 5.0), Job("tiny", 1, 0.5)]
    sched = GpuScheduler(jobs, ["0", "1", "2", "3"])
    placed = sched.place(0.0)
    assert [p.job.id for p in placed] == ["long", "mid", "short"]  # 10 h, 5 h, 1 h of wall time
    assert placed[0].devices == ("0", "1")
    taken = [d for p in placed for d in p.devices]
    assert len(taken) == len(set(taken)) == 4
    assert sched.place(0.0) == []  # nothing free
    sched.finish("short")
    assert [(p.job.id, p.devices) for p in sched.place(1.0)] == [("tiny", ("3",))]


def test_a_run_needing_every_gpu_is_not_starved_by_small_runs():
    # 2 GPUs: "b" (11.5 h) and "a" (10 h) start first; the 2-GPU run is reserved for t=11.5, when "b"
    # ends. One 1-hour run fits on the GPU "a" frees at t=10; a second would delay the reservation.
    jobs = [Job("a", 1, 10.0), Job("b", 1, 11.5), Job("big", 2, 16.0)] + [Job(f"s{i}", 1, 1.0) for i in range(4)]
    sim = simulate(jobs, 2)
    start = {p.job.id: s for s, _, p in sim.timeline}
    assert start["big"] == pytest.approx(11.5)
    assert sum(1 for i in range(4) if start[f"s{i}"] < 11.5) == 1


def test_backfill_respects_the_reservation():
    jobs = [Job("running", 1, 10.0), Job("big", 2, 30.0), Job("short", 1, 3.0), Job("long", 1, 12.0)]
    sched = GpuScheduler([jobs[0]], ["0", "1"])
    sched.place(0.0)  # "running" holds GPU 0 until t=10
    for j in jobs[1:]:
        sched.jobs[j.id] = j
        sched.waiting.add(j.id)
    placed = [p.job.id for p in sched.place(0.0)]
    # "long" (12 h) would delay "big" (reserved at t=10): not started; "short" (3 h) ends before: started
    assert placed == ["short"]


def test_dependencies_wait_and_failures_block_downstream():
    jobs = [Job("up", 1, 1.0), Job("down", 1, 5.0, ("up",)), Job("downer", 1, 1.0, ("down",)),
            Job("free", 1, 0.1)]
    sched = GpuScheduler(jobs, ["0", "1"])
    assert {p.job.id for p in sched.place(0.0)} == {"up", "free"}
    assert set(sched.finish("up", ok=False)) == {"down", "downer"}
    sched.finish("free")
    assert sched.finished and sched.blocked == {"down": "up", "downer": "up"}


def test_a_placed_run_that_is_skipped_gives_its_gpus_back():
    sched = GpuScheduler([Job("a", 2, 2.0), Job("b", 2, 1.0), Job("c", 1, 1.0, ("a",))], ["0", "1"])
    (p,) = sched.place(0.0)
    assert p.job.id == "a"
    assert sched.skip("a", finished=False) == ["c"]  # claimed by another process: its dependents wait out
    (q,) = sched.place(0.0)
    assert q.job.id == "b" and q.devices == ("0", "1")
    sched.finish("b")
    assert sched.finished


def test_more_gpus_than_the_machine_has_are_clamped():
    sched = GpuScheduler([Job("eight", 8, 80.0)], ["0", "1", "2", "3"])
    (p,) = sched.place(0.0)
    assert p.devices == ("0", "1", "2", "3") and sched.clamped == {"eight": 8}


def test_gpu_list_parsing():
    assert parse_gpu_list("0, 2,3") == ["0", "2", "3"]
    for bad in ("", "0,0", " , "):
        with pytest.raises(BadInput):
            parse_gpu_list(bad)


def test_simulation_reaches_the_lower_bound_on_identical_runs():
    sim = simulate([Job(str(i), 1, 2.0) for i in range(16)], 8)
    assert sim.makespan == pytest.approx(4.0) and sim.ratio == pytest.approx(1.0)
    assert sim.busy_fraction == pytest.approx(1.0)


job_lists = st.lists(
    st.tuples(st.sampled_from([1, 1, 1, 2, 4, 8]), st.floats(0.01, 100.0), st.integers(0, 50)),
    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(job_lists)
def test_simulated_schedules_are_valid(spec):
    jobs = []
    for i, (gpus, hours, dep) in enumerate(spec):
        deps = (str(dep),) if dep < i else ()
        jobs.append(Job(str(i), gpus, hours * gpus, deps))
    sim = simulate(jobs, 8)
    starts = {p.job.id: (s, e, p) for s, e, p in sim.timeline}
    assert set(starts) == {j.id for j in jobs}  # every run exactly once
    for j in jobs:
        s, e, p = starts[j.id]
        assert len(p.devices) == min(j.gpus, 8)
        for d in j.depends_on:
            assert starts[d][1] <= s + 1e-9  # upstream finished first
    events = sorted({t for s, e, _ in sim.timeline for t in (s, e)})
    for t in events:  # no device is ever used twice at once
        used = [d for s, e, p in sim.timeline if s <= t < e for d in p.devices]
        assert len(used) == len(set(used))
    assert sim.makespan >= sim.lower_bound - 1e-9


def test_lower_bound_is_the_larger_of_work_and_longest_run():
    assert lower_bound([Job("a", 1, 10.0), Job("b", 1, 1.0)], 8) == 10.0
    assert lower_bound([Job(str(i), 2, 8.0) for i in range(8)], 8) == 8.0


# ---------------------------------------------------------------- two processes, one runs directory

def _worker(runs: str, ids: list[str], out: str) -> None:
    """What an executor does per run: claim, skip if finished, 'run' (sleep), write metrics.json."""
    ran = []
    for rid in ids:
        run = Path(runs) / rid
        claim = RunClaim(run)
        if not claim.acquire():
            continue
        try:
            if (run / "metrics.json").exists():
                continue
            time.sleep(0.05)
            (run / "metrics.json").write_text(json.dumps({"pid": os.getpid()}))
            ran.append(rid)
        finally:
            claim.release()
    Path(out).write_text(json.dumps(ran))


def test_two_processes_never_run_the_same_run(tmp_path):
    ids = [f"run{i:02d}" for i in range(20)]
    for rid in ids:
        (tmp_path / "runs" / rid).mkdir(parents=True)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "runs"), ids if k == 0 else ids[::-1],
                                               str(tmp_path / f"out{k}.json"))) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ran = [json.loads((tmp_path / f"out{k}.json").read_text()) for k in range(2)]
    assert sorted(ran[0] + ran[1]) == ids  # each run exactly once, between them
    assert ran[0] and ran[1]  # and both processes did work


def test_claim_is_visible_to_other_processes_and_released(tmp_path):
    claim = RunClaim(tmp_path)
    assert claim.acquire()
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(claimed_elsewhere, (tmp_path,)) is True
        claim.release()
        assert pool.apply(claimed_elsewhere, (tmp_path,)) is False
