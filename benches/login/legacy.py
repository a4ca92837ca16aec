"""The legacy login of scripts/bench-login.sh: slixmpp over STARTTLS with RFC 6120 SASL
(SCRAM, the strongest both offer), RFC 6120 resource binding and XEP-0198 <enable
resume='true'/>, each a step of its own. Times, inside this process, from connect() to
slixmpp's `sm_enabled` (the session is usable and resumable), N times, one client after
the other (each disconnects before the next connects).

    .venv/bin/python benches/login/legacy.py PORT USER PASSWORD CA_FILE N

One JSON line per login on stdout:
  {"method": "legacy", "i": k, "start": T0, "usable": T1, "ms": …, "mechanism": …}
T0 and T1 are Unix seconds, to match the latency proxy's log; ms is from a monotonic clock.
"""
import asyncio
import json
import ssl
import sys
import time

import slixmpp

DOMAIN = "localhost"
LOGIN_TIMEOUT_SECS = 30


async def login_once(port, user, password, ca):
    client = slixmpp.ClientXMPP(f"{user}@{DOMAIN}/legacy", password)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the dev certificate names the domain, not 127.0.0.1
    client.ssl_context = ctx
    client.enable_plaintext = False
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.register_plugin("xep_0198")
    enabled, failed = asyncio.Event(), asyncio.Event()
    client.add_event_handler("sm_enabled", lambda _: enabled.set())
    client.add_event_handler("failed_auth", lambda _: failed.set())
    start, t0 = time.time(), time.perf_counter()
    client.connect("127.0.0.1", port)
    ok, bad = asyncio.ensure_future(enabled.wait()), asyncio.ensure_future(failed.wait())
    done, pending = await asyncio.wait({ok, bad}, timeout=LOGIN_TIMEOUT_SECS, return_when=asyncio.FIRST_COMPLETED)
    t1, usable = time.perf_counter(), time.time()
    for f in pending:
        f.cancel()
    if ok not in done:
        client.abort()
        raise SystemExit(f"legacy login of {user}: {'auth failed' if bad in done else 'timed out'}")
    mech = client.plugin["feature_mechanisms"].mech
    client.disconnect()
    await client.wait_until("disconnected", LOGIN_TIMEOUT_SECS)
    return {"start": start, "usable": usable, "ms": round((t1 - t0) * 1000, 2),
            "mechanism": mech.name if mech else None}, client


async def main():
    port, user, password, ca, n = sys.argv[1:6]
    for i in range(int(n)):
        result, client = await login_once(int(port), user, password, ca)
        print(json.dumps({"method": "legacy", "i": i, **result}), flush=True)
        # Kept until the end: a disconnected client dropped at once takes slixmpp's
        # still-cancelling send task with it, and asyncio complains.
        finished.append(client)


finished = []


asyncio.run(main())
