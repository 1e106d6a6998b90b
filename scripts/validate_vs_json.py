#!/usr/bin/env python3
"""`cronq validate` of an N-job file (default 1,000,000) against Python's `json.load` of the same
file, in the same run: ROUNDS rounds (default 3), the two alternating, wall time of each whole
process (start to exit; cronq's stdout, one line per job, to /dev/null), and cronq's CPU time
(user + system of the child, both cores counted).

The jobs are random `m h dom mon *` (about 420k distinct expressions per 1M), as in
`benches/topic.rs`.

Usage: scripts/validate_vs_json.py [N] [ROUNDS]
Needs target/release/cronq (cargo build --release), or CRONQ=path.
"""
import os, random, resource, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRONQ = os.environ.get("CRONQ", os.path.join(ROOT, "target/release/cronq"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def timed(cmd):
    """Wall seconds and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    work = tempfile.mkdtemp(prefix="cronq-validate-")
    path = os.path.join(work, "schedule.json")
    rng = random.Random(2026)
    with open(path, "w") as f:
        f.write('{"jobs":[\n')
        for i in range(N):
            cron = f"{rng.randrange(60)} {rng.randrange(24)} {1 + rng.randrange(28)} {1 + rng.randrange(12)} *"
            sep = ",\n" if i + 1 < N else "\n"
            f.write(f'{{"jobName":"job-{i:08d}","priority":{i % 10},"job":"run-task --id {i}","cronTime":"{cron}"}}{sep}')
        f.write("]}\n")
    print(f"{N} jobs, {os.path.getsize(path) / 1e6:.0f} MB, {ROUNDS} rounds", flush=True)
    py = [sys.executable, "-c", "import json, sys; json.load(open(sys.argv[1]))", path]
    cq = [CRONQ, "validate", path]
    ratios = []
    for r in range(ROUNDS):
        py_wall, py_cpu = timed(py)
        cq_wall, cq_cpu = timed(cq)
        ratios.append(cq_wall / py_wall)
        print(f"  round {r + 1}: cronq validate {cq_wall:.2f} s wall ({cq_cpu:.2f} s CPU), "
              f"python json.load {py_wall:.2f} s wall ({py_cpu:.2f} s CPU): {cq_wall / py_wall:.2f}x", flush=True)
    print(f"cronq validate / json.load, wall: {min(ratios):.2f}-{max(ratios):.2f}x (target <= 1)")


if __name__ == "__main__":
    main()
