"""What a first-time operator meets: listeners on IPv4 and IPv6, a second server on a taken
port refused with the address named, and a log that says who failed to log in and why,
without letting a flood of failures fill the disk."""
import socket
import subprocess
import time

import pytest

from conftest import BINARY, PASSWORD, Server, free_port
from rawxmpp import Raw

# How long a server that should refuse to start may take to say so.
REFUSAL_SECS = 20


@pytest.fixture
def server_dir(tmp_path):
    """A Server (config, storage) that the test starts itself; stopped at teardown."""
    made = []

    def make(name, **sections):
        d = tmp_path / name
        d.mkdir()
        server = Server(d, sections)
        made.append(server)
        return server

    yield make
    for s in made:
        s.stop()


def set_listen(server, c2s_listen):
    """Rewrites the server's `[c2s] listen` (its port is only known once it is made)."""
    old = f'listen = "127.0.0.1:{server.port}"'
    text = server.config.read_text()
    assert old in text
    server.config.write_text(text.replace(old, "listen = " + c2s_listen))


def serve_expecting_refusal(server):
    """Runs `martlet serve` on `server`'s config; returns (exit code, output) once it exits.
    A server that keeps running is the bug: it is killed and the test fails."""
    proc = subprocess.Popen([str(BINARY), "serve", "--config", str(server.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=REFUSAL_SECS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"martlet started on an address another process holds:\n{out[-3000:]}")
    return proc.returncode, out


def features_over(host, port):
    with socket.create_connection((host, port), timeout=10) as sock:
        raw = Raw.__new__(Raw)
        raw.sock, raw.buf = sock, b""
        return raw.open()


def test_clients_connect_over_ipv4_and_ipv6_on_wildcard_listeners(server_dir):
    server = server_dir("dual")
    set_listen(server, f'["0.0.0.0:{server.port}", "[::]:{server.port}"]')
    server.add_user("alice")
    server.start()
    for host in ("127.0.0.1", "::1"):
        assert "<stream:features>" in features_over(host, server.port), host
    log = server.log_path.read_text()
    assert f"listening on [::]:{server.port}: XMPP clients, STARTTLS, 2 cores" in log, log
    assert f"listening on 0.0.0.0:{server.port}: XMPP clients, STARTTLS, 2 cores" in log, log


def test_a_second_martlet_on_the_same_port_refuses_to_start(martlet_server, server_dir):
    first = martlet_server()
    second = server_dir("second")
    set_listen(second, f'"127.0.0.1:{first.port}"')
    code, out = serve_expecting_refusal(second)
    assert code != 0
    assert f"c2s.listen 127.0.0.1:{first.port}: address already in use" in out, out
    # The first one still takes every connection.
    for _ in range(4):
        assert "<stream:features>" in Raw(first.port).open()


def test_martlet_refuses_an_address_another_program_holds_with_so_reuseport(server_dir):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = server_dir("taken")
        set_listen(server, f'"127.0.0.1:{port}"')
        code, out = serve_expecting_refusal(server)
        assert code != 0
        assert f"c2s.listen 127.0.0.1:{port}: address already in use" in out, out
    finally:
        holder.close()


def test_a_taken_metrics_port_is_refused_too(martlet_server, server_dir):
    first = martlet_server()
    second = server_dir("metrics")
    text = second.config.read_text().replace(f"127.0.0.1:{second.metrics_port}", f"127.0.0.1:{first.metrics_port}")
    second.config.write_text(text)
    code, out = serve_expecting_refusal(second)
    assert code != 0
    assert f"metrics.listen 127.0.0.1:{first.metrics_port}: address already in use" in out, out


def wait_for_log(server, text, timeout=20, poke=None):
    """Waits until `text` is in the server's log, calling `poke` (if any) between looks."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = server.log_path.read_text()
        if text in log:
            return log
        if poke:
            poke()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log:\n{server.log_path.read_text()[-3000:]}")


def fail_logins(server, attempts):
    """Opens a TLS stream and fails PLAIN `attempts` times on it (3 = auth_failures_max ends it)."""
    raw = Raw(server.port)
    raw.open()
    raw.starttls(server.ca)
    for _ in range(attempts):
        assert "<not-authorized/>" in raw.auth_plain("alice", "wrong-" + PASSWORD)
    raw.close()


def test_a_failed_login_is_logged_with_user_address_mechanism_and_reason(martlet_server):
    server = martlet_server()
    log = server.log_path.read_text()
    # The start names the domain, the storage and the certificate.
    assert "serving localhost" in log and f"storage: embedded (redb) in {server.data}" in log, log
    assert "subject CN=localhost, expires " in log, log
    fail_logins(server, 1)
    wait_for_log(server, 'authentication failed: user alice@localhost from 127.0.0.1, mechanism "PLAIN": not-authorized')


def test_a_flood_of_failed_logins_is_rate_limited_in_the_log(martlet_server):
    per_minute = 10
    server = martlet_server(log={"security_events_per_minute": per_minute},
                            limits={"auth_failures_per_ip_per_minute": 1000})
    streams = 20
    for _ in range(streams):
        fail_logins(server, 3)
    # Counted just after the <failure/> is written: the last may trail the client a little.
    deadline = time.time() + 5
    while server.metric_sum("martlet_auth_failures_total") < 3 * streams and time.time() < deadline:
        time.sleep(0.05)
    assert server.metric_sum("martlet_auth_failures_total") == 3 * streams, "every failure is counted"
    logged = server.log_path.read_text().count("authentication failed:")
    # Each of the 2 cores lets a burst of `per_minute` through, then one line every 6 s.
    assert 0 < logged <= 2 * per_minute + 2, logged
    # Once a core may log again, it says how many lines it left out.
    log = wait_for_log(server, "security log lines suppressed on this core", timeout=30,
                       poke=lambda: fail_logins(server, 1))
    suppressed = [int(line.split(" security log lines suppressed")[0].rsplit(" ", 1)[1])
                  for line in log.splitlines() if "security log lines suppressed" in line]
    assert sum(suppressed) > 0, suppressed


def test_the_dev_server_config_listens_on_loopback_only():
    """scripts/dev-server.sh's demo accounts have the password "demo": nobody but this
    machine may reach them."""
    import ipaddress
    import tomllib
    from conftest import ROOT
    config = ROOT / "scripts" / "dev-server.toml"
    done = subprocess.run([str(BINARY), "check-config", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "on 127.0.0.1:5222, [::1]:5222" in done.stdout, done.stdout
    listens = [a for section in tomllib.loads(config.read_text()).values()
               for key in ("listen", "tls_listen") for a in section.get(key, [])]
    assert any(a.endswith(":5281") for a in listens), "web clients too, over TLS"
    hosts = {a.rsplit(":", 1)[0].strip("[]") for a in listens}
    assert hosts == {"127.0.0.1", "::1"} and all(ipaddress.ip_address(h).is_loopback for h in hosts), listens


def test_a_handshake_timeout_is_logged(martlet_server):
    server = martlet_server(limits={"handshake_timeout_secs": 1})
    raw = Raw(server.port)
    raw.open()  # then nothing: a slowloris
    assert raw.closed_by_server(timeout=15)
    wait_for_log(server, "stream closed with <connection-timeout/>: the stream was not set up in time")
