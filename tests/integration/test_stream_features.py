"""RFC 6120 §4.3.2: the features element comes as `<stream:features>`, with the prefix the
stream header declares, at every point a client reads it. loudmouth (mcabber) matches that
literal name and Tsung waits for `</stream:features>`; a default-namespace `<features>`
left both hanging."""
import asyncio
import base64
import os
import shutil
import subprocess
import time

import pytest

from clients import close, login
from conftest import PASSWORD
from rawxmpp import Raw


def after_header(reply):
    """What the server wrote after its stream header."""
    start = reply.index("<stream:stream")
    return reply[reply.index(">", start) + 1:]


def test_features_carry_the_stream_prefix_before_and_after_tls_and_sasl(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    assert after_header(raw.open()).startswith("<stream:features><starttls "), raw.buf
    assert after_header(raw.starttls(server.ca)).startswith("<stream:features><mechanisms "), raw.buf
    assert "<success" in raw.auth_plain("alice", PASSWORD)
    raw.buf = b""
    features = after_header(raw.open())
    assert features.startswith("<stream:features><bind "), features
    assert features.endswith("</stream:features>"), features
    raw.close()


def test_sasl2_features_after_success_carry_the_stream_prefix(martlet_server):
    server = martlet_server()
    raw = Raw(server.port)
    raw.open()
    raw.starttls(server.ca)
    raw.buf = b""
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    raw.send("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'>"
             f"<initial-response>{token}</initial-response><bind xmlns='urn:xmpp:bind:0'/></authenticate>")
    reply = raw.read_until(b"</stream:features>", b"</features>", b"</failure>")
    # SASL2 goes on without a stream restart: the features follow the success directly.
    assert "</success><stream:features>" in reply, reply
    raw.close()


MCABBER = shutil.which("mcabber")
TMUX = shutil.which("tmux")


@pytest.mark.skipif(not (MCABBER and TMUX), reason="needs Debian's mcabber and tmux")
def test_mcabber_logs_in_over_starttls_and_its_message_reaches_slixmpp(martlet_server, tmp_path):
    """mcabber's loudmouth is the strictest reader of the features (see the module doc):
    it logs in over STARTTLS, trusting the dev certificate, and chats to a slixmpp client."""
    server = martlet_server()
    home = tmp_path / "home"
    home.mkdir()
    rc = home / "mcabberrc"
    rc.write_text("\n".join([
        "set jid = alice@localhost", f"set password = {PASSWORD}", "set resource = mcabber",
        "set server = 127.0.0.1", f"set port = {server.port}", "set tls = 1",
        # The dev certificate is its own CA; loudmouth checks the chain against it.
        f"set ssl_ca = {server.ca}", "set ssl_ignore_checks = 0", "",
    ]))
    rc.chmod(0o600)  # mcabber refuses a password in a file others may read
    tmux = [TMUX, "-L", f"martlet-test-{os.getpid()}"]  # our own tmux server, killed below

    async def run():
        bob = await login(server, "bob")
        try:
            subprocess.run(tmux + ["new-session", "-d", "-x", "160", "-y", "40",
                                   f"env HOME={home} TERM=xterm {MCABBER} -f {rc}"], check=True)
            deadline = time.time() + 30
            while server.metric_sum("martlet_sessions") < 2:
                if time.time() > deadline:
                    screen = subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True).stdout
                    pytest.fail(f"mcabber did not log in:\n{screen}")
                await asyncio.sleep(0.2)
            subprocess.run(tmux + ["send-keys", "/say_to bob@localhost hello from mcabber", "Enter"], check=True)
            msg = await bob.next_message(timeout=20)
            # mcabber adds a random suffix to its resource.
            assert msg["body"] == "hello from mcabber" and msg["from"].bare == "alice@localhost", msg
            assert msg["from"].resource.startswith("mcabber"), msg
        finally:
            subprocess.run(tmux + ["kill-server"], capture_output=True)
            await close(bob)

    asyncio.run(run())
