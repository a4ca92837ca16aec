"""Fixtures that run the real martlet binary on free loopback ports, one server per test.

`martlet_server` gives a factory: `martlet_server(users=..., **config_overrides)` writes a
config into the test's tmp dir, creates the accounts through the CLI, starts
`target/release/martlet serve`, and waits until the ports accept. Teardown stops it and
prints its log if the test failed.
"""
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# $MARTLET_BINARY: another build to run the same tests against (scripts/bench-partition.sh).
BINARY = Path(os.environ.get("MARTLET_BINARY", ROOT / "target" / "release" / "martlet"))
# The same server built with `--features test-hooks` (deliberate panics; scripts/test.sh).
TEST_HOOKS_BINARY = ROOT / "target" / "release" / "martlet-test-hooks"
DOMAIN = "localhost"
PASSWORD = "secret-pw"


# Ports for servers come from below the kernel's ephemeral range (32768-60999 here): a
# port the kernel hands out could be taken, while a server restarts, as the local port of
# some outgoing connection (a cluster node redialling, a client), and the restart would
# then rightly refuse to start on an address in use.
SERVER_PORTS = range(20000, 32000)


# Ports handed out already: a server binds its ports with SO_REUSEPORT, and only once it
# starts, so a free port drawn twice (a server's Direct TLS and metrics ports were, once)
# would be bound twice without complaint and share its connections.
HANDED_OUT = set()


def free_port():
    for _ in range(200):
        port = random.choice(SERVER_PORTS)
        if port in HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"%s"' % v


class Server:
    """One martlet process and its storage directory (kept across restarts). `host` is the
    address it listens on; `netns`, a network namespace to run it in (test_partition.py)."""

    def __init__(self, tmp: Path, sections: dict, binary: Path = BINARY, host="127.0.0.1", netns=None):
        self.binary = binary
        self.dir = tmp
        self.host, self.netns = host, netns
        self.port = free_port()
        self.tls_port = free_port()
        self.metrics_port = free_port()
        self.data = tmp / "data"
        self.log_path = tmp / "martlet.log"
        self.proc = None
        base = {
            "": {"domain": DOMAIN, "cores": 2},
            "c2s": {"listen": f"{host}:{self.port}"},
            "c2s_direct_tls": {"listen": f"{host}:{self.tls_port}"},
            "storage": {"path": str(self.data), "scram_iterations": 4096},
            "metrics": {"listen": f"{host}:{self.metrics_port}"},
            "limits": {},
        }
        for section, values in sections.items():
            if isinstance(values, list):  # an array of tables: [[section]] each
                base[section] = values
            else:
                base.setdefault(section, {}).update(values)
        lines = [f"{k} = {toml_value(v)}" for k, v in base.pop("").items()]
        for section, values in base.items():
            for table in values if isinstance(values, list) else [values]:
                lines.append(f"\n[[{section}]]" if isinstance(values, list) else f"\n[{section}]")
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        self.config = tmp / "martlet.toml"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def ca(self):
        return str(self.data / "dev-cert.pem")

    def cli(self, *args, stdin=None, check=True):
        done = subprocess.run([str(self.binary), "--config", str(self.config), *args], input=stdin,
                              capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"martlet {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def add_user(self, name, password=PASSWORD):
        self.cli("user", "add", f"{name}@{DOMAIN}", password)

    def start(self):
        log = open(self.log_path, "a")
        netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen([*netns, str(self.binary), "serve", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline, waiting_for = time.time() + 20, None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("martlet exited: " + self.log_path.read_text())
            try:
                for waiting_for in (f"c2s port {self.port}", f"direct TLS port {self.tls_port}"):
                    port = self.port if waiting_for.startswith("c2s") else self.tls_port
                    socket.create_connection((self.host, port), timeout=0.2).close()
                waiting_for = f"metrics on {self.metrics_port}"
                self.metrics()
            except OSError as e:
                waiting_for = f"{waiting_for}: {e}"
                time.sleep(0.05)
                continue
            # The probes above hold connection slots until the server sees them close;
            # tests that count connections start from a server with none open.
            while self.metric_sum("martlet_connections") > 0 and time.time() < deadline:
                time.sleep(0.02)
            return self
        raise RuntimeError(f"martlet did not listen in time (last waited for {waiting_for}): "
                           + self.log_path.read_text()[-3000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def metrics(self):
        """{(name, core): value} from the Prometheus endpoint."""
        text = urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name_labels, value = line.rsplit(" ", 1)
            name, labels = name_labels.split("{")
            core = int(labels.split('"')[1])
            out[(name, core)] = float(value)
        return out

    def metric_sum(self, name):
        return sum(v for (n, _), v in self.metrics().items() if n == name)


@pytest.fixture
def martlet_server(tmp_path, request):
    servers = []

    def make(users=("alice", "bob"), binary=BINARY, host="127.0.0.1", netns=None, **sections):
        assert binary.exists(), f"build first ({binary.name}): scripts/test.sh builds it"
        d = tmp_path / f"server{len(servers)}"
        d.mkdir()
        server = Server(d, sections, binary, host, netns)
        for u in users:
            server.add_user(u)
        servers.append(server)
        return server.start()

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else True
    for s in servers:
        s.stop()
        if failed and s.log_path.exists():
            print(f"---- martlet log ({s.log_path}) ----\n" + s.log_path.read_text()[-20000:])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


POSTGRES_URL_VAR = "MARTLET_TEST_POSTGRES_URL"


# DROP DATABASE ... WITH (FORCE) fails while an autovacuum worker (a superuser's backend,
# which the test role may not terminate) is in the database; it ends within moments.
DROP_ATTEMPTS = 10
DROP_RETRY_SECS = 0.5


def drop_database(drop):
    for _ in range(DROP_ATTEMPTS - 1):
        if subprocess.run(drop, stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(DROP_RETRY_SECS)
    subprocess.run(drop, check=True)


def fresh_database(request):
    """A database of its own on the PostgreSQL server at $MARTLET_TEST_POSTGRES_URL
    (scripts/test.sh starts one), dropped at teardown; returns its `[storage]` keys."""
    server_url = os.environ.get(POSTGRES_URL_VAR)
    if not server_url:
        pytest.fail(f"{POSTGRES_URL_VAR} is not set: scripts/postgres-scratch.sh start prints one")
    name = f"martlet_it_{os.getpid()}_{request.node.name.split('[')[0][-20:]}".lower()
    psql = ["psql", server_url, "-qAtv", "ON_ERROR_STOP=1", "-c"]
    drop = psql + [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]
    subprocess.run(drop, check=True)
    subprocess.run(psql + [f"CREATE DATABASE {name}"], check=True)
    request.addfinalizer(lambda: drop_database(drop))
    return {"backend": "postgres", "postgres_url": server_url.rsplit("/", 1)[0] + "/" + name}


@pytest.fixture(params=["embedded", "postgres"])
def storage(request):
    """`[storage]` keys for each backend: the embedded default, and a fresh PostgreSQL
    database."""
    return {} if request.param == "embedded" else fresh_database(request)


@pytest.fixture
def postgres_storage(request):
    return fresh_database(request)
