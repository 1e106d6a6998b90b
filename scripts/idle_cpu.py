#!/usr/bin/env python3
"""Idle CPU of the real dispatcher: `target/release/cronq run --dry-run` with N jobs (default
1,000,000) and the default 1 s tick, measured over SECONDS (default 120) of wall time, minute
boundaries included, from /proc/PID/stat (utime + stime, 10 ms clock ticks) and, for a finer
figure, the sum of /proc/PID/task/*/schedstat (ns on CPU, every thread).

No job is due during the measurement: every job fires at an hour outside the current and the next
UTC hour, so what is measured is the tick loop waking every second, checking the schedule file,
and advancing the wheel over idle minutes (and any cascade between its levels). The dispatcher has
loaded and settled before the measurement starts (it waits for the "cronq dispatcher started" log
line, then 5 s more).

Usage: scripts/idle_cpu.py [N] [MIX] [SECONDS]
  MIX: realistic (75 % daily, 15 % weekly, 10 % monthly at random times: few distinct
       expressions, so the scheduler's groups are few) or unique (no two jobs share an
       expression: `M H1,H2 * * DAYS`).
Needs target/release/cronq (cargo build --release).
"""
import os, random, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRONQ = os.path.join(ROOT, "target/release/cronq")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
MIX = sys.argv[2] if len(sys.argv) > 2 else "realistic"
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
HZ = os.sysconf("SC_CLK_TCK")


def say(*a):
    print(*a, flush=True)


def schedule(path):
    """N jobs, none due in the current or the next UTC hour."""
    now_hour = time.gmtime().tm_hour
    hours = [h for h in range(24) if h not in (now_hour, (now_hour + 1) % 24)]
    rng = random.Random(2026)
    seen = set()
    with open(path, "w") as f:
        f.write('{"jobs":[\n')
        i = 0
        while i < N:
            m = rng.randrange(60)
            if MIX == "unique":
                h1, h2 = sorted(rng.sample(hours, 2))
                days = 1 + rng.randrange(127)
                key = (m, h1, h2, days)
                if key in seen:
                    continue
                seen.add(key)
                dows = ",".join(str(d) for d in range(7) if days & (1 << d))
                cron = f"{m} {h1},{h2} * * {dows}"
            else:
                h = rng.choice(hours)
                kind = rng.randrange(100)
                if kind < 75:
                    cron = f"{m} {h} * * *"
                elif kind < 90:
                    cron = f"{m} {h} * * {rng.randrange(7)}"
                else:
                    cron = f"{m} {h} {1 + rng.randrange(28)} * *"
            sep = ",\n" if i + 1 < N else "\n"
            f.write(f'{{"jobName":"job-{i:07d}","priority":{i % 10},"job":"run-task --id {i}","cronTime":"{cron}"}}{sep}')
            i += 1
        f.write("]}\n")


def stat_ticks(pid):
    """utime + stime of the whole process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def schedstat_ns(pid):
    """Nanoseconds on CPU, summed over the process's threads."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    work = tempfile.mkdtemp(prefix="cronq-idle-")
    path = os.path.join(work, "schedule.json")
    t0 = time.time()
    schedule(path)
    say(f"{N} jobs ({MIX}) written in {time.time() - t0:.1f} s: {os.path.getsize(path) / 1e6:.0f} MB")
    log_path = os.path.join(work, "cronq.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([CRONQ, "run", "--dry-run", "--schedule", path, "--tick", "1s", "--http", "off"],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 300
        while "cronq dispatcher started" not in open(log_path).read():
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"cronq did not start; log:\n{open(log_path).read()}")
            time.sleep(0.2)
        say(f"loaded after {time.time() - t0:.1f} s; settling 5 s")
        time.sleep(5)
        wall0, ticks0, ns0 = time.time(), stat_ticks(proc.pid), schedstat_ns(proc.pid)
        minute0 = int(wall0 // 60)
        time.sleep(SECONDS)
        wall1, ticks1, ns1 = time.time(), stat_ticks(proc.pid), schedstat_ns(proc.pid)
        boundaries = int(wall1 // 60) - minute0
        wall = wall1 - wall0
        cpu_stat = (ticks1 - ticks0) / HZ
        cpu_ns = (ns1 - ns0) / 1e9
        dispatched = open(log_path).read().count('"slot dispatched"')
        say(f"cronq run --dry-run, {N} jobs ({MIX}), tick 1 s: {wall:.1f} s wall, {boundaries} minute boundaries crossed, RSS {rss_mb(proc.pid):.0f} MB")
        say(f"  /proc/PID/stat utime+stime: {cpu_stat * 1e3:.0f} ms = {100 * cpu_stat / wall:.4f} % of a core"
            f" (resolution {1e3 / HZ:.0f} ms)")
        say(f"  /proc/PID/task/*/schedstat: {cpu_ns * 1e3:.1f} ms = {100 * cpu_ns / wall:.4f} % of a core")
        say(f"  target < 0.1 % of a core: {'PASS' if max(cpu_stat, cpu_ns) / wall < 0.001 else 'MISS'}")
        if dispatched:
            say(f"  note: {dispatched} 'slot dispatched' lines in the log")
    finally:
        proc.terminate()
        proc.wait()
        log.close()


if __name__ == "__main__":
    main()
