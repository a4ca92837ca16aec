"""Clients from other ecosystems against the same server: @xmpp/client (Node) and
go-sendxmpp (Debian), each exchanging messages with a slixmpp user."""
import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from clients import close, login
from conftest import PASSWORD

JS_DIR = Path(__file__).parent / "js"


def test_xmpp_js_client_chats_with_slixmpp(martlet_server):
    server = martlet_server()
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=server.ca)

    async def run():
        bob = await login(server, "bob")
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "chat.mjs"), str(server.port), "alice", PASSWORD, "bob@localhost", "hello from js",
            cwd=JS_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        msg = await bob.next_message(timeout=20)
        # @xmpp/client logs in with SASL2 and Bind 2, whose resource starts with its tag.
        assert msg["body"] == "hello from js" and str(msg["from"]).startswith("alice@localhost/js.")
        bob.send_message(mto=str(msg["from"]), mbody="hello back", mtype="chat")
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert '"body":"hello back"' in out.decode() and '"from":"bob@localhost/test"' in out.decode()
        await close(bob)

    asyncio.run(run())


@pytest.mark.skipif(shutil.which("go-sendxmpp") is None, reason="scripts/test.sh installs go-sendxmpp")
def test_go_sendxmpp_sends_to_slixmpp(martlet_server):
    server = martlet_server()

    async def run():
        bob = await login(server, "bob")
        proc = await asyncio.create_subprocess_exec(
            "go-sendxmpp", "-u", "alice@localhost", "-p", PASSWORD, "-j", f"127.0.0.1:{server.port}", "-n",
            "bob@localhost", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(b"hi from go-sendxmpp"), 20)
        assert proc.returncode == 0, err.decode()
        msg = await bob.next_message()
        assert msg["body"] == "hi from go-sendxmpp" and msg["from"].bare == "alice@localhost"
        await close(bob)

    asyncio.run(run())


@pytest.mark.skipif(shutil.which("go-sendxmpp") is None, reason="scripts/test.sh installs go-sendxmpp")
def test_go_sendxmpp_direct_tls_listener_receives(martlet_server):
    server = martlet_server()

    async def run():
        listener = await asyncio.create_subprocess_exec(
            "go-sendxmpp", "-u", "bob@localhost", "-p", PASSWORD, "-j", f"127.0.0.1:{server.tls_port}", "-n", "-l",
            "--tls", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        alice = await login(server, "alice")
        try:
            line = b""
            for _ in range(40):  # the listener needs a moment to come online
                alice.send_message(mto="bob@localhost", mbody="ping go", mtype="chat")
                try:
                    line = await asyncio.wait_for(listener.stdout.readline(), 0.5)
                    break
                except asyncio.TimeoutError:
                    continue
            assert b"ping go" in line, line
        finally:
            listener.kill()
            await listener.wait()
            await close(alice)

    asyncio.run(run())
