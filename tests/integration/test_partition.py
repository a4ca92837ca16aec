"""Partitions (issue 14): a cluster that splits and heals delivers every message to a user
who stays online live, as soon as a path to the session exists, and never only at the
next login.

Each node runs in a network namespace of its own, joined to the others by a bridge in the
test's namespace, where the clients and PostgreSQL (through a small forwarder) reach every
node whatever the cut. A cut blackholes the neighbour entries between the two sides (this
kernel has no netem, and no iptables or nftables): packets are sent to a MAC address no
one has, so the mesh's TCP connections stay ESTABLISHED and just go silent, as in a real
partition. Every scenario plays the same traffic: two users per node, each sending a chat
to a random other user every 200 ms, and counts what was sent, delivered live once,
delivered only from offline storage at a later login, duplicated and lost."""
import asyncio
import itertools
import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest

from clients import close, login
from conftest import free_port

SECRET = "partition-test-secret-0123456789"
SUSPICION_MS = 1000
SEND_EVERY_SECS = 0.2
# Heal to agreement: one redial (at most 0.5 s apart, with jitter) and a handshake; slack
# for a loaded 2-core box.
HEAL_SECS_MAX = 3.0


def ip(*args):
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Net:
    """A bridge here and one namespace per node on it; `cut` and `heal` between groups."""

    made = itertools.count()

    def __init__(self, n):
        # Unique per Net: a namespace outlives `ip netns del` until its processes exit.
        serial = next(Net.made)
        tag = f"{os.getpid() % 10000}x{serial}"
        self.subnet = f"10.{77 + serial % 100}.{os.getpid() % 250}"
        self.gateway = f"{self.subnet}.1"
        self.bridge = f"mbr{tag}"
        self.spaces = [f"mpart{tag}n{i}" for i in range(n)]
        self.ifaces = [f"mv{tag}n{i}" for i in range(n)]
        self.addrs = [f"{self.subnet}.{10 + i}" for i in range(n)]
        self.host_sides = [f"mv{tag}h{i}" for i in range(n)]
        self.nodes = []  # stopped before the namespaces go
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self.spaces):
            host_side = self.host_sides[i]
            ip("netns", "add", ns)
            ip("link", "add", host_side, "type", "veth", "peer", "name", self.ifaces[i], "netns", ns)
            ip("link", "set", host_side, "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{self.addrs[i]}/24", "dev", self.ifaces[i])
            ip("-n", ns, "link", "set", self.ifaces[i], "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def _pairs(self, side_a, side_b):
        for a in side_a:
            for b in side_b:
                yield a, b
                yield b, a

    def cut(self, side_a, side_b):
        for a, b in self._pairs(side_a, side_b):
            ip("-n", self.spaces[a], "neigh", "replace", self.addrs[b], "lladdr", "02:00:00:00:77:77",
               "dev", self.ifaces[a], "nud", "permanent")

    def heal(self, side_a, side_b):
        for a, b in self._pairs(side_a, side_b):
            ip("-n", self.spaces[a], "neigh", "del", self.addrs[b], "dev", self.ifaces[a])

    def close(self):
        for host_side in self.host_sides:  # deleting one end deletes the pair
            subprocess.run(["ip", "link", "del", host_side], capture_output=True)
        for ns in self.spaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class Forwarder(threading.Thread):
    """Forwards TCP from `listen` to `target`, so nodes in their namespaces reach the
    PostgreSQL that listens on this namespace's loopback."""

    def __init__(self, listen, target):
        super().__init__(daemon=True)
        self.target = target
        self.sock = socket.create_server(listen)

    def run(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def members(node):
    out = node.cli("cluster", "status").stdout
    return {row[0]: row[2] for row in (line.split() for line in out.splitlines()[1:]) if row}


def agreed(nodes):
    everyone = {n.name: "up" for n in nodes}
    return all(members(n) == everyone for n in nodes)


def wait_agreed(nodes, secs):
    deadline = time.time() + secs
    while not agreed(nodes):
        if time.time() > deadline:
            raise AssertionError("membership: " + str({n.name: members(n) for n in nodes}))
        time.sleep(0.05)


@pytest.fixture
def partitioned(martlet_server, postgres_storage):
    """`partitioned(n)`: the Net and n nodes, one per namespace, all up."""
    made = []

    def make(n, users):
        net = Net(n)
        made.append(net)
        pg_port = free_port()
        url = postgres_storage["postgres_url"]
        pg_host, pg_target_port = url.split("@", 1)[1].split("/", 1)[0].split(":")
        forwarder = Forwarder((net.gateway, pg_port), (pg_host, int(pg_target_port)))
        forwarder.start()
        made.append(forwarder)
        storage = {**postgres_storage, "postgres_url": url.replace(f"{pg_host}:{pg_target_port}", f"{net.gateway}:{pg_port}")}
        mesh_port = free_port()
        nodes = []
        for i in range(n):
            node = martlet_server(
                users=users if i == 0 else (),
                host=net.addrs[i],
                netns=net.spaces[i],
                storage=storage,
                cluster={
                    "listen": f"{net.addrs[i]}:{mesh_port}",
                    "node_name": f"node{i}",
                    "seeds": [f"{a}:{mesh_port}" for j, a in enumerate(net.addrs) if j != i],
                    "secret": SECRET,
                    "suspicion_timeout_ms": SUSPICION_MS,
                },
            )
            node.name = f"node{i}"
            nodes.append(node)
            net.nodes.append(node)
        wait_agreed(nodes, 20)
        return net, nodes

    yield make
    for thing in reversed(made):
        if isinstance(thing, Net):
            for node in thing.nodes:
                node.stop()
        thing.close()


async def play(nodes, secs, events):
    """Two users per node chat at random for `secs` while `events` ((pause in seconds,
    action), ...) run in turn, the last one mending what the others broke; then every
    user logs in again. Returns the counts and the seconds from the last event until
    every node saw every other up."""
    users = [f"u{i}" for i in range(2 * len(nodes))]
    home = {u: nodes[i // 2] for i, u in enumerate(users)}
    clients = {u: await login(home[u], u) for u in users}
    sent = {}  # body -> recipient
    rng = random.Random(14)

    async def send():
        seq = 0
        started = time.time()
        while time.time() - started < secs:
            for u in users:
                to = rng.choice([v for v in users if v != u])
                body = f"{u}-{seq}"
                sent[body] = to
                clients[u].send_message(mto=f"{to}@localhost", mbody=body, mtype="chat")
            seq += 1
            await asyncio.sleep(SEND_EVERY_SECS)

    sending = asyncio.ensure_future(send())
    for pause, action in events:
        await asyncio.sleep(pause)
        action()
    mended = time.time()
    while not agreed(nodes):
        await asyncio.sleep(0.05)
    heal_secs = time.time() - mended
    await sending
    live = {u: [] for u in users}

    def drain():
        for u in users:
            while not clients[u].messages.empty():
                live[u].append(clients[u].messages.get_nowait()["body"])

    # Whatever is still on its way live: until nothing more comes for 3 s.
    quiet_since, total = time.time(), -1
    while time.time() - quiet_since < 3:
        drain()
        now = sum(map(len, live.values()))
        if now != total:
            quiet_since, total = time.time(), now
        await asyncio.sleep(0.2)
    await close(*clients.values())
    later = {}
    for u in users:
        again = await login(home[u], u, resource="again")
        await asyncio.sleep(1)
        later[u] = []
        while not again.messages.empty():
            later[u].append(again.messages.get_nowait()["body"])
        await close(again)
    counts = {"sent": len(sent), "live_once": 0, "offline_only": 0, "duplicated": 0, "lost": 0, "misrouted": 0}
    for u in users:
        got = live[u] + later[u]
        for body in set(got):
            if sent.get(body) != u:
                counts["misrouted"] += 1
        counts["duplicated"] += len(got) - len(set(got))
        for body in sorted(b for b in set(got) if got.count(b) > 1):
            where = f"live x{live[u].count(body)}, later x{later[u].count(body)}"
            counts.setdefault("duplicated_bodies", []).append(f"{body}->{u} ({where})")
    for body, to in sent.items():
        if body in live[to]:
            counts["live_once"] += 1
        elif body in later[to]:
            counts["offline_only"] += 1
            counts.setdefault("offline_only_bodies", []).append(f"{body}->{to}")
        else:
            counts["lost"] += 1
            counts.setdefault("lost_bodies", []).append(f"{body}->{to}")
    return counts, heal_secs


def survive(nodes, secs, events):
    """Plays `events` under traffic: every message reached its recipient live, once, and
    the nodes agreed again within HEAL_SECS_MAX of the last event."""
    counts, heal_secs = asyncio.run(play(nodes, secs, events))
    metric = {name: sum(n.metric_sum(f"martlet_{name}_total") for n in nodes)
              for name in ("offline_to_online", "sessions_reregistered", "mesh_connections_fenced",
                           "mesh_silent_connections_closed", "mesh_members_down", "mesh_frames_relayed",
                           "custody_copies_dropped")}
    summary = {k: v for k, v in counts.items() if not k.endswith("_bodies")}
    print(f"{summary}; heal to agreement {heal_secs:.2f} s; {metric}")
    for name in ("offline_only_bodies", "lost_bodies", "duplicated_bodies"):
        if counts.get(name):
            print(f"{name}: {' '.join(counts[name])}")
    assert counts["lost"] == 0 and counts["misrouted"] == 0, counts
    assert counts["offline_only"] == 0, counts
    assert counts["duplicated"] == 0, counts
    assert counts["live_once"] == counts["sent"], counts
    assert heal_secs <= HEAL_SECS_MAX
    return metric


def test_one_node_cut_off_from_two_then_healed(partitioned):
    """Each side declares the other down (suspected after the timeout, down after as long
    again) and serves its users alone until the cut heals. scripts/bench-partition.sh
    plays it at the issue's length: 60 s, cut from 15 s to 35 s."""
    secs, cut_at, cut_secs = (float(os.environ.get(k, d)) for k, d in
                              (("PARTITION_SECS", 14), ("PARTITION_CUT_AT", 3), ("PARTITION_CUT_SECS", 6)))
    net, nodes = partitioned(3, [f"u{i}" for i in range(6)])
    survive(nodes, secs, [(cut_at, lambda: net.cut([2], [0, 1])), (cut_secs, lambda: net.heal([2], [0, 1]))])


def test_a_node_frozen_past_the_suspicion_timeout_then_resumed(partitioned):
    """The frozen node never sees the others down, so it would not re-register its
    sessions with them on its own; and the kernel kept taking frames for it meanwhile."""
    net, nodes = partitioned(3, [f"u{i}" for i in range(6)])
    stop = lambda: nodes[2].proc.send_signal(signal.SIGSTOP)  # noqa: E731
    resume = lambda: nodes[2].proc.send_signal(signal.SIGCONT)  # noqa: E731
    survive(nodes, 12, [(3, stop), (4 * SUSPICION_MS / 1000, resume)])


def test_two_against_two_then_healed(partitioned):
    """No side has a majority: both serve their users alone."""
    net, nodes = partitioned(4, [f"u{i}" for i in range(8)])
    survive(nodes, 14, [(3, lambda: net.cut([0, 1], [2, 3])), (6, lambda: net.heal([0, 1], [2, 3]))])


def test_one_broken_link_is_routed_around(partitioned):
    """Nodes 0 and 1 cannot reach each other for 6 s, three times the time to "down", but
    both reach node 2, whose heartbeats vouch for each to the other: neither is taken off
    the ring, and their frames go through node 2."""
    net, nodes = partitioned(3, [f"u{i}" for i in range(6)])
    metric = survive(nodes, 14, [(3, lambda: net.cut([0], [1])), (6, lambda: net.heal([0], [1]))])
    assert metric["mesh_members_down"] == 0
    assert metric["mesh_frames_relayed"] > 0


def test_a_flapping_link(partitioned):
    """One link cut for 2.5 s (past the 2 s to "down") and healed for 1.5 s, three times,
    while both its ends reach the third node."""
    net, nodes = partitioned(3, [f"u{i}" for i in range(6)])
    cut, heal = (lambda: net.cut([0], [1])), (lambda: net.heal([0], [1]))
    survive(nodes, 16, [(3, cut), (2.5, heal), (1.5, cut), (2.5, heal), (1.5, cut), (2.5, heal)])
