"""Messages a resumable session (XEP-0198) never handed to its client, after the session
expires: they reach the user's other resources or offline storage with a XEP-0203 delay
stamped at the time the server took them in, and a copy of a message to the bare JID
does not reach a sibling that had its own."""
import asyncio
import datetime

from clients import close, login
from test_stream_management import lose_connection

RESUME_SECS = 4


def stamp_offset_secs(msg, sent_at):
    stamp = msg["delay"]["stamp"]
    assert stamp is not None, f"no delay stamp on {msg}"
    return (stamp - sent_at).total_seconds()


def test_an_expired_sessions_messages_reach_a_sibling_stamped_and_once(martlet_server):
    server = martlet_server(stream_management={"resume_timeout_secs": RESUME_SECS})

    async def run():
        phone = await login(server, "alice", resource="phone", plugins=("xep_0198",))
        laptop = await login(server, "alice", resource="laptop")
        bob = await login(server, "bob")
        await lose_connection(phone, server, server.metric_sum("martlet_connections"))
        sent_at = datetime.datetime.now(datetime.timezone.utc)
        bob.send_message(mto="alice@localhost", mbody="to both", mtype="chat")
        bob.send_message(mto="alice@localhost/phone", mbody="for the phone", mtype="chat")
        got = [await laptop.next_message(timeout=RESUME_SECS + 5) for _ in range(2)]
        assert [m["body"] for m in got] == ["to both", "for the phone"]
        # Stamped with the time it came in, not the time the phone's session expired.
        offset = stamp_offset_secs(got[1], sent_at)
        assert -1.5 < offset < 1.5, f"stamped {offset:.1f} s after it was sent"
        # The phone's copy of "to both" does not come a second time.
        await asyncio.sleep(1.5)
        assert laptop.messages.empty(), laptop.messages.get_nowait()["body"]
        assert server.metric_sum("martlet_undelivered_copies_dropped_total") == 1
        await close(laptop, bob)

    asyncio.run(run())


def test_an_expired_sessions_messages_are_stored_offline_with_their_arrival_time(martlet_server):
    server = martlet_server(stream_management={"resume_timeout_secs": RESUME_SECS})

    async def run():
        phone = await login(server, "alice", resource="phone", plugins=("xep_0198",))
        bob = await login(server, "bob")
        await lose_connection(phone, server, server.metric_sum("martlet_connections"))
        sent_at = datetime.datetime.now(datetime.timezone.utc)
        bob.send_message(mto="alice@localhost", mbody="while you were out", mtype="chat")
        for _ in range(100):  # the session expires and gives the message back
            if server.metric_sum("martlet_offline_stored_total") == 1:
                break
            await asyncio.sleep(0.1)
        again = await login(server, "alice", resource="other")
        msg = await again.next_message()
        assert msg["body"] == "while you were out"
        offset = stamp_offset_secs(msg, sent_at)
        assert -1.5 < offset < 1.5, f"stamped {offset:.1f} s after it was sent"
        await close(again, bob)

    asyncio.run(run())
