#!/usr/bin/env python3
"""Chaos tests: an airssys cluster in containers on a docker network, a workload running
throughout (counter increments, account transfers and counter reads across components on
different nodes, sent through random nodes, and a keyed client that retries with
idempotency keys), and faults from a seeded schedule: kill -9 of the leader, of a follower, of
the owner of busy components (each restarted after a while), network partitions (one node cut
off, or the majority cut from one), `docker pause`, a rolling restart, an upgrade of a busy
component, network delay and loss (netem), an asymmetric partition (A does not hear B, B hears
A), a full disk on one node (a small tmpfs), and a jump of one node's wall clock (libfaketime).

Every increment carries a request id unique within the schedule (`inc ID`); the counter
component counts how many times each id was applied (`tally`). After healing it checks:
- exactly once per acknowledged request: every increment answered 200 was applied exactly
  once; at most once per unacknowledged one (an error, or no answer: it may or may not have
  been applied, but never twice); no id in a counter's tally that was never sent; the tally
  adds up to the count;
- the replies are consistent: no two acknowledged increments of a counter replied the same
  count, and no reply or read saw more than the final count (counts only grow);
- no stale reads observed by clients: a `get` sent after an increment was acknowledged with
  count N replies at least N;
- keyed: every increment the keyed client got a 200 for (after any number of retries with
  the same key, through any nodes) was applied exactly once, the others at most once; a key
  sent again with the same payload got the same reply; another payload under a used key was
  refused;
- the money in the accounts is constant;
- every request was answered (an HTTP answer, success or error, within its deadline);
- one activation per generation: no component ran on two nodes at once (each placement
  generation is activated on one node; failover and moves activate it elsewhere at the next
  generation);
- no workload thread died of an unexpected exception (a dead thread would quietly stop
  testing).

The judges are small pure functions; `self_test()` feeds each one a violation and a clean case,
and runs the workload against an in-memory fake cluster, at the start of every run (or alone,
without docker, with --self-test).

Each schedule ends with a table per fault kind: heal time (repair to healthy) and time to the
first 200 reply after the fault, max and p50.

Every run prints its seed and the command that reproduces it, and removes its containers,
network and volumes even when it fails.

Usage: python3 chaos-tests/chaos.py [--seed N] [--schedules K] [--faults F] [--nodes 3|5]
                                    [--settle] [--kinds K1,K2] [--summary-json FILE]
       python3 chaos-tests/chaos.py --self-test
       python3 chaos-tests/chaos.py --aggregate FILE...      (the soak table; chaos-tests/soak.sh)
"""
import argparse
import bisect
import collections
import email.utils
import errno
import glob
import hashlib
import json
import os
import pathlib
import random
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/airssys/target"))
BIN = TARGET / "release" / "airssys"
WASM = TARGET / "wasm32-wasip2" / "release"
REQUEST_TIMEOUT_MS = 3000
# The admin API answers a request within its timeout plus a grace; a client waits longer.
CLIENT_WAIT_S = REQUEST_TIMEOUT_MS / 1000 + 10
# The keyed client retries one increment (same key, any node) until this deadline.
KEYED_DEADLINE_S = 20.0
# Share of acknowledged keyed increments sent again (same key and payload: the same reply is
# due) and probed with another payload under the same key (a refusal, 422, is due).
REPLAY_SHARE = 0.2
PROBE_SHARE = 0.05
# Size of the tmpfs that holds one node's /data (the disk-full fault fills it).
SMALL_DISK_SIZE = "128m"
# libfaketime on this machine: deploy/docker/build.sh copies it into the image.
FAKETIME_ON_HOST = bool(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
# The tmpfs mount (disk full) and nsenter (delay and loss, asymmetric partition) need root.
ROOT_USER = os.geteuid() == 0


def needs_root(kind):
    """False (and says so) when the fault cannot run without root: it is then skipped."""
    if not ROOT_USER:
        log(f"{kind}: needs root on this machine (nsenter, mount); skipped")
    return ROOT_USER


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args, check=True, quiet=True):
    r = subprocess.run(args, capture_output=quiet, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed: {r.stderr or r.stdout}")
    return r


class Cluster:
    def __init__(self, nodes, project, port, small_disk=None, faketime=None):
        self.n = nodes
        self.project = project
        self.port = port
        self.env = dict(os.environ, AIRSSYS_COMPOSE_PROJECT=project, AIRSSYS_COMPOSE_PORT=str(port))
        # The node whose /data is a small tmpfs (disk full), and the one whose wall clock
        # can jump (libfaketime): see deploy/compose/up.sh.
        self.small_disk = small_disk
        self.faketime = faketime
        if small_disk:
            self.env["AIRSSYS_COMPOSE_SMALL_DISK"] = f"{small_disk}:{SMALL_DISK_SIZE}"
        if faketime:
            self.env["AIRSSYS_COMPOSE_FAKETIME_NODE"] = str(faketime)
        self.state = ROOT / "deploy" / "compose" / f"state-{project}"
        self.token = None
        self.ca = self.state / "ca" / "ca.pem"
        self.tls = None

    def up(self):
        subprocess.run([str(ROOT / "deploy/compose/up.sh"), str(self.n)], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        self.token = (self.state / "token").read_text().strip()
        # The nodes serve their admin API over HTTPS; trust only the cluster's CA.
        self.tls = ssl.create_default_context(cafile=str(self.ca))

    def down(self):
        subprocess.run([str(ROOT / "deploy/compose/down.sh"), str(self.n)], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def container(self, i):
        return f"{self.project}_node{i}_1"

    def network(self):
        return f"{self.project}_cluster"

    def endpoint(self, i):
        return f"https://127.0.0.1:{self.port + 10 * (i - 1)}"

    def call(self, i, method, path, body=None, timeout=CLIENT_WAIT_S, headers=None):
        """(status, body): 0 when the request got no answer in time, -1 when no node took it."""
        req = urllib.request.Request(self.endpoint(i) + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.tls) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (TimeoutError, OSError) as e:
            # A request that reached a node and then got no answer is what must not
            # happen; a node that cannot be reached at all (stopped, cut off) is not that.
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLCertVerificationError):
                # A certificate the cluster CA did not sign is a broken setup, not a fault.
                raise RuntimeError(f"TLS with node {i}: {reason}") from e
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                return 0, b""
            return -1, b""

    def request(self, i, name, text, timeout_ms=REQUEST_TIMEOUT_MS, key=None):
        """A request; with `key`, a durable one carrying that Idempotency-Key."""
        if key is None:
            return self.call(i, "POST", f"/v1/components/{name}/requests?timeout_ms={timeout_ms}", text.encode())
        return self.call(i, "POST", f"/v1/components/{name}/requests?timeout_ms={timeout_ms}&delivery=durable",
                         text.encode(), headers={"Idempotency-Key": key})

    def status(self, timeout=5):
        for i in range(1, self.n + 1):
            code, body = self.call(i, "GET", "/v1/cluster", timeout=timeout)
            if code == 200:
                s = json.loads(body)
                if s.get("leader"):
                    return s
        return None

    def cli(self, i, *args):
        return sh(str(BIN), *args, "--endpoint", self.endpoint(i), "--ca", str(self.ca), "--token", self.token)

    def logs(self, i):
        return sh("docker", "logs", self.container(i), check=False).stderr

    def inspect(self, i, template):
        return sh("docker", "inspect", "-f", template, self.container(i)).stdout.strip()

    def running(self, i):
        return self.inspect(i, "{{.State.Running}}") == "true"

    def netns(self, i, *cmd, check=True):
        """Runs a command of this machine (tc, iptables, ip) in node i's network namespace."""
        pid = self.inspect(i, "{{.State.Pid}}")
        if pid in ("", "0"):
            raise RuntimeError(f"node {i} is not running")
        return sh("nsenter", "-t", pid, "-n", *cmd, check=check)

    def interfaces(self, i):
        """Node i's network interfaces but lo (eth0 normally; a reconnect may name it eth1)."""
        names = [line.split(":")[1].strip().split("@")[0]
                 for line in self.netns(i, "ip", "-o", "link", "show").stdout.splitlines()]
        return [n for n in names if n and n != "lo"]

    def ip(self, i):
        return self.inspect(i, f'{{{{with index .NetworkSettings.Networks "{self.network()}"}}}}'
                               f'{{{{.IPAddress}}}}{{{{end}}}}')

    def clock_skew(self, i):
        """Node i's wall clock minus this machine's, from its HTTP `Date` header (whole
        seconds); None when it does not answer."""
        req = urllib.request.Request(self.endpoint(i) + "/readyz", method="GET")
        try:
            with urllib.request.urlopen(req, timeout=3, context=self.tls) as r:
                date = r.headers.get("Date")
        except urllib.error.HTTPError as e:
            date = e.headers.get("Date")
        except (TimeoutError, OSError):
            return None
        if not date:
            return None
        return email.utils.parsedate_to_datetime(date).timestamp() - time.time()


class Workload:
    """Increments, transfers and reads through random nodes until stopped, and a keyed client;
    records every outcome.

    Per counter: `acked`, the ids of the increments answered 200; `unsure`, the ids of the
    others (an error, or no answer); `acks`, (id, ack time, count replied) per acknowledged
    increment; `reads`, (send time, count replied) per `get` answered 200. Times are seconds
    of the monotonic clock since the workload started. A thread that dies of an exception is
    recorded in `crashes` as (thread name, traceback). `oks` holds (send time, answer time) of
    every request answered 200, for the time to the first reply after a fault.

    The keyed client sends increments with an Idempotency-Key (the key is also the
    increment's id) and retries each one (same key, a random node each time) on 503, 504 and
    no answer until KEYED_DEADLINE_S. Per counter: `kacked`, the keys that got a 200;
    `kunsure`, the others; `kacks` as `acks`; `replays`, (key, first reply, reply to the same
    key and payload sent again); `probes`, (key, probe id, status) of requests sent under a used
    key with another payload (`inc PROBE-ID`). `reused` lists 422 answers to an unchanged
    payload, `gaveup` the other final errors.
    """

    def __init__(self, cluster, rng, counters, accounts, tag="r"):
        self.c = cluster
        base = random.Random(rng.random())
        self.counters = counters
        self.accounts = accounts
        self.tag = tag  # prefix of the request ids: unique within a schedule
        self.acked = {c: set() for c in counters}
        self.unsure = {c: set() for c in counters}
        self.acks = {c: [] for c in counters}
        self.reads = {c: [] for c in counters}
        self.kacked = {c: set() for c in counters}
        self.kunsure = {c: set() for c in counters}
        self.kacks = {c: [] for c in counters}
        self.replays = {c: [] for c in counters}
        self.probes = {c: [] for c in counters}
        self.reused = []
        self.gaveup = []
        self.kretries = 0
        self.oks = []
        self.unanswered = []
        self.transfers = [0, 0]
        self.crashes = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        # One generator per thread: threads do not draw from a shared one.
        self.threads = [threading.Thread(target=self.guard, args=(body, random.Random(base.random())),
                                         name=body.__name__)
                        for body in (self.incs, self.moves, self.gets, self.keyed)]

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def now(self):
        return time.monotonic() - self.t0

    def node(self, rng):
        return rng.randint(1, self.c.n)

    def guard(self, body, rng):
        """Runs one thread's loop; an exception ends the thread and is kept for the judge."""
        try:
            body(rng)
        except BaseException:
            self.crashes.append((threading.current_thread().name, traceback.format_exc()))

    def incs(self, rng):
        k = 0
        while not self.stop.is_set():
            name = rng.choice(self.counters)
            k += 1
            rid = f"{self.tag}-{k}"
            # Unsure until acknowledged, so that a crash below leaves it unsure, not unknown.
            self.unsure[name].add(rid)
            sent = self.now()
            code, body = self.c.request(self.node(rng), name, f"inc {rid}")
            if code == 200:
                at = self.now()
                self.oks.append((sent, at))
                value = int(body)
                self.unsure[name].discard(rid)
                self.acked[name].add(rid)
                self.acks[name].append((rid, at, value))
            else:
                if code == 0:
                    self.unanswered.append(("inc", name, rid))
                time.sleep(0.05)

    def moves(self, rng):
        while not self.stop.is_set():
            a, b = rng.sample(self.accounts, 2)
            sent = self.now()
            code, _ = self.c.request(self.node(rng), a, f"transfer 1 {b}")
            if code == 200:
                self.oks.append((sent, self.now()))
            self.transfers[0 if code == 200 else 1] += 1
            if code == 0:
                self.unanswered.append(("transfer", a))
            if code != 200:
                time.sleep(0.05)

    def gets(self, rng):
        while not self.stop.is_set():
            name = rng.choice(self.counters)
            sent = self.now()
            code, body = self.c.request(self.node(rng), name, "get")
            if code == 200:
                self.oks.append((sent, self.now()))
                self.reads[name].append((sent, int(body)))
            else:
                if code == 0:
                    self.unanswered.append(("get", name))
                time.sleep(0.05)

    def keyed(self, rng):
        k = 0
        while not self.stop.is_set():
            name = rng.choice(self.counters)
            k += 1
            key = f"k-{self.tag}-{k}"
            self.kunsure[name].add(key)
            got = self.keyed_send(rng, name, key, f"inc {key}")
            if got is None:
                time.sleep(0.05)
                continue
            at, code, body = got
            if code != 200:
                continue
            value = int(body)
            self.kunsure[name].discard(key)
            self.kacked[name].add(key)
            self.kacks[name].append((key, at, value))
            if rng.random() < REPLAY_SHARE:
                again = self.keyed_send(rng, name, key, f"inc {key}")
                if again is not None and again[1] == 200:
                    self.replays[name].append((key, value, int(again[2])))
            if rng.random() < PROBE_SHARE:
                probe = f"{key}-probe"
                again = self.keyed_send(rng, name, key, f"inc {probe}", reuse_expected=True)
                self.probes[name].append((key, probe, again[1] if again else None))

    def keyed_send(self, rng, name, key, text, reuse_expected=False):
        """Sends `text` under `key` through random nodes until an answer that is not "try
        again" or the deadline: (answer time, status, body), or None at the deadline."""
        deadline = time.monotonic() + KEYED_DEADLINE_S
        attempt = 0
        while True:
            attempt += 1
            sent = self.now()
            code, body = self.c.request(self.node(rng), name, text, key=key)
            if code == 200:
                at = self.now()
                self.oks.append((sent, at))
                return at, code, body
            if code == 0:
                self.unanswered.append(("keyed inc", name, key))
            if code == 422 and not reuse_expected:
                self.reused.append((name, key, body[:200].decode(errors="replace")))
            if code not in (0, -1, 503, 504):
                if code != 422:
                    self.gaveup.append((name, key, code))
                return self.now(), code, body
            if time.monotonic() >= deadline:
                return None
            self.kretries += 1
            time.sleep(min(0.05 * 2 ** attempt, 0.5) * rng.uniform(0.5, 1.0))


def node_ids(c):
    return list(range(1, c.n + 1))


def leader(c):
    s = c.status()
    return s["leader"] if s else None


def owner_of_busiest(c, counters):
    s = c.status()
    if not s:
        return None
    owners = [x["owner"] for x in s["components"] if x["name"] in counters]
    return max(set(owners), key=owners.count) if owners else None


class FaultEvent:
    """One injected fault: its kind, when it was injected and repaired (seconds of the
    workload's clock), how long the cluster then took to heal (every voter alive, every node
    ready), or whether the next fault came first (`overlapped`), and notes on what it did."""

    def __init__(self, kind, w):
        self.kind = kind
        self.w = w
        self.injected = None
        self.repaired = None
        self.heal = None
        self.overlapped = False
        self.first_reply = None
        self.notes = []

    def inject(self):
        self.injected = self.w.now()

    def repair(self):
        self.repaired = self.w.now()

    def note(self, text):
        log(f"  {text}")
        self.notes.append(text)

    def summary(self):
        return {"kind": self.kind, "injected": self.injected, "repaired": self.repaired,
                "heal_s": self.heal, "overlapped": self.overlapped,
                "first_reply_s": self.first_reply, "notes": self.notes}


def fault_kill(c, rng, ev, who, pick):
    target = pick() or rng.choice(node_ids(c))
    log(f"kill -9 node {target} ({who}); restart after a pause")
    sh("docker", "kill", "-s", "KILL", c.container(target))
    ev.inject()
    time.sleep(rng.uniform(1.0, 3.0))
    sh("docker", "start", c.container(target))
    ev.repair()


def fault_partition(c, rng, ev, minority):
    target = rng.choice(node_ids(c))
    if minority:
        log(f"partition: node {target} cut off from the others")
        cut = [target]
    else:
        cut = [i for i in node_ids(c) if i != target]
        log(f"partition: nodes {cut} cut off (the majority), node {target} alone with the network")
    for i in cut:
        sh("docker", "network", "disconnect", c.network(), c.container(i))
    ev.inject()
    time.sleep(rng.uniform(2.0, 4.0))
    for i in cut:
        sh("docker", "network", "connect", "--alias", f"node{i}", c.network(), c.container(i))
    ev.repair()


def fault_pause(c, rng, ev):
    target = rng.choice(node_ids(c))
    log(f"docker pause node {target}")
    sh("docker", "pause", c.container(target))
    ev.inject()
    time.sleep(rng.uniform(1.0, 3.0))
    sh("docker", "unpause", c.container(target))
    ev.repair()


def fault_rolling_restart(c, rng, ev):
    log("rolling restart")
    ev.inject()
    for i in node_ids(c):
        sh("docker", "restart", "-t", "10", c.container(i))
        wait_healthy(c, 60)
    ev.repair()


NFQUEUE_NUM = 7


def fault_netem(c, rng, ev):
    """Delay (with jitter) and loss of what one node, or every node, sends (to its peers and
    its replies to clients), from this machine in the containers' network namespaces (the image
    has no tc). With netem when the kernel has it (`tc qdisc replace dev eth0 root netem delay
    … loss …` on every interface but lo); otherwise (a kernel without sch_netem) with an
    NFQUEUE rule on the node's OUTPUT and a helper process in its namespace (`chaos.py
    --nfqueue-delay`) that gives each packet its verdict after the delay, or drops it."""
    if not needs_root("delay and loss"):
        return
    targets = [rng.choice(node_ids(c))] if rng.random() < 0.5 else node_ids(c)
    delay, jitter = rng.choice([(50, 10), (100, 20), (200, 50)])
    loss = rng.choice([1, 5, 10])
    spec = ["delay", f"{delay}ms", f"{jitter}ms", "loss", f"{loss}%"]
    log(f"delay and loss on node(s) {targets}: {' '.join(spec)}")
    qdiscs, helpers = [], []
    rule = ["OUTPUT", "!", "-o", "lo", "-j", "NFQUEUE", "--queue-num", str(NFQUEUE_NUM), "--queue-bypass"]
    try:
        for i in targets:
            for dev in c.interfaces(i):
                r = c.netns(i, "tc", "qdisc", "replace", "dev", dev, "root", "netem", *spec, check=False)
                if r.returncode == 0:
                    qdiscs.append((i, dev))
                    continue
                if "unknown" not in (r.stderr + r.stdout).lower():
                    raise RuntimeError(f"tc netem on node {i}: {r.stderr.strip()}")
                # No netem in this kernel: the NFQUEUE helper, once per node.
                if any(h[0] == i for h in helpers):
                    continue
                pid = c.inspect(i, "{{.State.Pid}}")
                helper = subprocess.Popen(
                    ["nsenter", "-t", pid, "-n", sys.executable, str(pathlib.Path(__file__).resolve()),
                     "--nfqueue-delay", f"{NFQUEUE_NUM},{delay},{jitter},{loss},{rng.randrange(1 << 30)}"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                helpers.append((i, helper))
                ready = helper.stdout.readline().strip()
                if ready != "ready":
                    raise RuntimeError(f"the NFQUEUE helper in node {i}'s namespace: {ready} "
                                       f"{helper.stdout.read() if helper.poll() is not None else ''}")
                c.netns(i, "iptables", "-w", "-I", *rule)
        ev.inject()
        if qdiscs:
            i, dev = qdiscs[0]
            shown = c.netns(i, "tc", "qdisc", "show", "dev", dev, check=False).stdout.strip()
            ev.note(f"netem on {', '.join(f'node{i}:{d}' for i, d in qdiscs)}; node {i}: {shown}")
        if helpers:
            ev.note(f"no netem in this kernel: NFQUEUE delay/loss helper on node(s) {[i for i, _ in helpers]}")
        time.sleep(rng.uniform(3.0, 6.0))
    finally:
        for i, dev in qdiscs:
            # A node restarted meanwhile has a new namespace, without the qdisc: nothing to remove.
            c.netns(i, "tc", "qdisc", "del", "dev", dev, "root", check=False)
        for i, _ in helpers:
            try:
                c.netns(i, "iptables", "-w", "-D", *rule, check=False)
            except RuntimeError:
                pass  # not running: its namespace, and the rule, are gone
        if helpers:
            time.sleep((delay + jitter) / 1000 + 0.3)  # the packets still held get their verdict
        for i, helper in helpers:
            helper.terminate()
            try:
                out = helper.communicate(timeout=5)[0].strip()
            except subprocess.TimeoutExpired:
                helper.kill()
                out = helper.communicate()[0].strip()
            ev.note(f"node {i}'s helper: {out.splitlines()[-1] if out else '(no report)'}")
    ev.repair()


def nfqueue_delay(spec):
    """The NFQUEUE helper of the delay-and-loss fault, run in a node's network namespace: binds
    queue Q, and gives each packet queued there its verdict after DELAY ± JITTER ms (accept),
    or at once (drop) for LOSS% of them. Prints `ready` once bound; on SIGTERM, how many
    packets it delayed and dropped. Speaks nfnetlink_queue directly (no library)."""
    import heapq
    import select
    import signal
    import socket
    import struct
    queue, delay, jitter, loss, seed = (int(x) for x in spec.split(","))
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    sock.setsockopt(270, 5, 1)  # SOL_NETLINK, NETLINK_NO_ENOBUFS
    config, verdict_type, packet_type = (3 << 8) | 2, (3 << 8) | 1, (3 << 8) | 0

    def send(mtype, attrs, flags=1):  # NLM_F_REQUEST
        body = struct.pack("!BBH", 0, 0, queue)  # nfgenmsg: family, version, res_id (big endian)
        for atype, data in attrs:
            size = 4 + len(data)
            body += struct.pack("=HH", size, atype) + data + b"\0" * (-size % 4)
        sock.send(struct.pack("=IHHII", 16 + len(body), mtype, flags, 0, 0) + body)

    send(config, [(1, struct.pack("!BBH", 1, 0, socket.AF_INET))])  # NFQA_CFG_CMD: bind
    send(config, [(2, struct.pack("!IB", 0, 1))])  # NFQA_CFG_PARAMS: copy metadata only
    send(config, [(3, struct.pack("!I", 20000))])  # NFQA_CFG_QUEUE_MAXLEN
    send(config, [(4, struct.pack("!I", 1)), (5, struct.pack("!I", 1))])  # flags: fail open
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    held, delayed, dropped = [], 0, 0
    while not stop:
        wait = max(0.0, min(0.1, held[0][0] - time.monotonic())) if held else 0.1
        try:
            readable = select.select([sock], [], [], wait)[0]
        except InterruptedError:
            continue
        while readable:
            try:
                data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            at = 0
            while at + 16 <= len(data):
                size, mtype = struct.unpack_from("=IH", data, at)
                if mtype == packet_type:
                    a = at + 20
                    while a + 4 <= at + size:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if atype & 0x7FFF == 1:  # NFQA_PACKET_HDR
                            pid = struct.unpack_from("!I", data, a + 4)[0]
                            if rng.random() * 100 < loss:
                                send(verdict_type, [(2, struct.pack("!II", 0, pid))])  # NF_DROP
                                dropped += 1
                            else:
                                due = time.monotonic() + max(0, rng.uniform(delay - jitter, delay + jitter)) / 1000
                                heapq.heappush(held, (due, pid))
                            break
                        a += (alen + 3) & ~3
                at += (size + 3) & ~3 if size else len(data)
        now = time.monotonic()
        while held and held[0][0] <= now:
            send(verdict_type, [(2, struct.pack("!II", 1, heapq.heappop(held)[1]))])  # NF_ACCEPT
            delayed += 1
    for _, pid in held:
        send(verdict_type, [(2, struct.pack("!II", 1, pid))])
    print(f"{delayed + len(held)} packets delayed, {dropped} dropped", flush=True)


def fault_asymmetric(c, rng, ev):
    """Node A stops hearing node B (A's firewall drops what comes from B's address) while B
    still hears A; healed by removing the rule. One of the two is the leader when known."""
    if not needs_root("asymmetric partition"):
        return
    ids = node_ids(c)
    lead = leader(c)
    if lead and rng.random() < 0.5:
        a = lead
        b = rng.choice([i for i in ids if i != a])
    else:
        a, b = rng.sample(ids, 2)
    src = c.ip(b)
    if not src:
        log(f"asymmetric partition: node {b} has no address on {c.network()}; skipped")
        return
    rule = ["INPUT", "-s", src, "-j", "DROP"]
    log(f"asymmetric partition: node {a} no longer hears node {b} ({src}); node {b} still hears "
        f"node {a} (leader {lead})")
    c.netns(a, "iptables", "-w", "-I", *rule)
    try:
        ev.inject()
        shown = c.netns(a, "iptables", "-w", "-S", "INPUT", check=False).stdout.strip().replace("\n", "; ")
        ev.note(f"node {a} INPUT rules: {shown}")
        time.sleep(rng.uniform(3.0, 6.0))
    finally:
        try:
            c.netns(a, "iptables", "-w", "-D", *rule, check=False)
        except RuntimeError:
            pass  # not running: its namespace, and the rule, are gone
    ev.repair()


def fault_disk_full(c, rng, ev):
    """Fills the small tmpfs that holds one node's /data (up.sh mounts it on this machine),
    holds it full a while, and frees it. The node may refuse writes meanwhile; a node that
    exits is started again (as its supervisor would), which the notes say."""
    if not needs_root("disk full"):
        return
    i = c.small_disk
    disk = c.state / f"disk-{i}"
    log(f"disk full: filling node {i}'s /data ({SMALL_DISK_SIZE} tmpfs)")
    fill = disk / "chaos-fill"
    written = 0
    chunk = b"\0" * (1 << 20)
    try:
        with open(fill, "wb", buffering=0) as f:
            try:
                while True:
                    written += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        ev.inject()
        st = os.statvfs(disk)
        ev.note(f"wrote {written >> 20} MiB; {st.f_bavail * st.f_frsize >> 10} KiB left on node {i}'s /data")
        time.sleep(rng.uniform(3.0, 6.0))
    finally:
        fill.unlink(missing_ok=True)
    if not c.running(i):
        code = c.inspect(i, "{{.State.ExitCode}}")
        last = (c.logs(i).strip().splitlines() or ["(no log)"])[-1]
        ev.note(f"node {i} exited (code {code}) while its disk was full; starting it again. "
                f"Last log line: {last[-300:]}")
        sh("docker", "start", c.container(i))
    ev.repair()


def fault_clock_jump(c, rng, ev):
    """Jumps one node's wall clock forward (libfaketime, its offset file on this machine),
    holds it a while, and jumps it back (a backward jump of the same size). Its monotonic
    clock, which its timers use, is not touched. The node's HTTP `Date` header shows whether
    the jump took."""
    i = c.faketime
    if not i:
        log("clock jump: libfaketime is not in the image (scripts/setup.sh installs it); skipped")
        return
    jump = rng.choice([30, 120, 600])
    clock = c.state / f"clock-{i}" / "faketime"
    log(f"clock jump: node {i}'s wall clock +{jump} s")
    clock.write_text(f"+{jump}\n")
    try:
        clock_jumped(c, rng, ev, i, jump)
    finally:
        clock.write_text("+0\n")
    time.sleep(1.5)
    ev.repair()
    skew = c.clock_skew(i)
    # hyper refreshes its cached Date only once the wall clock passes the cached second + 1,
    # so after the backward jump the header stays ahead until then: no evidence either way.
    ev.note(f"jumped back; node {i}'s Date header is {'?' if skew is None else f'{skew:+.0f}'} s off "
            f"(a Date cached before a backward jump lags until the clock catches up)")


def clock_jumped(c, rng, ev, i, jump):
    """The clock jump's hold: shows that the node's clock moved, then waits."""
    ev.inject()
    # libfaketime reads the file again at most once a second, and hyper refreshes its cached
    # Date once a second: the jump shows in the header within about two seconds.
    skew, deadline = None, time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.5)
        skew = c.clock_skew(i)
        if skew is not None and skew > jump - 5:
            break
    ev.note(f"node {i}'s Date header is {'?' if skew is None else f'{skew:+.0f}'} s off this machine's "
            f"{ev.w.now() - ev.injected:.1f} s after the jump")
    time.sleep(rng.uniform(2.0, 5.0))


def counter_variant():
    """counter.wasm with one custom section more: the same code under another digest, so an
    upgrade between the two is a real switch (migration, one Raft entry, generation + 1)."""
    path = pathlib.Path(tempfile.gettempdir()) / "airssys-chaos-counter-variant.wasm"
    if not path.exists():
        name = b"airssys-chaos-variant"
        payload = bytes([len(name)]) + name + b"same code, another digest"
        path.write_bytes((WASM / "counter.wasm").read_bytes() + b"\x00" + bytes([len(payload)]) + payload)
    return path


def fault_upgrade_busy(c, rng, w, ev):
    """Upgrades the counter with the most acknowledged increments so far, through a random
    node, to whichever of the two builds it does not run; the workload keeps incrementing it.
    A refusal (its owner is down, a move overtook it) is fine: the judges check that nothing
    was lost or doubled either way."""
    s = c.status()
    name = max(w.counters, key=lambda n: len(w.acked[n]))
    via = rng.choice(node_ids(c))
    info = sh(str(BIN), "component", "describe", name, "--json", "--endpoint", c.endpoint(via),
              "--ca", str(c.ca), "--token", c.token, check=False)
    if info.returncode != 0:
        log(f"upgrade {name}: node {via} cannot describe it now ({info.stderr.strip()}); skipped")
        return
    running = json.loads(info.stdout)["sha256"]
    variant = counter_variant()
    target = WASM / "counter.wasm" if running == sha256_file(variant) else variant
    log(f"upgrade {name} (leader {s['leader'] if s else '?'}) through node {via} to {target.name}")
    ev.inject()
    r = sh(str(BIN), "component", "upgrade", name, str(target), "--endpoint", c.endpoint(via),
           "--ca", str(c.ca), "--token", c.token, check=False)
    log(f"  upgrade of {name}: " + ("done" if r.returncode == 0 else f"refused: {r.stderr.strip()}"))


def sha256_file(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


FAULTS = [
    ("kill the leader", lambda c, rng, w, ev: fault_kill(c, rng, ev, "leader", lambda: leader(c))),
    ("kill a follower", lambda c, rng, w, ev: fault_kill(
        c, rng, ev, "follower", lambda: rng.choice([i for i in node_ids(c) if i != leader(c)] or [1]))),
    ("kill the busiest owner", lambda c, rng, w, ev: fault_kill(
        c, rng, ev, "owner of busy counters", lambda: owner_of_busiest(c, w.counters))),
    ("minority partition", lambda c, rng, w, ev: fault_partition(c, rng, ev, True)),
    ("majority partition", lambda c, rng, w, ev: fault_partition(c, rng, ev, False)),
    ("pause", lambda c, rng, w, ev: fault_pause(c, rng, ev)),
    ("rolling restart", lambda c, rng, w, ev: fault_rolling_restart(c, rng, ev)),
    ("upgrade a busy component", lambda c, rng, w, ev: fault_upgrade_busy(c, rng, w, ev)),
    ("network delay and loss", lambda c, rng, w, ev: fault_netem(c, rng, ev)),
    ("asymmetric partition", lambda c, rng, w, ev: fault_asymmetric(c, rng, ev)),
    ("disk full", lambda c, rng, w, ev: fault_disk_full(c, rng, ev)),
    ("clock jump", lambda c, rng, w, ev: fault_clock_jump(c, rng, ev)),
]


def is_healthy(c):
    """Every voter alive and every node ready, asked with short timeouts."""
    s = c.status(timeout=2)
    if not s or sum(1 for n in s["nodes"] if n["voter"] and n["alive"]) != c.n:
        return False
    return all(c.call(i, "GET", "/readyz", timeout=2)[0] == 200 for i in node_ids(c))


def settle(c, w, ev, gap, wait, limit=60.0):
    """The pause before the next fault, `gap` seconds, during which the previous fault's heal
    time is measured: the time from its repair until the cluster was seen healthy. Without
    `wait` the next fault comes after `gap` whatever the cluster's state (the heal of a
    fault still healing is then `overlapped`); with it, the pause waits for the heal first
    (at most `limit` s) and then lasts `gap`."""
    start = time.monotonic()
    if ev is not None and ev.repaired is not None and ev.heal is None and not ev.overlapped:
        while True:
            if is_healthy(c):
                ev.heal = max(0.0, w.now() - ev.repaired)
                break
            elapsed = time.monotonic() - start
            if not wait and elapsed >= gap:
                ev.overlapped = True
                break
            if elapsed >= limit:
                ev.note(f"the cluster did not heal within {limit:.0f} s of the repair")
                break
            time.sleep(0.2)
    time.sleep(gap if wait else max(0.0, gap - (time.monotonic() - start)))


def wait_healthy(c, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        s = c.status()
        if s and sum(1 for n in s["nodes"] if n["voter"] and n["alive"]) == c.n:
            if all(c.call(i, "GET", "/readyz", timeout=3)[0] == 200 for i in node_ids(c)):
                return
        time.sleep(0.5)
    s = c.status()
    dead = [n["id"] for n in s["nodes"] if not (n["voter"] and n["alive"])] if s else "? (no leader)"
    unready = [i for i in node_ids(c) if c.call(i, "GET", "/readyz", timeout=3)[0] != 200]
    raise AssertionError(f"the cluster did not heal within {limit} s (not alive voters: {dead}; "
                         f"not ready: {unready})")


def read_reply(c, name, what):
    """The body of the first 200 answer to `what`, trying every node in turn for 60 s."""
    deadline = time.time() + 60
    while time.time() < deadline:
        for i in node_ids(c):
            code, body = c.request(i, name, what)
            if code == 200:
                return body
        time.sleep(0.5)
    raise AssertionError(f"{name} did not answer {what!r} after healing")


def read_value(c, name, what):
    return int(read_reply(c, name, what))


def parse_tally(text):
    """The counter's `tally` reply (one line `ID N` per request id) as {id: N}."""
    tally = {}
    for line in text.splitlines():
        if line.strip():
            rid, n = line.split()
            tally[rid] = int(n)
    return tally


def read_counter(c, name):
    """(count, tally) of a counter. A request still in flight inside the cluster may land
    between the reads: read until a tally falls between two equal counts, or 30 s passed."""
    deadline = time.time() + 30
    while True:
        final = read_value(c, name, "get")
        tally = parse_tally(read_reply(c, name, "tally").decode())
        if (sum(tally.values()) == final and read_value(c, name, "get") == final) or time.time() > deadline:
            return final, tally
        time.sleep(0.5)


def id_order(rid):
    """Request ids `PREFIX-K` in the order they were sent (K numerically)."""
    head, _, k = rid.rpartition("-")
    return (head, int(k)) if k.isdigit() else (rid, -1)


def examples(items, shown=5):
    items = list(items)
    return ", ".join(map(str, items[:shown])) + (", …" if len(items) > shown else "")


def request_problems(name, tally, acked, unsure, final, others=frozenset()):
    """Exactly once per acknowledged request, at most once per unacknowledged one, no
    request applied that was never sent, and the per-request tally adds up to the count.
    `others`: ids another judge answers for (the keyed client's)."""
    problems = []

    def report(what, ids):
        if ids:
            ids = sorted(ids, key=id_order)
            problems.append(f"{name}: {len(ids)} {what}: "
                            + examples(f"{i} applied {tally.get(i, 0)}x" for i in ids))

    report("acknowledged requests lost", [i for i in acked if tally.get(i, 0) < 1])
    report("acknowledged requests applied more than once", [i for i in acked if tally.get(i, 0) > 1])
    report("unacknowledged requests applied more than once", [i for i in unsure if tally.get(i, 0) > 1])
    report("requests in the tally that were never sent",
           [i for i in tally if i not in acked and i not in unsure and i not in others])
    total = sum(tally.values())
    if total != final:
        problems.append(f"{name}: the count is {final} but the requests' tally adds up to {total}")
    return problems


def reply_problems(name, acks, reads, final):
    """Each application of an increment adds one, so two acknowledged increments never reply
    the same count; and counts only grow, so nothing replied more than the final count."""
    problems = []
    by_value = collections.defaultdict(list)
    for rid, _, value in acks:
        by_value[value].append(rid)
    same = sorted((v, sorted(ids, key=id_order)) for v, ids in by_value.items() if len(ids) > 1)
    if same:
        problems.append(f"{name}: {len(same)} counts were replied to more than one acknowledged "
                        f"increment: " + examples(f"{v} to {' and '.join(ids)}" for v, ids in same))
    above = sorted(((rid, value) for rid, _, value in acks if value > final), key=lambda a: id_order(a[0]))
    if above:
        problems.append(f"{name}: {len(above)} acknowledged increments replied more than the final "
                        f"count {final}: " + examples(f"{rid} replied {v}" for rid, v in above))
    seen = sorted((sent, value) for sent, value in reads if value > final)
    if seen:
        problems.append(f"{name}: {len(seen)} reads returned more than the final count {final} "
                        f"(a count that later went back): "
                        + examples(f"get sent at {t:.3f} s returned {v}" for t, v in seen))
    return problems


def stale_read_problems(name, reads, acks):
    """A read sent at time t that replied v is stale when an increment of the same counter was
    acknowledged strictly before t with a count above v: counts only grow, and what a client
    was told was done must be visible to every later request."""
    acks = sorted(acks, key=lambda a: a[1])
    times = [at for _, at, _ in acks]
    highest = []  # highest[k]: the acknowledgement with the highest count among acks[:k + 1]
    for a in acks:
        highest.append(a if not highest or a[2] > highest[-1][2] else highest[-1])
    stale = []
    for sent, value in reads:
        k = bisect.bisect_left(times, sent)  # acks[:k] were acknowledged strictly before `sent`
        if k and highest[k - 1][2] > value:
            stale.append((sent, value, highest[k - 1]))
    if not stale:
        return []
    stale.sort()
    return [f"{name}: {len(stale)} stale reads (of {len(reads)}): " + examples(
        (f"get sent at {sent:.3f} s returned {value}, but {rid} had been acknowledged at "
         f"{at:.3f} s with {v} ({v - value} behind)" for sent, value, (rid, at, v) in stale), shown=3)]


def keyed_problems(name, tally, acked, unsure, replays=(), probes=(), reused=()):
    """The keyed client's increments (the key is the increment's id): every key that got a
    200 was applied exactly once, however many times it was retried and through whichever
    nodes; a key that never got one (the client's deadline passed, or a final error) was
    applied at most once; a key sent again with the same payload got the same reply; a
    request under a used key with another payload was refused (never a 200, never applied);
    and an unchanged payload was never refused as a reused key (422)."""
    problems = []

    def report(what, keys):
        if keys:
            keys = sorted(keys, key=id_order)
            problems.append(f"{name}: {len(keys)} {what}: "
                            + examples(f"{k} applied {tally.get(k, 0)}x" for k in keys))

    report("keyed increments answered 200 but lost", [k for k in acked if tally.get(k, 0) < 1])
    report("keyed increments answered 200 but applied more than once",
           [k for k in acked if tally.get(k, 0) > 1])
    report("keyed increments never answered 200 but applied more than once",
           [k for k in unsure if tally.get(k, 0) > 1])
    differ = [(k, first, again) for k, first, again in replays if first != again]
    if differ:
        problems.append(f"{name}: {len(differ)} keyed increments sent again with the same key and "
                        f"payload got another reply: "
                        + examples(f"{k} replied {a} then {b}" for k, a, b in differ))
    accepted = [(k, p) for k, p, code in probes if code == 200 or tally.get(p, 0)]
    if accepted:
        problems.append(f"{name}: {len(accepted)} requests under a used key with another payload were "
                        f"accepted: " + examples(f"{p} under {k} answered 200 or applied "
                                                 f"{tally.get(p, 0)}x" for k, p in accepted))
    mine = [(k, body) for n, k, body in reused if n == name]
    if mine:
        problems.append(f"{name}: {len(mine)} keyed increments refused as a reused key although the "
                        f"payload was the same: " + examples(f"{k}: {body}" for k, body in mine))
    return problems


def first_reply_after(oks, t):
    """Seconds from `t` to the first 200 answer to a request sent at `t` or later; `oks` is
    (send time, answer time) pairs sorted by send time. None when no such answer came."""
    k = bisect.bisect_left(oks, (t, float("-inf")))
    answers = [at for _, at in oks[k:]]
    return (min(answers) - t) if answers else None


def percentile(values, q):
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    values = sorted(values)
    if not values:
        return None
    return values[max(0, min(len(values) - 1, -(-len(values) * q // 100) - 1))]


def seconds(v):
    return "-" if v is None else f"{v:.2f}"


def fault_table(events):
    """Per fault kind: how many, the heal time (repair to healthy) max and p50, how many
    overlapped the next fault before healing, and the time to the first reply max and p50."""
    rows = [f"{'fault':26} {'n':>3} {'heal max':>9} {'heal p50':>9} {'overlap':>7} "
            f"{'1st reply max':>13} {'1st reply p50':>13}"]
    by_kind = collections.defaultdict(list)
    for e in events:
        by_kind[e["kind"]].append(e)
    for kind in sorted(by_kind):
        es = by_kind[kind]
        heals = [e["heal_s"] for e in es if e["heal_s"] is not None]
        firsts = [e["first_reply_s"] for e in es if e["first_reply_s"] is not None]
        rows.append(f"{kind:26} {len(es):3} {seconds(max(heals, default=None)):>9} "
                    f"{seconds(percentile(heals, 50)):>9} {sum(e['overlapped'] for e in es):7} "
                    f"{seconds(max(firsts, default=None)):>13} {seconds(percentile(firsts, 50)):>13}")
    return "\n".join(rows)


def aggregate(schedules):
    """The soak's table, from the summaries of many schedules (chaos.py --summary-json)."""
    out = []
    failed = [s for s in schedules if not s["ok"]]
    by_nodes = collections.Counter(s["nodes"] for s in schedules)
    out.append(f"schedules: {len(schedules)} ("
               + ", ".join(f"{n} nodes: {k}" for n, k in sorted(by_nodes.items()))
               + f"); failed: {len(failed)}")
    out.append("")
    out.append(f"{'fault':26} {'n':>4} {'in failed':>9} {'overlap':>7} {'heal p50':>9} {'heal p99':>9} "
               f"{'1st p50':>8} {'1st p99':>8} {'1st max':>8}")
    kinds = collections.defaultdict(list)
    failing_kinds = collections.Counter()
    for s in schedules:
        for e in s["events"]:
            kinds[e["kind"]].append(e)
            if not s["ok"]:
                failing_kinds[e["kind"]] += 1
    for kind in sorted(kinds):
        es = kinds[kind]
        heals = [e["heal_s"] for e in es if e["heal_s"] is not None]
        firsts = [e["first_reply_s"] for e in es if e["first_reply_s"] is not None]
        out.append(f"{kind:26} {len(es):4} {failing_kinds[kind]:9} {sum(e['overlapped'] for e in es):7} "
                   f"{seconds(percentile(heals, 50)):>9} {seconds(percentile(heals, 99)):>9} "
                   f"{seconds(percentile(firsts, 50)):>8} {seconds(percentile(firsts, 99)):>8} "
                   f"{seconds(max(firsts, default=None)):>8}")
    out.append("")
    out.append(f"{'invariant':40} {'schedules violating':>19}")
    violated = collections.Counter(j for s in schedules for j, msgs in s["violations"].items() if msgs)
    for judge in JUDGES + sorted(set(violated) - set(JUDGES)):
        out.append(f"{judge:40} {violated[judge]:19}")
    if failed:
        out.append("")
        out.append("failing seeds:")
        for s in failed:
            first = next((f"{j}: {m[0]}" for j, m in s["violations"].items() if m), "?")
            out.append(f"  seed {s['seed']} ({s['nodes']} nodes): {first.splitlines()[0][:160]}")
            out.append(f"    {s['reproduce']}")
    return "\n".join(out)


def money_problems(money, expected):
    """Transfers move money between accounts; none is created or lost."""
    if money == expected:
        return []
    return [f"money not conserved: the balances add up to {money}, not {expected} ({money - expected:+d})"]


def unanswered_problems(unanswered):
    """Every request that reached a node got an HTTP answer (success or error) in time."""
    if not unanswered:
        return []
    return [f"{len(unanswered)} requests got no answer at all: {examples(unanswered)}"]


def thread_problems(crashes):
    """A workload thread that died stopped testing: the run must fail, not pass quietly."""
    return [f"workload thread {name} died: {tb.strip().splitlines()[-1]}\n{tb.rstrip()}"
            for name, tb in crashes]


def activation_problems(name, logs_by_node):
    """A component may run on several nodes in turn (failover, moves), each time at a new
    placement generation; two nodes activating it at the same generation is a split brain."""
    # One log line each, fields in any order after the message. The message must be the
    # word `activated` itself (not `deactivated`), and nothing may match across lines: an
    # earlier pattern let "deactivated component=c3" borrow the next line's generation.
    pattern = re.compile(
        rf"(?:^|[\s:])activated[ \t][^\n]*?\bcomponent={re.escape(name)}(?=[ \t]|$)"
        rf"[^\n]*?\bgeneration=(\d+)", re.M)
    nodes_by_generation = {}
    for node, text in logs_by_node.items():
        for m in pattern.finditer(text):
            nodes_by_generation.setdefault(int(m.group(1)), set()).add(node)
    if not nodes_by_generation:
        # Every component is activated at least once (on install): seeing none means the log
        # format changed under the judge, which would otherwise pass everything.
        return [f"no activation of {name} found in any node's log"]
    return [f"{name} was activated at generation {g} on nodes {sorted(where)}"
            for g, where in sorted(nodes_by_generation.items()) if len(where) > 1]


class FakeCluster:
    """In memory, for the self-test: counters and accounts that answer at once, one request at
    a time. A seeded tenth of the requests fail before being applied (503) and another tenth
    after (504: applied, but the client is not told). Keyed requests keep their outcome
    under their key, as the nodes do: a repeat gets the stored reply, another payload a 422.
    `double` applies the first increment of each counter twice; `forget_keys` ignores the
    keys (a retry after a 504 applies the increment again); `broken` names a command (or
    `keyed`, the keyed client's requests) whose requests raise once applied, as a bug in the
    client would."""

    def __init__(self, counters, accounts, seed=0, double=False, broken=None, forget_keys=False):
        self.n = 3
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.count = {c: 0 for c in counters}
        self.tally = {c: {} for c in counters}
        self.balance = {a: 1000 for a in accounts}
        self.double = double
        self.broken = broken
        self.forget_keys = forget_keys
        self.records = {}  # key -> (payload, reply)
        self.answers = collections.Counter()  # (command, status) -> how many

    def request(self, i, name, text, timeout_ms=REQUEST_TIMEOUT_MS, key=None):
        time.sleep(0.0005)
        if key is None:
            code, reply = self.apply(name, text.split())
            self.answers[text.split()[0], code] += 1
        else:
            code, reply = self.apply_keyed(name, text, key)
        if (self.broken == "keyed") if key is not None else (text.split()[0] == self.broken):
            raise RuntimeError(f"fake failure of {text!r} (after it was applied)")
        return code, reply

    def apply_keyed(self, name, text, key):
        with self.lock:
            fate = self.rng.random()
            if fate < 0.1:
                self.answers["keyed", 503] += 1
                return 503, b'{"error":"unavailable"}'
            if key in self.records and not self.forget_keys:
                payload, reply = self.records[key]
                if payload != text:
                    self.answers["keyed", 422] += 1
                    return 422, b'{"error":"key-reused"}'
                self.answers["replay", 200] += 1
                return 200, reply
            code, reply = self.run(name, text.split())
            if code == 200:
                self.records[key] = (text, reply)
                if fate < 0.2:
                    code, reply = 504, b'{"error":"timeout"}'
            self.answers["keyed", code] += 1
            return code, reply

    def apply(self, name, words):
        with self.lock:
            fate = self.rng.random()
            if fate < 0.1:
                return 503, b"unavailable"
            code, reply = self.run(name, words)
            if code == 200 and fate < 0.2:
                return 504, b"timeout"
            return code, reply

    def run(self, name, words):
        """Applies one request (the caller holds the lock): (status, reply)."""
        if words[0] == "inc":
            tally = self.tally[name]
            for _ in range(2 if self.double and not tally else 1):
                tally[words[1]] = tally.get(words[1], 0) + 1
                self.count[name] += 1
            reply = self.count[name]
        elif words[0] == "get":
            reply = self.count[name]
        elif words[0] == "balance":
            reply = self.balance[name]
        elif words[0] == "transfer":
            n, target = int(words[1]), words[2]
            reply = "insufficient"
            if self.balance[name] >= n:
                self.balance[name] -= n
                self.balance[target] += n
                reply = "ok"
        else:
            return 400, b"unknown command"
        return 200, str(reply).encode()


# The invariants, as the summaries and the soak's table name them.
JUDGES = ["exactly once / at most once", "keyed: exactly once per key", "consistent replies",
          "no stale reads", "money constant", "every request answered",
          "one activation per generation", "the workload ran", "the cluster healed"]


def counter_judges(w, name, final, tally):
    """{judge: problems} for one counter. The keyed client's acknowledged increments are
    acknowledged increments too: their replies are counts like the others'."""
    keyed = w.kacked[name] | w.kunsure[name] | {p for _, p, _ in w.probes[name]}
    acks = w.acks[name] + w.kacks[name]
    return {
        "exactly once / at most once": request_problems(name, tally, w.acked[name], w.unsure[name], final,
                                                        others=keyed),
        "keyed: exactly once per key": keyed_problems(name, tally, w.kacked[name], w.kunsure[name],
                                                      w.replays[name], w.probes[name], w.reused),
        "consistent replies": reply_problems(name, acks, w.reads[name], final),
        "no stale reads": stale_read_problems(name, w.reads[name], acks),
    }


def merge(found, more):
    for judge, problems in more.items():
        found.setdefault(judge, []).extend(problems)
    return found


def fake_run(seconds=0.25, every_case=False, wanted=None, **fake_options):
    """A workload against a FakeCluster, judged as check() judges a real one. It runs for
    `seconds`; with `every_case`, longer (up to 10 s, on a busy machine) until every kind of
    answer (or each of `wanted`) was given at least 3 times."""
    counters, accounts = ["c1", "c2"], ["a1", "a2"]
    fake = FakeCluster(counters, accounts, **fake_options)
    w = Workload(fake, random.Random(7), counters, accounts, tag="t")
    w.start()
    time.sleep(seconds)
    wanted = wanted or [("inc", 200), ("inc", 503), ("inc", 504), ("get", 200), ("transfer", 200),
                        ("keyed", 200), ("keyed", 504), ("replay", 200), ("keyed", 422)]
    deadline = time.monotonic() + 10
    while every_case and not all(fake.answers[k] >= 3 for k in wanted) and time.monotonic() < deadline:
        time.sleep(0.05)
    w.finish()
    problems = thread_problems(w.crashes)
    for name in counters:
        for found in counter_judges(w, name, fake.count[name], fake.tally[name]).values():
            problems += found
    problems += money_problems(sum(fake.balance.values()), 1000 * len(accounts))
    problems += unanswered_problems(w.unanswered)
    return w, fake, problems


def silent(problems, case):
    if problems:
        raise AssertionError(f"self-test: {case}: the judge complained: {problems}")


def complains(problems, case, *words):
    """The judge must say exactly one thing, and say it with `words`."""
    if len(problems) != 1 or not all(word in problems[0] for word in words):
        raise AssertionError(f"self-test: {case}: expected one complaint with {words}, got {problems}")


def self_test():
    """The judges must be able to say no (and to say yes to a clean case)."""
    # Exactly once per acknowledged request, at most once per unacknowledged one.
    silent(request_problems("c", {"s-1": 1, "s-2": 1, "s-3": 1}, {"s-1", "s-2"}, {"s-3", "s-4"}, 3),
           "acked once, one unsure applied once and one not at all")
    silent(request_problems("c", {}, set(), {"s-1"}, 0), "nothing acknowledged, nothing applied")
    complains(request_problems("c", {"s-1": 2, "s-2": 1}, {"s-1", "s-2"}, set(), 3),
              "a double", "acknowledged requests applied more than once", "s-1 applied 2x")
    complains(request_problems("c", {"s-1": 1, "s-2": 2}, {"s-1"}, {"s-2"}, 3),
              "an unsure request applied twice", "unacknowledged requests applied more than once", "s-2")
    complains(request_problems("c", {"s-1": 1, "x-9": 1}, {"s-1"}, set(), 2),
              "an id never sent", "never sent", "x-9")
    complains(request_problems("c", {"s-1": 1}, {"s-1"}, set(), 2),
              "a count above its tally", "the count is 2 but the requests' tally adds up to 1")
    complains(request_problems("c", {"s-1": 1, "s-2": 1}, {"s-1", "s-2"}, set(), 1),
              "a count below its tally", "the count is 1 but")
    complains(request_problems("c", {"s-2": 1}, {"s-1", "s-2"}, set(), 1),
              "a lost acknowledged request", "1 acknowledged requests lost", "s-1 applied 0x")
    assert id_order("s1-10") > id_order("s1-9")
    assert parse_tally("s1-1 1\ns1-2 2\n") == {"s1-1": 1, "s1-2": 2} and parse_tally("") == {}
    # Replies: distinct counts, none above the final one.
    acks = [("s-1", 1.0, 1), ("s-2", 2.0, 2)]
    silent(reply_problems("c", acks, [(0.5, 0), (3.0, 2), (3.5, 3)], 3), "consistent replies")
    complains(reply_problems("c", [("s-1", 1.0, 2), ("s-2", 2.0, 2)], [], 2),
              "two increments replied the same count", "2 to s-1 and s-2")
    complains(reply_problems("c", acks, [], 1), "an increment replied above the final count",
              "s-2 replied 2")
    complains(reply_problems("c", acks, [(3.0, 4)], 3), "a read above the final count",
              "returned 4")
    # Stale reads: only a read sent strictly after an acknowledgement must see its count.
    acks = [("s-2", 2.0, 7), ("s-1", 1.0, 5)]
    silent(stale_read_problems("c", [], acks), "no reads")
    silent(stale_read_problems("c", [(0.5, 0), (0.9, 4), (1.0, 4), (1.5, 5), (1.5, 6), (2.5, 7), (3.0, 9)],
                               acks),
           "reads sent before the ack (or at the same instant) may miss it; later ones see it")
    complains(stale_read_problems("c", [(1.5, 4)], acks), "a stale read",
              "1 stale reads", "returned 4, but s-1 had been acknowledged at 1.000 s with 5")
    complains(stale_read_problems("c", [(2.5, 6), (2.6, 5), (1.2, 4)], acks), "three stale reads",
              "3 stale reads", "s-2 had been acknowledged at 2.000 s with 7")
    complains(stale_read_problems("c", [(2.5, 7)], [("s-1", 1.0, 9), ("s-2", 2.0, 5)]),
              "the highest acknowledged count counts, not the latest", "s-1 had been acknowledged")
    # The keyed client: exactly once per key answered 200, at most once per other key.
    tally = {"k-1": 1, "k-2": 1, "k-3": 0, "s-1": 1}
    silent(keyed_problems("c", tally, {"k-1", "k-2"}, {"k-3", "k-4"}), "keys applied once, unsure ones 0 or 1x")
    silent(keyed_problems("c", {"k-1": 1}, {"k-1"}, set(), replays=[("k-1", 5, 5)],
                          probes=[("k-1", "k-1-probe", 422), ("k-1", "k-1-probe", None)]),
           "a replay got the same reply; a probe under a used key was refused")
    complains(keyed_problems("c", {"k-1": 2, "k-2": 1}, {"k-1", "k-2"}, set()),
              "a retried key applied twice", "answered 200 but applied more than once", "k-1 applied 2x")
    complains(keyed_problems("c", {"k-2": 1}, {"k-1", "k-2"}, set()),
              "a key answered 200 but lost", "answered 200 but lost", "k-1 applied 0x")
    complains(keyed_problems("c", {"k-1": 1, "k-9": 3}, {"k-1"}, {"k-9"}),
              "a key never answered 200 applied 3x", "never answered 200 but applied more than once", "k-9")
    complains(keyed_problems("c", {"k-1": 1}, {"k-1"}, set(), replays=[("k-1", 5, 6)]),
              "a replay answered another count", "got another reply", "k-1 replied 5 then 6")
    complains(keyed_problems("c", {"k-1": 1}, {"k-1"}, set(), probes=[("k-1", "k-1-probe", 200)]),
              "another payload under a used key answered 200", "another payload were accepted", "k-1-probe")
    complains(keyed_problems("c", {"k-1": 1, "k-1-probe": 1}, {"k-1"}, set(),
                             probes=[("k-1", "k-1-probe", 504)]),
              "another payload under a used key applied", "another payload were accepted", "applied 1x")
    complains(keyed_problems("c", {"k-1": 1}, {"k-1"}, set(), reused=[("c", "k-1", "key-reused")]),
              "an unchanged payload refused as reused", "refused as a reused key", "k-1")
    silent(keyed_problems("c", {"k-1": 1}, {"k-1"}, set(), reused=[("other", "k-1", "key-reused")]),
           "a 422 on another counter is that counter's")
    # The keyed ids belong to the keyed judge, not to "never sent".
    silent(request_problems("c", {"s-1": 1, "k-1": 1}, {"s-1"}, set(), 2, others={"k-1"}),
           "a keyed id in the tally")
    complains(request_problems("c", {"s-1": 1, "k-1": 1}, {"s-1"}, set(), 2),
              "a keyed id no judge answers for", "never sent", "k-1")
    # Time to the first reply after a fault, and percentiles.
    oks = sorted([(0.5, 0.6), (1.0, 4.0), (1.2, 1.5), (3.0, 3.1)])
    assert first_reply_after(oks, 1.0) == 0.5, "the first answer, not the first request's answer"
    assert first_reply_after(oks, 0.9) == 0.6 and abs(first_reply_after(oks, 2.0) - 1.1) < 1e-9
    assert first_reply_after(oks, 0.55) == 0.95, "a request sent before the fault does not count"
    assert first_reply_after(oks, 3.5) is None and first_reply_after([], 0) is None
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile(range(1, 101), 99) == 99
    assert percentile(range(1, 101), 100) == 100 and percentile([5, 1], 1) == 1
    events = [{"kind": "pause", "heal_s": 1.0, "overlapped": False, "first_reply_s": 0.5},
              {"kind": "pause", "heal_s": None, "overlapped": True, "first_reply_s": 2.5},
              {"kind": "disk full", "heal_s": 0.1, "overlapped": False, "first_reply_s": None}]
    table = fault_table(events).splitlines()
    assert table[1].split() == ["disk", "full", "1", "0.10", "0.10", "0", "-", "-"], table
    assert table[2].split() == ["pause", "2", "1.00", "1.00", "1", "2.50", "0.50"], table
    sched = [{"seed": 1, "nodes": 3, "ok": True, "violations": {}, "events": events, "reproduce": "r1"},
             {"seed": 2, "nodes": 5, "ok": False, "violations": {"money constant": ["money not conserved"]},
              "events": events[:1], "reproduce": "python3 chaos-tests/chaos.py --seed 2"}]
    text = aggregate(sched)
    for want in ("schedules: 2 (3 nodes: 1, 5 nodes: 1); failed: 1", "seed 2 (5 nodes): money constant",
                 "python3 chaos-tests/chaos.py --seed 2"):
        assert want in text, (want, text)
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()}
    assert rows["pause"][1:5] == ["3", "1", "1", "1.00"], rows["pause"]
    assert rows["money constant"][-1] == "1" and rows["no stale reads"][-1] == "0"
    # Money, answers, threads.
    silent(money_problems(3000, 3000), "money conserved")
    complains(money_problems(2999, 3000), "money lost", "2999, not 3000 (-1)")
    complains(money_problems(3001, 3000), "money created", "(+1)")
    silent(unanswered_problems([]), "every request answered")
    complains(unanswered_problems([("inc", "c1", "s-1")]), "a request unanswered", "1 requests got no answer")
    silent(thread_problems([]), "no thread died")
    complains(thread_problems([("incs", "Traceback (most recent call last):\nValueError: bad\n")]),
              "a dead thread", "workload thread incs died: ValueError: bad")
    # One activation per generation.
    line = ("2026-01-01T00:00:00Z  INFO airssys_node::host::cluster_ops: "
            "activated component=c1 generation=2")
    assert activation_problems("c1", {1: line, 2: ""}) == []
    assert activation_problems("c1", {1: "", 2: ""}), "a judge that sees no activation says so"
    assert activation_problems("c1", {1: line, 2: line}), "two activations at one generation"
    assert activation_problems("c1", {1: line, 2: line.replace("=2", "=3")}) == [], \
        "a failover activates at the next generation"
    assert activation_problems("c1", {1: line.replace("c1", "c10"), 2: line}) == []
    # A deactivation is not an activation, and no match spans two lines (the CI run of
    # 2026-11-24 reported split brains that were a node stopping c3, then starting c1).
    other = line.replace("c1", "c2")
    stopped = ("2026-01-01T00:00:01Z  INFO airssys_node::host::cluster_ops: "
               "deactivated component=c1")
    assert activation_problems("c1", {1: line, 2: stopped + "\n" + other}) == [], \
        "a deactivation followed by another component's activation is no activation"
    assert activation_problems("c1", {1: line, 2: f"{stopped}\n{line}"}), \
        "a real second activation after a deactivation line is still caught"
    assert activation_problems("c1", {1: line, 2: line.replace(" generation=2", " extra=x generation=2")}), \
        "fields between component and generation do not hide an activation"
    # The workload's bookkeeping, end to end against an in-memory cluster: clean, it passes
    # (having exercised acknowledged, failed and applied-but-unacknowledged increments, reads
    # and transfers).
    w, fake, problems = fake_run(every_case=True)
    silent(problems, "a workload against a correct fake cluster")
    applied_unsure = sum(1 for c in w.counters for i in w.unsure[c] if fake.tally[c].get(i))
    if not (all(w.acked.values()) and applied_unsure and all(w.reads.values()) and w.transfers[0]
            and all(w.kacked.values()) and any(w.replays.values()) and any(w.probes.values())
            and w.kretries and w.oks):
        raise AssertionError("self-test: the fake workload did not exercise every case")
    # A double inside the cluster is caught from the workload's own records.
    _, _, problems = fake_run(double=True)
    if not any("applied more than once" in p for p in problems):
        raise AssertionError(f"self-test: a doubled increment went unnoticed: {problems}")
    # A cluster that forgets idempotency keys: a retry after a 504 applies the increment again.
    _, _, problems = fake_run(every_case=True, wanted=[("keyed", 504)], forget_keys=True)
    if not any("keyed increments answered 200 but applied more than once" in p for p in problems):
        raise AssertionError(f"self-test: keys forgotten by the cluster went unnoticed: {problems}")
    # A thread that dies fails the run; the others go on, and the increment it was sending
    # when it died (applied) is unsure, not an unknown id.
    for broken, thread in (("transfer", "moves"), ("inc", "incs"), ("get", "gets"), ("keyed", "keyed")):
        w, _, problems = fake_run(seconds=0.1, broken=broken)
        complains(problems, f"the {thread} thread dies", f"workload thread {thread} died",
                  "RuntimeError: fake failure of '" + ("inc" if broken == "keyed" else broken))
        went_on = [bool(w.transfers[0]) or broken == "transfer", any(w.acked.values()) or broken == "inc",
                   any(w.reads.values()) or broken == "get", any(w.kacked.values()) or broken == "keyed"]
        if not all(went_on):
            raise AssertionError(f"self-test: the other threads stopped when {thread} died")


def check(c, w, total_money):
    """{judge: problems} after healing."""
    found = {"the workload ran": thread_problems(w.crashes)}
    for name in w.counters:
        final, tally = read_counter(c, name)
        acked, unsure = w.acked[name], w.unsure[name]
        applied = sum(1 for i in unsure if tally.get(i))
        kapplied = sum(1 for k in w.kunsure[name] if tally.get(k))
        log(f"{name}: count {final}; increments acknowledged {len(acked)}, not acknowledged "
            f"{len(unsure)} ({applied} of these applied); keyed: answered 200 {len(w.kacked[name])}, "
            f"not {len(w.kunsure[name])} ({kapplied} of these applied), {len(w.replays[name])} replays, "
            f"{len(w.probes[name])} probes; {len(w.reads[name])} reads")
        merge(found, counter_judges(w, name, final, tally))
    log(f"keyed client: {w.kretries} retries; final errors {collections.Counter(code for _, _, code in w.gaveup)}")
    deadline = time.time() + 60
    while True:
        money = sum(read_value(c, a, "balance") for a in w.accounts)
        if money == total_money or time.time() > deadline:
            break
        time.sleep(0.5)
    log(f"money: {money} (expected {total_money}); transfers ok {w.transfers[0]}, failed {w.transfers[1]}")
    found["money constant"] = money_problems(money, total_money)
    found["every request answered"] = unanswered_problems(w.unanswered)
    logs = {i: c.logs(i) for i in node_ids(c)}
    found["one activation per generation"] = [p for name in w.counters + w.accounts
                                              for p in activation_problems(name, logs)]
    return found


def run_schedule(args, seed, index):
    """Runs one schedule; its summary (a dict, also for --summary-json)."""
    rng = random.Random(seed)
    # Compose v1 keeps only [a-z0-9] of a project name: use nothing else.
    project = f"chaos{seed % 1000000}s{index}"
    # Which node has the small disk and which the clock that can jump.
    small_disk = rng.randint(1, args.nodes)
    faketime = rng.randint(1, args.nodes) if FAKETIME_ON_HOST else None
    c = Cluster(args.nodes, project, args.port, small_disk=small_disk if ROOT_USER else None,
                faketime=faketime)
    reproduce = (f"python3 chaos-tests/chaos.py --seed {seed} --schedules 1 --faults {args.faults} "
                 f"--nodes {args.nodes}" + (" --settle" if args.settle else "")
                 + (f" --kinds '{','.join(args.kinds)}'" if args.kinds else ""))
    log(f"schedule {index}: seed {seed}; reproduce with: {reproduce}")
    summary = {"seed": seed, "nodes": args.nodes, "faults": args.faults, "settle": args.settle,
               "reproduce": reproduce, "ok": False, "violations": {}, "events": []}
    events = []
    found = {}
    try:
        c.down()
        c.up()
        log((f"node {small_disk} has a {SMALL_DISK_SIZE} tmpfs /data; " if ROOT_USER else "")
            + (f"node {faketime} runs with libfaketime" if faketime else "no libfaketime (no clock jumps)"))
        counters = ["c1", "c2", "c3"]
        accounts = ["a1", "a2", "a3"]
        for name in counters:
            c.cli(1, "component", "install", name, str(WASM / "counter.wasm"))
        for name in accounts:
            c.cli(1, "component", "install", name, str(WASM / "account.wasm"))
            if c.request(2, name, "deposit 1000")[0] != 200:
                raise AssertionError(f"initial deposit to {name} failed")
        w = Workload(c, rng, counters, accounts, tag=f"s{seed}")
        w.start()
        try:
            for k in range(args.faults):
                if args.kinds:
                    # These kinds in this order (to check a fault's mechanics), the rest seeded.
                    name, fault = next(f for f in FAULTS if f[0] == args.kinds[k % len(args.kinds)])
                else:
                    name, fault = FAULTS[rng.randrange(len(FAULTS))]
                settle(c, w, events[-1] if events else None, rng.uniform(0.5, 2.0), args.settle)
                log(f"fault {k + 1}/{args.faults}: {name}")
                ev = FaultEvent(name, w)
                fault(c, rng, w, ev)
                if ev.injected is not None:
                    if ev.repaired is None:
                        ev.repair()
                    events.append(ev)
            # The last fault's heal, with the workload still running.
            settle(c, w, events[-1] if events else None, 1.0, True, limit=90)
        finally:
            w.finish()
            oks = sorted(w.oks)
            for ev in events:
                ev.first_reply = first_reply_after(oks, ev.injected)
            summary["events"] = [ev.summary() for ev in events]
        if events:
            log(f"schedule {index}: heal (repair to healthy) and first reply (fault to the first 200 "
                f"of a request sent after it), seconds:\n" + fault_table(summary["events"]))
        try:
            wait_healthy(c, 90)
        except AssertionError as e:
            # Judge what can be read anyway (through the nodes that answer).
            found["the cluster healed"] = [str(e)]
            log(f"VIOLATION [the cluster healed]: {e}; checking the other invariants anyway")
        found.update(check(c, w, 1000 * len(accounts)))
    except Exception as e:
        found.setdefault("the run itself", []).append(f"{type(e).__name__}: {e}")
        log(f"schedule {index} (seed {seed}) stopped: {type(e).__name__}: {e}")
        traceback.print_exc()
    finally:
        summary["violations"] = {j: p for j, p in found.items() if p}
        summary["ok"] = not summary["violations"] and "the workload ran" in found
        if summary["violations"]:
            for judge, problems in summary["violations"].items():
                for p in problems:
                    log(f"VIOLATION [{judge}]: {p}")
            if args.keep_on_failure:
                log(f"keeping project {project} for inspection; remove it with: "
                    f"AIRSSYS_COMPOSE_PROJECT={project} deploy/compose/down.sh {args.nodes}")
                c.down = lambda: None
        elif summary["ok"]:
            log(f"schedule {index} (seed {seed}): all invariants hold")
        c.down()
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--schedules", type=int, default=1)
    p.add_argument("--faults", type=int, default=4)
    p.add_argument("--nodes", type=int, default=3, choices=[3, 5])
    p.add_argument("--port", type=int, default=27070)
    p.add_argument("--settle", action="store_true",
                   help="wait for the cluster to heal after each fault before the next one "
                        "(every heal time measured; faults no longer overlap a heal)")
    p.add_argument("--kinds", type=lambda v: [k.strip() for k in v.split(",") if k.strip()],
                   help="comma-separated fault kinds to inject in this order, cycling, instead "
                        "of the seeded choice among all (e.g. 'disk full,clock jump')")
    p.add_argument("--summary-json", metavar="FILE",
                   help="write every schedule's summary (faults, heal and first-reply times, "
                        "violations) to FILE as JSON")
    p.add_argument("--aggregate", nargs="+", metavar="FILE",
                   help="only print the soak table of the summaries in these files and exit")
    p.add_argument("--keep-on-failure", action="store_true",
                   help="leave the containers running after a violation, for inspection")
    p.add_argument("--self-test", action="store_true",
                   help="only run the judges' self-test (no docker) and exit")
    p.add_argument("--nfqueue-delay", metavar="Q,DELAY,JITTER,LOSS,SEED", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.nfqueue_delay:
        nfqueue_delay(args.nfqueue_delay)
        return
    unknown = [k for k in args.kinds or [] if k not in dict(FAULTS)]
    if unknown:
        p.error(f"unknown fault kinds {unknown}; known: {', '.join(name for name, _ in FAULTS)}")
    if args.aggregate:
        schedules = []
        for path in args.aggregate:
            try:
                schedules += json.loads(pathlib.Path(path).read_text())
            except (OSError, ValueError) as e:
                print(f"{path}: unreadable ({e}); left out", file=sys.stderr)
        print(aggregate(schedules))
        return
    self_test()
    if args.self_test:
        log("self-test passed")
        return
    # The image of the current binary (up.sh would reuse any older one).
    subprocess.run([str(ROOT / "deploy/docker/build.sh"), "airssys:dev"], check=True,
                   stdout=subprocess.DEVNULL)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    log(f"seed {seed}")
    summaries = []
    for i in range(args.schedules):
        summaries.append(run_schedule(args, seed + i, i))
        if args.summary_json:
            pathlib.Path(args.summary_json).write_text(json.dumps(summaries, indent=1))
    ok = all(s["ok"] for s in summaries)
    events = [e for s in summaries for e in s["events"]]
    if len(summaries) > 1 and events:
        log("all schedules, seconds:\n" + fault_table(events))
    log(("all schedules passed" if ok else "FAILED") + f" (seed {seed}; rerun: python3 chaos-tests/chaos.py "
        f"--seed {seed} --schedules {args.schedules} --faults {args.faults} --nodes {args.nodes}"
        + (" --settle" if args.settle else "")
        + (f" --kinds '{','.join(args.kinds)}'" if args.kinds else "") + ")")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
