#!/usr/bin/env python3
"""Measures the dispatcher group on this machine against a local tansu broker, real clock:

  A. one dispatcher with N jobs (default 1,000,000; 2 % every minute, the rest daily)
  B. three dispatchers in one group with the same file, started together
  C. kill -9 of one member of B, no replacement: time until a survivor takes its shards over
     (on tansu through the orphan watchdog)
  D. kill -9 of another member and an immediate replacement: time until its shards move
     (the coordinator reassigns when a new member joins)
  R. one dispatcher with N daily jobs none of which falls in the next hours, plus 2 every-minute
     jobs, so each minute is small: the file is rewritten (1 % of payloads changed, 1 000 jobs
     added) 2 s before a minute boundary; the skew of the minutes before, during and after the
     reload, and the peak memory of the reload (VmHWM reset through /proc/PID/clear_refs before)
     against the steady state

For each: resident memory per process (steady VmRSS and peak VmHWM), load time (start until every
shard runs), and the time until all of one minute's due jobs are acked (the `slot dispatched`
line's skew_max_ms). Usage: scripts/measure_group.py [N] [PHASES]   (PHASES: default "ABCD"; needs
target/release/cronq and tansu)
"""
import os, random, re, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRONQ = os.path.join(ROOT, "target/release/cronq")
TANSU = os.path.expanduser("~/.cargo/bin/tansu")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
PHASES = sys.argv[2] if len(sys.argv) > 2 else "ABCDR"
work = tempfile.mkdtemp(prefix="cronq-measure-")


def say(*a):
    print(*a, flush=True)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def schedule():
    path = os.path.join(work, "schedule.json")
    rng = random.Random(7)
    with open(path, "w") as f:
        f.write('{"jobs":[\n')
        for i in range(N):
            cron = "* * * * *" if i % 50 == 0 else f"{rng.randrange(60)} {rng.randrange(24)} * * *"
            sep = ",\n" if i + 1 < N else "\n"
            f.write(f'{{"jobName":"job-{i:07d}","priority":{i % 10},"job":"run-task --id {i}","cronTime":"{cron}"}}{sep}')
        f.write("]}\n")
    return path


def quiet_schedule(path, edited):
    """N daily jobs at hours at least 2 away from now (UTC), 2 every-minute jobs; `edited` changes
    1 % of the payloads and adds 1 000 jobs."""
    rng = random.Random(11)
    hour = time.gmtime().tm_hour
    hours = [h for h in range(24) if min((h - hour) % 24, (hour - h) % 24) >= 2]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write('{"jobs":[\n')
        f.write('{"jobName":"tick-a","job":"a","cronTime":"* * * * *"},\n{"jobName":"tick-b","job":"b","cronTime":"* * * * *"}')
        for i in range(N + (1000 if edited else 0)):
            cron = f"{rng.randrange(60)} {rng.choice(hours)} * * *"
            payload = f"run-task --id {i}" + (" --v2" if edited and i % 100 == 0 else "")
            f.write(f',\n{{"jobName":"job-{i:07d}","priority":{i % 10},"job":"{payload}","cronTime":"{cron}"}}')
        f.write("\n]}\n")
    os.rename(tmp, path)


def reload_phase(brokers):
    path = os.path.join(work, "quiet.json")
    quiet_schedule(path, False)
    m = Member("reload", "g-reload", "t-reload", brokers, path)
    ready([m])
    time.sleep(max(0, 60 - time.time() % 60) + 125)
    steady = m.mem().get("VmRSS")
    # Peak RSS from here on only.
    with open(f"/proc/{m.p.pid}/clear_refs", "w") as f:
        f.write("5")
    # Write the new version to a side file first, then rename it in 2 s before a boundary.
    side = path + ".next"
    quiet_schedule(side, True)
    time.sleep(max(0, 58 - time.time() % 60))
    t_write = time.time()
    os.rename(side, path)
    _, at = wait_for([m], r"schedule reloaded", 300, since=t_write)
    time.sleep(max(0, 60 - time.time() % 60) + 65)
    line = [l for l in m.text().splitlines() if "schedule reloaded" in l][-1]
    took = re.search(r"took_ms=(\d+)", line).group(1)
    swap = re.search(r"swap_ms=(\d+)", line).group(1)
    peak = m.mem().get("VmHWM")
    say(f"R: {N} jobs, steady RSS {steady} MB; reload written at second {t_write % 60:.1f}, applied {at - t_write:.1f} s later (built in {took} ms off the loop, swapped in {swap} ms)")
    say(f"  peak RSS during the reload {peak} MB = {peak / steady:.2f}x steady (target <= 1.6x)")
    boundary = int(t_write // 60 + 1) * 60
    for slot, (jobs, skew) in sorted(minute_acks([m], 0).items()):
        from datetime import datetime, timezone
        t = datetime.strptime(slot, "%Y-%m-%dT%H:%MZ").replace(tzinfo=timezone.utc).timestamp()
        if boundary - 180 <= t <= boundary + 60:
            what = "during the reload" if t == boundary else ("after" if t > boundary else "before")
            say(f"  minute {slot} ({what}): {jobs} jobs, all acked {skew} ms after the slot")
    m.term()


def broker():
    port = free_port()
    d = os.path.join(work, "broker"); os.makedirs(d)
    url = f"tcp://127.0.0.1:{port}"
    p = subprocess.Popen([TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
                          "--storage-engine", "sqlite://tansu.db"], cwd=d,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); break
        except OSError:
            time.sleep(0.05)
    import sqlite3
    c = sqlite3.connect(os.path.join(d, "tansu.db"), timeout=30)
    c.execute("create index if not exists cronq_header_record on header (topition, offset_id)"); c.commit()
    return p, f"127.0.0.1:{port}"


class Member:
    def __init__(self, name, group, topic, brokers, path):
        self.name, self.log = name, os.path.join(work, f"{name}.log")
        self.started = time.time()
        self.p = subprocess.Popen([CRONQ, "run", "--brokers", brokers, "--group", group, "--topic", topic,
                                   "--member-id", name, "--schedule", path],
                                  stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
                                  env={**os.environ, "CRONQ_LOG": "info,rskafka=warn,librdkafka=warn", "CRONQ_HTTP": "127.0.0.1:0"})

    def text(self):
        with open(self.log) as f:
            return f.read()

    def mem(self):
        out = {}
        try:
            with open(f"/proc/{self.p.pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS", "VmHWM")):
                        k, v = line.split(":"); out[k] = int(v.split()[0]) // 1024
        except OSError:
            pass
        return out

    def kill9(self):
        self.p.send_signal(signal.SIGKILL); self.p.wait()

    def term(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()


def stamp(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    from datetime import datetime, timezone
    return datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def wait_for(members, pattern, timeout, since=0.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in members:
            for line in m.text().splitlines():
                if re.search(pattern, line) and stamp(line) >= since:
                    return m, stamp(line)
        time.sleep(0.2)
    return None, None


def minute_acks(members, after):
    """skew_max_ms per slot minute, max over the members, for slots settled after `after`."""
    per = {}
    for m in members:
        for line in m.text().splitlines():
            if "slot dispatched" in line and stamp(line) > after:
                slot = re.search(r"slot=(\S+)", line).group(1)
                jobs = int(re.search(r"jobs=(\d+)", line).group(1))
                skew = int(re.search(r"skew_max_ms=(-?\d+)", line).group(1))
                a = per.setdefault(slot, [0, 0]); a[0] += jobs; a[1] = max(a[1], skew)
    return per


def ready(members, shards=12, timeout=600):
    """Time from start until all shards run (sum of assignments seen), per member."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        owned = set()
        for m in members:
            last = [l for l in m.text().splitlines() if "shards assigned" in l]
            if last:
                owned |= set(int(x) for x in re.search(r"shards=\[([\d, ]*)\]", last[-1]).group(1).split(",") if x.strip())
        if len(owned) == shards:
            return time.time()
        time.sleep(0.2)
    raise SystemExit("the group never owned every shard")


def run_phase(label, names, brokers, path):
    group, topic = f"g-{label}", f"t-{label}"
    members = [Member(n, group, topic, brokers, path) for n in names]
    t0 = min(m.started for m in members)
    t_ready = ready(members)
    say(f"{label}: every shard running {t_ready - t0:.1f} s after start")
    # two whole minutes after the start
    time.sleep(max(0, 60 - time.time() % 60) + 125)
    acks = minute_acks(members, t_ready)
    for m in members:
        took = [int(x) for x in re.findall(r"took_ms=(\d+)", m.text())]
        say(f"  {m.name}: RSS {m.mem().get('VmRSS')} MB, peak {m.mem().get('VmHWM')} MB, shard loads took {max(took) if took else 0} ms")
    for slot, (jobs, skew) in sorted(acks.items())[-2:]:
        say(f"  minute {slot}: {jobs} jobs, all acked {skew} ms after the slot")
    return members


say(f"generating {N} jobs ..."); path = schedule() if PHASES != "R" else None
say(f"schedule: {os.path.getsize(path) // 1_000_000 if path else 0} MB, work dir {work}")
bp, brokers = broker()
try:
    if "R" in PHASES:
        reload_phase(brokers)
        if PHASES == "R":
            raise SystemExit(0)
    if "A" in PHASES:
        for m in run_phase("single", ["solo"], brokers, path):
            m.term()
    trio = run_phase("trio", ["m1", "m2", "m3"], brokers, path)
    if "C" in PHASES:
        say("C: kill -9 of m3, no replacement")
        t_kill = time.time(); trio[2].kill9()
        who, at = wait_for(trio[:2], r'previous_owner="m3"', 600, since=t_kill)
        say(f"  m3's shards taken over by {who.name if who else None} {at - t_kill if at else float('nan'):.1f} s after the kill")
    if "D" not in PHASES:
        raise SystemExit(0)
    say("D: kill -9 of m2 and an immediate replacement m4")
    t_kill = time.time(); trio[1].kill9()
    m4 = Member("m4", "g-trio", "t-trio", brokers, path)
    who, at = wait_for([trio[0], m4], r'previous_owner="m2"', 600, since=t_kill)
    say(f"  m2's shards taken over by {who.name if who else None} {at - t_kill if at else float('nan'):.1f} s after the kill")
    for m in [trio[0], m4]:
        m.term()
finally:
    bp.terminate()
