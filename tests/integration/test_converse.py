"""Converse.js, a web client nobody here wrote, in Debian's Chromium (headless, driven by
puppeteer-core) over martlet's RFC 7395 WebSocket endpoint, plain and over TLS
(`[http] tls_listen`, wss://), and over its XEP-0206 BOSH endpoint (from a page of another
origin, so through CORS): it logs in, sees a contact's
presence, exchanges messages with a slixmpp user, and logs in again after a page reload.
A screenshot is kept (and its path printed) when a step fails."""
import asyncio
import base64
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading

import pytest

from clients import close, login
from conftest import PASSWORD, free_port
from test_other_clients import JS_DIR
from test_presence import subscribe_both_ways
from test_websocket import ws_server

CHROMIUM = shutil.which("chromium")


def spki_sha256(cert_pem):
    """What Chromium's --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the
    certificate's SubjectPublicKeyInfo."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", cert_pem], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def serve_page(directory, option, url, jid):
    """The test page and Converse's files over HTTP on 127.0.0.1, as a site would serve them;
    Converse connects to `url`, given as its setting `option`."""
    page = (JS_DIR / "converse.html").read_text()
    page = page.replace("CONNECTION_OPTION", option).replace("CONNECTION_URL", url)
    page = page.replace("JID", jid).replace("PASSWORD", PASSWORD)
    (directory / "index.html").write_text(page)
    (directory / "dist").symlink_to(JS_DIR / "node_modules" / "converse.js" / "dist")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/index.html"


@pytest.mark.skipif(CHROMIUM is None, reason="scripts/test.sh installs Debian's chromium")
@pytest.mark.parametrize("transport", ["websocket", "bosh", "wss"])
def test_converse_in_chromium_chats_sees_presence_and_survives_a_reload(martlet_server, tmp_path, transport):
    tls_port = free_port()
    server = ws_server(martlet_server, http={"tls_listen": f"127.0.0.1:{tls_port}"})
    site = tmp_path / "site"
    site.mkdir()
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    if transport == "websocket":
        option, endpoint = "websocket_url", f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
    elif transport == "bosh":
        option, endpoint = "bosh_service_url", f"http://127.0.0.1:{server.http_port}/http-bind"
    else:
        # [http] tls_listen, its self-signed certificate trusted by its key alone.
        option, endpoint = "websocket_url", f"wss://localhost:{tls_port}/xmpp-websocket"
        env["TRUSTED_SPKI"] = spki_sha256(server.ca)
    httpd, url = serve_page(site, option, endpoint, "alice@localhost")
    shot = tmp_path / "converse-failure.png"

    async def run():
        # alice and bob are mutual contacts first (as alice's other client made them).
        alice = await login(server, "alice", resource="setup")
        bob = await login(server, "bob")
        await subscribe_both_ways(alice, bob)
        await close(alice)
        bob.send_presence()

        proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "converse.mjs"), url, str(shot), cwd=JS_DIR,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        async def step(name, timeout=60):
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
                if not line:
                    err = (await proc.stderr.read()).decode()[-3000:]
                    raise AssertionError(f"Converse stopped before '{name}' (screenshot: {shot})\n{err}")
                if json.loads(line)["event"] == name:
                    return

        await step("connected")
        await step("bob-online")
        await step("sent")
        msg = await bob.next_message(timeout=20)
        assert msg["body"] == "hello from converse" and str(msg["from"]).startswith("alice@localhost/")
        bob.send_message(mto="alice@localhost", mbody="hello back", mtype="chat")
        await step("received")
        await step("reconnected")
        bob.send_message(mto="alice@localhost", mbody="after reload", mtype="chat")
        await step("received-after-reload")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        if transport == "bosh":
            assert server.metric_sum("martlet_bosh_requests_total") > 0, "Converse spoke BOSH"
        await close(bob)

    try:
        asyncio.run(run())
    finally:
        httpd.shutdown()
