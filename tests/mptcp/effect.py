#!/usr/bin/env python3
"""The effect benchmark (`scripts/bench.sh effect`, docs/benchmarks.md):
what a policy buys on two paths that differ the way WiFi and cellular do.

One workload (many downloads, a realistic size mix, Poisson arrivals, fixed
seed) runs over the two-path testbed (testbed.sh) with path A "WiFi-like" and
path B "cellular-like" (netem: more delay, loss, less rate), once per
configuration, in one run:

  tcp     plain TCP on path A
  mptcp   MPTCP, the kernel's default (every connection joins path B)
  policy  MPTCP + a quickstart-style short-flow policy applied by `emptcp watch`
  backup  MPTCP + path B kept as a backup (set_backup), made regular by packet copy
          once path A carried nothing for 300 ms (failover-backup.yaml)

  effect.py run --emptcp BIN [--seed N --conns N --rate PER_S]
      (root, on a kernel with netem: the guest of scripts/vm.sh) runs every
      configuration and prints one line "EFFECT-RESULT <json>"
  effect.py outage --emptcp BIN
      the same paths, a few long downloads, and path A failing (100 % loss
      both ways) in the middle of them for a while: how long each
      configuration's downloads stall, and what moves to path B. Prints
      "EFFECT-OUTAGE <json>"
  effect.py client --proto tcp|mptcp --workload FILE
      (inside the client namespace) runs the workload, prints a JSON list
  effect.py render RESULT.json --doc docs/benchmarks.md --svg docs/effect-fct.svg
      [--outage OUTAGE.json]
      tables, the plot and the targets; rewrites the generated part of the
      doc's "effect" section; exits 1 when a target is missed

Standard library only (the guest root has python3, nothing more).
"""
import argparse, contextlib, json, math, os, random, signal, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the worktree (read-only in the guest)
import mptcp_xfer as mx  # noqa: E402

TESTBED = os.path.join(HERE, "testbed.sh")
SERVER_A = "192.0.2.2"
PORT = 5201
B_PREFIX = "198.51.100."

# The two paths, each direction (netem at both veth ends, testbed.sh shape).
# A: WiFi-like, RTT 10 ms. B: cellular-like, RTT 50 ms (A + 40 ms), 1 % loss
# each way, 8 Mbit/s. Rates are scaled to what the emulated guest (QEMU TCG)
# carries without its own CPU becoming the bottleneck. The queue limits hold
# about 60-90 ms at the path's rate (a bottleneck buffer, not bufferbloat).
PATHS = {
    "A": ["delay=5ms", "jitter=1ms", "rate=20mbit", "limit=100"],
    "B": ["delay=25ms", "jitter=5ms", "loss=1%", "rate=8mbit", "limit=60"],
}

# Size classes: share of connections, size range (bytes). Short and medium
# sizes are log-uniform; long ones a bounded Pareto (alpha 1.2), the heavy
# tail, scaled from 50 MB down to 16 MB for the emulated guest. Medium
# flows end at 2 MB: "long" starts where a flow lasts long enough (about a
# second on A) for a second path to matter.
CLASSES = [
    ("short", 0.80, 2_000, 100_000),
    ("medium", 0.15, 100_000, 2_000_000),
    ("long", 0.05, 2_000_000, 16_000_000),
]
PARETO_ALPHA = 1.2

# quickstart.yaml (1 MiB / 4 MiB for tails of tens of MB) scaled, like the
# workload, by about 1/10: every short flow (< 100 KB) stays on path A; a flow
# that reaches 100 KiB gets the stored ADD_ADDR back and joins B.
# remove_below == recover_at so that an ADD_ADDR the server retransmits after
# the flow passed 100 KiB joins B too, and none before.
POLICY_SHORT = """version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: cli0, xdp_mode: native, chains: [short-flows-single-path]}
  - {name: cli1, xdp_mode: native, chains: [short-flows-single-path]}
chains:
  - name: short-flows-single-path
    match: {remote: [192.0.2.0/24, 198.51.100.0/24], remote_ports: [5201]}
    thresholds: {remove_below: 100KiB, recover_at: 100KiB}
    actions: [record_flow, strip_add_addr, recover_add_addr, count]
"""

# The control for the datapath's own cost: the same XDP programs attached
# the same way, but the chain matches no connection of the workload (port
# 9), so every packet crosses the entry program and nothing changes.
POLICY_HOOK = """version: 1
settings: {flow_capacity: 16384}
interfaces:
  - {name: cli0, xdp_mode: native, chains: [nothing]}
  - {name: cli1, xdp_mode: native, chains: [nothing]}
chains:
  - name: nothing
    match: {remote_ports: [9]}
    actions: [count]
"""

# The control of the outage: path B a backup as in (4), no packet copy. The
# kernel then moves a connection to B only once it declares A's subflow
# stale (net.mptcp.stale_loss_cnt retransmission intervals without
# progress) or A comes back.
POLICY_BACKUP_ONLY = """version: 1
interfaces:
  - name: cli1
    chains: [backup-b]
chains:
  - name: backup-b
    hook: egress
    match: {remote: [198.51.100.0/24], remote_ports: [5201]}
    actions:
      - set_backup: {backup: true}
"""

# The outage: downloads (start s, bytes) long enough to span it; path A
# blackholes (netem loss 100 % both ways, the rest of its shaping kept) at
# FAIL_AT s after the first started, for FAIL_FOR s, then comes back.
OUTAGE_DOWNLOADS = [(0.0, 10_000_000), (0.5, 10_000_000), (1.0, 10_000_000)]
FAIL_AT, FAIL_FOR = 2.5, 6.0
OUTAGE_CONFIGS = [
    ("tcp", "(1) plain TCP on path A", "tcp", None),
    ("mptcp", "(2) MPTCP, kernel default", "mptcp", None),
    ("backup", "(4) MPTCP + B backup, revived when A goes quiet", "mptcp", "backup"),
    ("backup-only", "(4c) MPTCP + B backup, no revival (control)", "mptcp", "backup-only"),
]

# (name, label, socket, policy); the control runs last so that (1)-(4) are
# measured as close together as possible.
CONFIGS = [
    ("tcp", "(1) plain TCP on path A", "tcp", None),
    ("mptcp", "(2) MPTCP, kernel default", "mptcp", None),
    ("policy", "(3) MPTCP + short-flow policy", "mptcp", "short"),
    ("backup", "(4) MPTCP + B backup, revived when A goes quiet", "mptcp", "backup"),
    ("hook", "(c) MPTCP + emptcp's XDP hook, no chain matching", "mptcp", "hook"),
]


def log(msg):
    print("effect: %s" % msg, file=sys.stderr, flush=True)


# --- workload -------------------------------------------------------------------
def draw_size(rng, name, lo, hi):
    u = rng.random()
    if name == "long":
        # bounded Pareto on [lo, hi] by inverting its CDF
        r = (lo / hi) ** PARETO_ALPHA
        return int(lo / (1 - u * (1 - r)) ** (1 / PARETO_ALPHA))
    return int(lo * (hi / lo) ** u)


def workload(seed, n, rate):
    """n connections: exact class shares (so every class has samples), sizes
    drawn per class, order shuffled, Poisson arrivals at `rate` per second."""
    rng = random.Random(seed)
    sizes = []
    for name, share, lo, hi in CLASSES:
        sizes += [draw_size(rng, name, lo, hi) for _ in range(round(n * share))]
    rng.shuffle(sizes)
    t, out = 0.0, []
    for i, size in enumerate(sizes):
        t += rng.expovariate(rate)
        out.append({"i": i, "at": round(t, 4), "size": size})
    return out


def size_class(size):
    return next((name for name, _, _, hi in CLASSES if size < hi), CLASSES[-1][0])


# --- client (inside the client namespace) -------------------------------------
def path_b(subflows):
    """Subflows on path B and what they carried: payload both ways, and the
    wire estimate payload + 66 bytes per segment (Ethernet 14 + IPv4 20 +
    TCP 20 + timestamps 12: options beyond that, e.g. DSS, are not counted)."""
    if not isinstance(subflows, list):
        return {"subflows": 0, "bytes": 0, "wire": 0}
    b = [d for d in subflows if d.get("local", "").startswith(B_PREFIX)]
    payload = sum(d.get("bytes_received", 0) + d.get("bytes_sent", 0) for d in b)
    segs = sum(d.get("segs_in", 0) + d.get("segs_out", 0) for d in b)
    return {"subflows": len(b), "bytes": payload, "wire": payload + 66 * segs}


STALL_MIN = 0.1  # s: a wait for data this long or longer is listed as a stall


def recv_timed(sock, n):
    """recv_pattern that also returns the waits for data of STALL_MIN or
    more: [(start on the monotonic clock, length)], in order."""
    off, bad, last, gaps = 0, None, time.monotonic(), []
    while off < n:
        buf = sock.recv(min(mx.CHUNK, n - off))
        now = time.monotonic()
        if now - last >= STALL_MIN:
            gaps.append((last, now - last))
        last = now
        if not buf:
            break
        if bad is None and buf != mx.pattern(off, len(buf)):
            exp = mx.pattern(off, len(buf))
            bad = off + next((i for i in range(len(buf)) if buf[i] != exp[i]), 0)
        off += len(buf)
    return off, bad, gaps


def one_connection(conn, proto, timeout, out, t_run=None):
    res = dict(conn)
    s = mx.socket.socket(mx.socket.AF_INET, mx.socket.SOCK_STREAM,
                         mx.IPPROTO_MPTCP if proto == "mptcp" else mx.socket.IPPROTO_TCP)
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        s.connect((SERVER_A, PORT))
        s.sendall(b"GET %d\n" % conn["size"])
        got, bad, gaps = recv_timed(s, conn["size"])
        res["fct"] = round(time.monotonic() - t0, 5)
        # On the run's clock (the outage driver's), the main workload's too.
        base = t_run if t_run is not None else t0
        res["stalls"] = [[round(at - base, 3), round(length, 3)] for at, length in gaps]
        res["ok"] = got == conn["size"] and bad is None
        if proto == "mptcp":
            res["fallback"] = bool(mx.mptcp_info(s).get("fallback", True))
            res["b"] = path_b(mx.subflow_tcpinfo(s))
        else:
            res["b"] = path_b([])
    except OSError as e:
        res["ok"], res["error"] = False, str(e)
    finally:
        s.close()
    out.append(res)


def client(a):
    with open(a.workload) as f:
        conns = json.load(f)
    out, threads = [], []
    t0 = time.monotonic()
    # The outage driver fails path A on this clock.
    print("effect-client: started", file=sys.stderr, flush=True)
    for c in conns:
        delay = t0 + c["at"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one_connection, args=(c, a.proto, a.timeout, out, t0), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(a.timeout + 5)
    late = [c["i"] for c in conns if c["i"] not in {r["i"] for r in out}]
    for i in late:
        out.append(dict(conns[i], ok=False, error="no result within the timeout"))
    print(json.dumps(sorted(out, key=lambda r: r["i"])), flush=True)
    return 0


# --- one configuration (guest, root) ------------------------------------------
def sh(args, env=None, check=True):
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r.stdout


class Lab:
    """A shaped testbed (fresh namespaces per configuration); down() also on failure."""

    def __init__(self, lab_id):
        self.env = dict(os.environ, LAB_ID=lab_id)
        self.cli, self.srv = "emptcp-cli" + lab_id, "emptcp-srv" + lab_id

    def tb(self, *args):
        return sh([TESTBED, *args], env=self.env)

    def up(self):
        self.tb("up")
        # The server computes its TCP checksums (no offload to the veth):
        # as on a real link, and emptcp's strip verifies a segment's
        # checksum before it stores an option (a partial one fails).
        self.tb("csum-offload", "off")
        for path, settings in PATHS.items():
            self.tb("shape", path, *settings)

    def down(self):
        sh([TESTBED, "down"], env=self.env, check=False)

    def counters(self, side):
        out = {}
        for line in self.tb("counters", side, "^(MPTcpExt|Tcp)").splitlines():
            k, v = line.split()
            out[k] = int(v)
        return out

    def link_bytes(self, dev):
        st = json.loads(sh(["ip", "-n", self.cli, "-s", "-j", "link", "show", "dev", dev]))[0]["stats64"]
        return st["rx"]["bytes"] + st["tx"]["bytes"]


def cpu_jiffies():
    """(busy, kernel) jiffies of all CPUs: busy = all but idle and iowait,
    kernel = system + irq + softirq (where the network stack runs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return sum(v) - idle - iowait, system + irq + softirq


class Daemon:
    """`emptcp watch` in the client namespace, on a private bpffs root."""

    def __init__(self, emptcp, lab, name, policy_file):
        self.emptcp, self.lab = emptcp, lab
        self.root = "/sys/fs/bpf/emptcp-effect-" + name
        self.state_dir = "/tmp/effect-state-" + name
        os.makedirs(self.state_dir, exist_ok=True)
        self.logf = open(os.path.join(self.state_dir, "watch.log"), "w")
        self.proc = subprocess.Popen(
            [emptcp, "--bpffs-root", self.root, "--netns", lab.cli, "watch", "-f", policy_file,
             "--state-dir", self.state_dir],
            stdout=self.logf, stderr=subprocess.STDOUT, env=dict(os.environ, EMPTCP_LOG="info"))

    def state(self):
        for n in os.listdir(self.state_dir):
            if n.startswith("watch-") and n.endswith(".json"):
                try:
                    with open(os.path.join(self.state_dir, n)) as f:
                        return json.load(f)
                except (OSError, ValueError):
                    return None
        return None

    def wait(self, pred, timeout):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            s = self.state()
            if s and s.get("pid") == self.proc.pid and pred(s):
                return round(time.monotonic() - t0, 2)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.logf.flush()
        with open(self.logf.name) as f:
            tail = f.read()[-3000:]
        raise RuntimeError("emptcp watch did not converge within %d s:\n%s" % (timeout, tail))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sh([self.emptcp, "--bpffs-root", self.root, "--netns", self.lab.cli, "destroy"], check=False)
        sh(["rm", "-rf", self.root], check=False)


class BackupWatch:
    """Samples the server's subflows on path B (`ss`, every 250 ms) while a
    configuration runs: which were seen with the backup flag the client
    asked for (ss flag B: the egress set_backup's MP_PRIO was received and
    acted on), and which of those were later seen without it (revived by
    packet copy's MP_PRIO). Subflows shorter than a sample are not seen."""

    def __init__(self, lab):
        self.lab, self.seen, self.stop_ = lab, {}, threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def sample(self):
        out = subprocess.run(["ip", "netns", "exec", self.lab.srv, "ss", "-tniH", "state", "established"],
                             capture_output=True, text=True).stdout
        key = None
        for line in out.splitlines():
            if not line[:1].isspace():
                cols = line.split()
                key = (cols[2], cols[3]) if len(cols) >= 4 and cols[2].startswith(B_PREFIX) else None
            elif key and "tcp-ulp-mptcp" in line:
                flags = next((w[6:] for w in line.split() if w.startswith("flags:")), "")
                st = self.seen.setdefault(key, {"backup": False, "revived": False})
                if "B" in flags:
                    st["backup"] = True
                elif st["backup"]:
                    st["revived"] = True

    def loop(self):
        while not self.stop_.wait(0.25):
            self.sample()

    def result(self):
        self.stop_.set()
        self.thread.join()
        v = self.seen.values()
        return {"seen": len(self.seen), "backup": sum(1 for x in v if x["backup"]),
                "revived": sum(1 for x in v if x["revived"])}


def start_policy(emptcp, lab, name, which):
    """The configuration's policy under `emptcp watch` (which also runs the
    recovery agent and the packet-copy task), converged before traffic."""
    if which == "backup":
        path = os.path.join(HERE, "../../examples/policies/failover-backup.yaml")
    else:
        path = "/tmp/effect-%s.yaml" % name
        with open(path, "w") as f:
            f.write({"short": POLICY_SHORT, "hook": POLICY_HOOK, "backup-only": POLICY_BACKUP_ONLY}[which])
    d = Daemon(emptcp, lab, name, path)
    ready = (lambda s: s["last_reconcile"] and s["last_reconcile"].get("converged") is True
             and all(r.get("armed") for r in s.get("packet_copy") or []))
    # the emulated CPU verifies the programs several times slower than the host
    d.converge_s = d.wait(ready, 180)
    return d


def snapshot(lab):
    """The counters a configuration's result is a difference of: both
    ends' MIB counters, the client's B and A veth bytes, CPU jiffies."""
    return {"cli": lab.counters("cli"), "srv": lab.counters("srv"), "b": lab.link_bytes("cli1"),
            "a": lab.link_bytes("cli0"), "cpu": cpu_jiffies(), "t": time.monotonic()}


def since(before, after):
    """A configuration's share of the counters: after - before."""
    delta = lambda side: {k: v - before[side].get(k, 0) for k, v in after[side].items() if v != before[side].get(k, 0)}
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "cli_counters": delta("cli"), "srv_counters": delta("srv"),
        "link_b_bytes": after["b"] - before["b"], "link_a_bytes": after["a"] - before["a"],
        "cpu_busy_s": (after["cpu"][0] - before["cpu"][0]) / hz,
        "cpu_kernel_s": (after["cpu"][1] - before["cpu"][1]) / hz,
        "wall_s": round(after["t"] - before["t"], 2),
    }


def measure(lab, proto, wfile, timeout):
    """Runs the client once; counters, link bytes and CPU around it."""
    before = snapshot(lab)
    out = sh(["ip", "netns", "exec", lab.cli, sys.executable, os.path.abspath(__file__), "client",
              "--proto", proto, "--workload", wfile, "--timeout", str(timeout)])
    return {"conns": json.loads(out), **since(before, snapshot(lab))}


@contextlib.contextmanager
def configured(a, lab_id, name, policy):
    """A fresh shaped testbed with the configuration's policy (if any)
    converged under `emptcp watch`; both torn down on the way out, also on
    failure. Yields (lab, daemon or None)."""
    lab = Lab(lab_id)
    lab.down()
    daemon = None
    try:
        lab.up()
        if policy:
            daemon = start_policy(a.emptcp, lab, name, policy)
        yield lab, daemon
    finally:
        if daemon:
            daemon.stop()
        lab.down()


def run_config(a, k, name, label, proto, policy, wfile):
    with configured(a, "-eff%d" % k, name, policy) as (lab, daemon):
        res = {"name": name, "label": label}
        if daemon:
            res["converge_s"] = daemon.converge_s
        log("%s: running %s" % (name, label))
        watch = BackupWatch(lab) if policy == "backup" else None
        res.update(measure(lab, proto, wfile, a.timeout))
        if watch:
            res["server_b_subflows"] = watch.result()
        if daemon:
            res["packet_copy"] = (daemon.state() or {}).get("packet_copy")
        return res


# --- the outage (guest, root) -----------------------------------------------------
def netem(settings):
    """tc's netem arguments for PATHS-style KEY=VAL settings (as testbed.sh)."""
    kv = dict(x.split("=", 1) for x in settings)
    out = ["delay", kv["delay"]] + ([kv["jitter"]] if "jitter" in kv else []) if "delay" in kv else []
    for k in ("loss", "rate", "limit"):
        if k in kv:
            out += [k, kv[k]]
    return out


def shape_a(lab, failed):
    """Path A as in PATHS, or blackholed (everything dropped both ways):
    its netem changed in place at both ends at once (testbed.sh `shape`
    also runs ethtool and takes seconds in the emulated guest). Returns
    (start, end) on the monotonic clock."""
    args = netem(PATHS["A"] + (["loss=100%"] if failed else []))
    t0 = time.monotonic()
    ps = [subprocess.Popen(["ip", "netns", "exec", ns, "tc", "qdisc", "change", "dev", dev, "root", "netem", *args])
          for ns, dev in ((lab.cli, "cli0"), (lab.srv, "srv0"))]
    if any(p.wait() != 0 for p in ps):
        raise RuntimeError("tc qdisc change on path A failed")
    return t0, time.monotonic()


def run_outage_config(a, k, name, label, proto, policy, wfile):
    """One configuration through the outage: the client starts the
    downloads, path A fails FAIL_AT s later and comes back FAIL_FOR s after
    that (both on the client's clock, which starts before its first
    connect)."""
    with configured(a, "-out%d" % k, "out-" + name, policy) as (lab, daemon):
        res = {"name": name, "label": label}
        log("outage: %s: running %s" % (name, label))
        before = snapshot(lab)
        cl = subprocess.Popen(["ip", "netns", "exec", lab.cli, sys.executable, os.path.abspath(__file__), "client",
                               "--proto", proto, "--workload", wfile, "--timeout", str(a.timeout)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = cl.stderr.readline()
            if "started" not in line:
                raise RuntimeError("the outage client did not start: %s" % line)
            t0 = time.monotonic()
            time.sleep(FAIL_AT)
            # From the start of the change to its end: when the outage
            # began and ended lies in between.
            res["fail"] = [round(x - t0, 3) for x in shape_a(lab, True)]
            time.sleep(max(0.0, t0 + res["fail"][1] + FAIL_FOR - time.monotonic()))
            res["restore"] = [round(x - t0, 3) for x in shape_a(lab, False)]
            out, err = cl.communicate(timeout=a.timeout + 30)
        finally:
            if cl.poll() is None:
                cl.kill()
                cl.wait()
        if cl.returncode != 0:
            raise RuntimeError("the outage client failed (%d): %s" % (cl.returncode, err[-2000:]))
        res.update({"conns": json.loads(out), **since(before, snapshot(lab))})
        if daemon:
            res["packet_copy"] = (daemon.state() or {}).get("packet_copy")
        return res


def run_outage(a):
    conns = [{"i": i, "at": at, "size": size} for i, (at, size) in enumerate(OUTAGE_DOWNLOADS)]
    wfile = "/tmp/effect-outage.json"
    with open(wfile, "w") as f:
        json.dump(conns, f)
    results = []
    for k, (name, label, proto, policy) in enumerate(OUTAGE_CONFIGS):
        t0 = time.monotonic()
        results.append(run_outage_config(a, k, name, label, proto, policy, wfile))
        log("outage: %s: done in %.0f s" % (name, time.monotonic() - t0))
    return {"downloads": OUTAGE_DOWNLOADS, "fail_at": FAIL_AT, "fail_for": FAIL_FOR, "configs": results}


def run(a):
    conns = workload(a.seed, a.conns, a.rate)
    wfile = "/tmp/effect-workload.json"
    with open(wfile, "w") as f:
        json.dump(conns, f)
    meta = {
        "kernel": os.uname().release, "cpus": os.cpu_count(), "seed": a.seed, "conns": a.conns,
        "rate_per_s": a.rate, "paths": PATHS, "policy_short": POLICY_SHORT,
        "classes": CLASSES, "pareto_alpha": PARETO_ALPHA,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    results = []
    only = set(a.only.split(",")) if a.only else None
    for k, (name, label, proto, policy) in enumerate(CONFIGS):
        if only and name not in only:
            continue
        t0 = time.monotonic()
        results.append(run_config(a, k, name, label, proto, policy, wfile))
        log("%s: done in %.0f s" % (name, time.monotonic() - t0))
    out = {"meta": meta, "configs": results}
    if not a.no_outage:
        out["outage"] = run_outage(a)
    print("EFFECT-RESULT " + json.dumps(out), flush=True)
    return 0


# --- render (host) ---------------------------------------------------------------
def quantile(xs, q):
    """Nearest-rank quantile (no interpolation: a value that was measured)."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(q * len(xs)) - 1)] if xs else float("nan")


def summarize(cfg):
    """Per size class: count, FCT p50/p99, goodput, path-B use."""
    out = {}
    for name, *_ in CLASSES:
        cs = [c for c in cfg["conns"] if size_class(c["size"]) == name and c.get("ok")]
        fct = [c["fct"] for c in cs]
        n = max(1, len(cs))
        out[name] = {
            "n": len(cs),
            "p50_ms": quantile(fct, 0.50) * 1000, "p99_ms": quantile(fct, 0.99) * 1000,
            "goodput_mbit": sum(c["size"] for c in cs) * 8 / max(1e-9, sum(fct)) / 1e6,
            "b_subflows": sum(c["b"]["subflows"] for c in cs) / n,
            "b_share_joined": sum(1 for c in cs if c["b"]["subflows"]) / n,
            "b_wire": sum(c["b"]["wire"] for c in cs) / n,
            "b_payload": sum(c["b"]["bytes"] for c in cs) / n,
        }
    good = sum(c["size"] for c in cfg["conns"] if c.get("ok"))
    out["failed"] = sum(1 for c in cfg["conns"] if not c.get("ok"))
    out["fallback"] = sum(1 for c in cfg["conns"] if c.get("fallback"))
    out["bytes"] = good
    out["cpu_busy_per_gb"] = cfg["cpu_busy_s"] / (good / 1e9) if good else float("nan")
    out["cpu_kernel_per_gb"] = cfg["cpu_kernel_s"] / (good / 1e9) if good else float("nan")
    return out


# Targets (justified in docs/benchmarks.md, "Effect"). The FCT margin: the
# policy adds nothing to a short flow's packets but its XDP pass, so a short
# flow should finish like plain TCP; 10 % is twice the 5 % target, for the
# XDP pass the emulated CPU pays on every packet (run-to-run noise in the
# guest is larger still: read several runs together).
SHORT_P50_MARGIN = 1.10
# The p99 target, as set (within 5 %): the 3rd slowest of 240 short flows is
# set by bursts and by the emulated CPU's stalls, so on a loaded host it
# misses by noise (docs/benchmarks.md: 2.56x and 1.69x there, 0.69x and
# 0.74x on a quiet one) and the command then fails: run it on a quiet host.
SHORT_P99_MARGIN = 1.05
SHORT_B_BYTES_SHARE = 0.10
LONG_GOODPUT_SHARE = 0.95


def targets(s):
    t = []

    def check(what, ok, detail):
        """ok None: reported only."""
        t.append((what, None if ok is None else bool(ok), detail))

    if "tcp" in s and "policy" in s:
        r = s["policy"]["short"]["p50_ms"] / s["tcp"]["short"]["p50_ms"]
        check("short flows: FCT p50 under the policy within %d %% of plain TCP on A" % round((SHORT_P50_MARGIN - 1) * 100),
              r <= SHORT_P50_MARGIN, "%.2f×" % r)
        r = s["policy"]["short"]["p99_ms"] / s["tcp"]["short"]["p99_ms"]
        check("short flows: FCT p99 under the policy within %d %% of plain TCP on A" % round((SHORT_P99_MARGIN - 1) * 100),
              r <= SHORT_P99_MARGIN, "%.2f×" % r)
    if "policy" in s:
        check("short flows: no subflow opened on B under the policy", s["policy"]["short"]["b_subflows"] == 0,
              "%.2f per connection" % s["policy"]["short"]["b_subflows"])
    if "mptcp" in s and "policy" in s:
        p, m = s["policy"]["short"]["b_wire"], s["mptcp"]["short"]["b_wire"]
        check("short flows: bytes on B under the policy at most %d %% of MPTCP's default" % round(SHORT_B_BYTES_SHARE * 100),
              m > 0 and p <= SHORT_B_BYTES_SHARE * m, "%.0f vs %.0f bytes per connection" % (p, m))
        g, gm = s["policy"]["long"]["goodput_mbit"], s["mptcp"]["long"]["goodput_mbit"]
        check("long flows: goodput under the policy at least %.2f× MPTCP's default" % LONG_GOODPUT_SHARE,
              g >= LONG_GOODPUT_SHARE * gm, "%.2f×" % (g / gm))
    for name, v in s.items():
        check("%s: every connection completed, data verified, no fallback" % name,
              v["failed"] == 0 and v["fallback"] == 0, "%d failed, %d fell back" % (v["failed"], v["fallback"]))
    return t


def outage_stall(conn, start, end):
    """The longest wait for data of a download that overlaps the outage
    [start, end] (0 if it never waited STALL_MIN there); None when the
    download had ended before the outage began."""
    if conn.get("ok") and conn["at"] + conn["fct"] < start:
        return None
    return max([length for at, length in conn.get("stalls", []) if at < end and at + length > start] or [0.0])


def outage_tables(o):
    """The outage's table and checks: (lines, targets)."""
    t, lines = [], []
    lines += ["| configuration | downloads completed | stall across the outage, each download (s) | "
              "FCT, each download (s) | bytes on path B (client's B veth) | packet copy: fired / sent |",
              "|---|---|---|---|---|---|"]
    stalls = {}
    for c in o["configs"]:
        cs = c["conns"]
        ok = [x for x in cs if x.get("ok")]
        fb = sum(1 for x in cs if x.get("fallback"))
        per = [outage_stall(x, c["fail"][0], c["restore"][1]) for x in cs]
        stalls[c["name"]] = max(v for v in per if v is not None) if any(v is not None for v in per) else 0.0
        pc = c.get("packet_copy") or []
        lines.append("| %s | %d of %d%s | %s | %s | %.1f MB | %s |" % (
            c["label"], len(ok), len(cs), " (%d fell back)" % fb if fb else "",
            " / ".join("ended before" if v is None else "%.2f" % v for v in per),
            " / ".join("%.1f" % x["fct"] if x.get("ok") else "failed" for x in cs),
            c["link_b_bytes"] / 1e6,
            " ".join("%d / %d" % (r.get("fired", 0), r.get("sent", 0)) for r in pc) or "-"))
        t.append(("outage, %s: every download completed, data verified, no fallback" % c["name"],
                  len(ok) == len(cs) and fb == 0, "%d of %d, %d fell back" % (len(ok), len(cs), fb)))
    if "tcp" in stalls:
        # The control that the outage took effect: plain TCP has nowhere to go.
        t.append(("outage took effect: plain TCP on A stalled at least %.0f %% of the outage" % 80,
                  stalls["tcp"] >= 0.8 * o["fail_for"], "%.2f s of %.1f s" % (stalls["tcp"], o["fail_for"])))
    if "backup" in stalls and "backup-only" in stalls:
        t.append(("outage: longest stall with the revival vs B backup without it",
                  None, "%.2f s vs %.2f s" % (stalls["backup"], stalls["backup-only"])))
    if "backup" in stalls and "mptcp" in stalls:
        t.append(("outage: longest stall with the revival vs MPTCP's default",
                  None, "%.2f s vs %.2f s" % (stalls["backup"], stalls["mptcp"])))
    return lines, t


def fmt(x, unit=""):
    return "n/a" if x != x else ("%.0f%s" % (x, unit) if x >= 100 else "%.1f%s" % (x, unit))


def tables(res, s, t):
    cfgs = res["configs"]
    lines = ["| configuration | " + " | ".join("%s FCT p50 / p99 (n)" % c for c, *_ in CLASSES) + " |",
             "|---|" + "---|" * len(CLASSES)]
    for c in cfgs:
        v = s[c["name"]]
        lines.append("| %s | " % c["label"] + " | ".join(
            "%s / %s ms (%d)" % (fmt(v[k]["p50_ms"]), fmt(v[k]["p99_ms"]), v[k]["n"]) for k, *_ in CLASSES) + " |")
    lines += ["", "| configuration | long-flow goodput | short flows on B: subflows / bytes per connection | "
              "medium | long | B link bytes (all) | joins (client MPJoinSynTx) | guest CPU s per GB (all / kernel) |",
              "|---|---|---|---|---|---|---|---|"]
    for c in cfgs:
        v = s[c["name"]]
        lines.append("| %s | %s Mbit/s | %.2f / %s | %.2f / %s | %.2f / %s | %.1f MB | %d | %s / %s |" % (
            c["label"], fmt(v["long"]["goodput_mbit"]),
            v["short"]["b_subflows"], fmt(v["short"]["b_wire"], " B"),
            v["medium"]["b_subflows"], fmt(v["medium"]["b_wire"], " B"),
            v["long"]["b_subflows"], fmt(v["long"]["b_wire"], " B"),
            c["link_b_bytes"] / 1e6, c["cli_counters"].get("MPTcpExtMPJoinSynTx", 0),
            fmt(v["cpu_busy_per_gb"]), fmt(v["cpu_kernel_per_gb"])))
    for c in cfgs:
        for r in c.get("packet_copy") or []:
            lines += ["", "%s: packet-copy rule `%s` fired %d, sent %d (%d failed), %d connections closed "
                      "before it fired; the server received %d MP_PRIO (the egress set_backup's and the "
                      "revivals)." % (c["label"], r.get("name"), r.get("fired", 0), r.get("sent", 0),
                                      r.get("send_failures", 0), r.get("closed_before_firing", 0),
                                      c["srv_counters"].get("MPTcpExtMPPrioRx", 0))]
        w = c.get("server_b_subflows")
        if w:
            lines += ["", "%s: of %d subflows on B the server's `ss` saw (sampled every 250 ms), %d were "
                      "backup (the client's MP_PRIO acted on) and %d of those later regular again (revived)."
                      % (c["label"], w["seen"], w["backup"], w["revived"])]
    lines += ["", "| target | result | measured |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % (w, {True: "met", False: "**MISSED**", None: "reported"}[ok], d) for w, ok, d in t]
    return "\n".join(lines)


COLORS = {"tcp": "#444444", "mptcp": "#d62728", "policy": "#1f77b4", "backup": "#2ca02c", "hook": "#ff7f0e"}


def svg(res):
    """CDF of FCT per size class (log x), one line per configuration."""
    W, H, PW, PH, L, T = 1280, 360, 280, 220, 50, 40
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>']
    for k, (cls, *_r) in enumerate(CLASSES):
        x0 = L + k * (PW + 40)
        fcts = {c["name"]: sorted(x["fct"] for x in c["conns"] if x.get("ok") and size_class(x["size"]) == cls)
                for c in res["configs"]}
        allv = [v for vs in fcts.values() for v in vs] or [1]
        lo, hi = math.log10(min(allv)), math.log10(max(allv))
        lo, hi = math.floor(lo), math.ceil(hi) if math.ceil(hi) > math.floor(lo) else math.floor(lo) + 1
        X = lambda v: x0 + (math.log10(v) - lo) / (hi - lo) * PW
        Y = lambda p: T + PH - p * PH
        out.append('<text x="%d" y="%d" font-size="13">%s flows: FCT CDF</text>' % (x0, T - 12, cls))
        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (x0, T, PW, PH))
        for e in range(lo, hi + 1):
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>' % (X(10 ** e), T, X(10 ** e), T + PH))
            out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (X(10 ** e), T + PH + 14, secs(10 ** e)))
        for p in (0.5, 0.99):
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd" stroke-dasharray="3,3"/>' % (x0, Y(p), x0 + PW, Y(p)))
            out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (x0 - 3, Y(p) + 4, "p%d" % round(p * 100)))
        for name, vs in fcts.items():
            pts = " ".join("%.1f,%.1f %.1f,%.1f" % (X(v), Y(i / len(vs)), X(v), Y((i + 1) / len(vs))) for i, v in enumerate(vs))
            out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>' % (pts, COLORS.get(name, "#000")))
    out += bars_b(res, L + len(CLASSES) * (PW + 40), T, PW, PH)
    for k, c in enumerate(res["configs"]):
        x, y = L + (k % 3) * 300, H - 42 + (k // 3) * 18
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>' % (x, y, x + 20, y, COLORS.get(c["name"], "#000")))
        out.append('<text x="%d" y="%d">%s</text>' % (x + 25, y + 4, c["label"]))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bars_b(res, x0, T, PW, PH):
    """Bytes on path B (the client's B veth, rx + tx) per configuration."""
    cfgs = res["configs"]
    top = max([c["link_b_bytes"] for c in cfgs] + [1]) / 1e6
    bh = PH / max(1, len(cfgs))
    out = ['<text x="%d" y="%d" font-size="13">bytes on path B (all connections)</text>' % (x0, T - 12),
           '<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (x0, T, PW, PH)]
    for k, c in enumerate(cfgs):
        mb = c["link_b_bytes"] / 1e6
        w = mb / top * (PW - 70)
        y = T + k * bh + bh * 0.2
        out.append('<rect x="%d" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (x0, y, w, bh * 0.6, COLORS.get(c["name"], "#000")))
        out.append('<text x="%.1f" y="%.1f">%.1f MB</text>' % (x0 + w + 4, y + bh * 0.4, mb))
    return out


def secs(v):
    return "%g s" % v if v >= 1 else "%g ms" % (v * 1000)


BEGIN, END = "<!-- effect:begin (generated by scripts/bench.sh effect) -->", "<!-- effect:end -->"


def render(a):
    with open(a.result) as f:
        res = json.load(f)
    s = {c["name"]: summarize(c) for c in res["configs"]}
    t = targets(s)
    m = res["meta"]
    o = res.get("outage")
    olines, ot = outage_tables(o) if o else ([], [])
    olines += ["", "| target | result | measured |", "|---|---|---|"] + [
        "| %s | %s | %s |" % (w, {True: "met", False: "**MISSED**", None: "reported"}[ok], d) for w, ok, d in ot]
    outage = [
        "",
        "**Path A failing mid-run.** %s downloads (%s MB, started %s s apart) in fresh namespaces per "
        "configuration; %.1f s after the first started, path A drops every packet both ways (netem loss "
        "100 %%, the rest of its shaping kept) for %.1f s, then comes back. A stall: the longest wait "
        "for data (%g s or more) of a download that overlaps the outage." % (
            len(o["downloads"]), "/".join("%g" % (b / 1e6) for _, b in o["downloads"]),
            "/".join("%g" % at for at, _ in o["downloads"]), o["fail_at"], o["fail_for"], STALL_MIN),
        "",
    ] + olines if o else []
    body = "\n".join([
        BEGIN,
        "Measured %s: guest kernel %s (%d vCPUs, QEMU TCG), seed %d, %d connections at %.1f per second; "
        "path A %s; path B %s (each direction)." % (
            m["date"], m["kernel"], m["cpus"], m["seed"], m["conns"], m["rate_per_s"],
            " ".join(m["paths"]["A"]), " ".join(m["paths"]["B"])) + (" Host: %s." % a.host if a.host else ""),
        "",
        tables(res, s, t),
        *outage,
        "",
        "![FCT CDF per size class; bytes on path B](%s)" % os.path.relpath(a.svg, os.path.dirname(a.doc)),
        END,
    ])
    with open(a.svg, "w") as f:
        f.write(svg(res))
    with open(a.doc) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit("%s has no generated effect section (%s ... %s)" % (a.doc, BEGIN, END))
    doc = doc[:doc.index(BEGIN)] + body + doc[doc.index(END) + len(END):]
    with open(a.doc, "w") as f:
        f.write(doc)
    print(body)
    missed = [w for w, ok, _ in t + ot if ok is False]
    for w in missed:
        print("effect: target missed: %s" % w, file=sys.stderr)
    return 1 if missed else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    pr = sub.add_parser("run")
    pr.add_argument("--emptcp", required=True)
    pr.add_argument("--seed", type=int, default=13)
    pr.add_argument("--conns", type=int, default=300)
    pr.add_argument("--rate", type=float, default=3.0, help="connection arrivals per second")
    pr.add_argument("--timeout", type=float, default=120.0, help="per connection, seconds")
    pr.add_argument("--only", help="comma-separated configurations (tcp,mptcp,policy,backup,hook); "
                    "'none' runs only the outage")
    pr.add_argument("--no-outage", action="store_true", help="skip the outage (path A failing mid-run)")
    pc = sub.add_parser("client")
    pc.add_argument("--proto", choices=["tcp", "mptcp"], required=True)
    pc.add_argument("--workload", required=True)
    pc.add_argument("--timeout", type=float, default=120.0)
    pd = sub.add_parser("render")
    pd.add_argument("result")
    pd.add_argument("--doc", required=True)
    pd.add_argument("--svg", required=True)
    pd.add_argument("--host", default="", help="the machine the guest ran on, for the doc")
    a = p.parse_args()
    return {"run": run, "client": client, "render": render}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
