"""`martlet room list|info|create|destroy` (issue 11, operations): the operator's commands
for XEP-0045 rooms, sent over the admin socket of a running server and answered by the
room's own actor. Occupants are slixmpp clients; what they see is read from what slixmpp
parsed. The cross-node case (a room owned by another node) is in test_cluster.py."""
import asyncio

from clients import close
from test_muc import codes, muc_client, wait_for

SERVICE = "conference.localhost"
TEAM = f"team@{SERVICE}"


def room_cli(server, *args, check=True):
    return server.cli("room", *args, check=check)


def test_an_operator_creates_inspects_lists_and_destroys_a_room(martlet_server):
    server = martlet_server(users=("alice", "bob"))
    created = room_cli(server, "create", "team", "--owner", "alice@localhost", "--name", "Team")
    assert f"created {TEAM}" in created.stdout
    again = room_cli(server, "create", TEAM, "--owner", "bob@localhost", check=False)
    assert again.returncode != 0 and "exists" in again.stderr
    assert f"{TEAM}\tpersistent\tpublic\tTeam" in room_cli(server, "list").stdout

    async def run():
        bob = await muc_client(server, "bob")
        # Open at once: bob enters without creating it (no 201) and without a form.
        pres, _subject, _occupants, _history = await bob.plugin["xep_0045"].join_muc_wait(TEAM, "bob", timeout=10)
        assert 201 not in codes(pres) and 110 in codes(pres), pres
        info = room_cli(server, "info", "team").stdout
        assert "occupants: 1 of" in info and "owners: alice@localhost" in info and "persistent: yes" in info, info
        told = wait_for(bob, f"muc::{TEAM}::presence", lambda p: p["type"] == "unavailable")
        destroyed = await asyncio.to_thread(room_cli, server, "destroy", "team", "--reason", "maintenance")
        assert "1 occupants told" in destroyed.stdout
        p = await told
        assert p["muc"]["destroy"]["reason"] == "maintenance"
        await close(bob)

    asyncio.run(run())
    gone = room_cli(server, "info", "team", check=False)
    assert gone.returncode != 0 and f"no room {TEAM}" in gone.stderr
    assert TEAM not in room_cli(server, "list").stdout


def test_a_created_room_outlives_a_restart_and_bad_names_are_refused(martlet_server):
    server = martlet_server(users=("alice",))
    room_cli(server, "create", "hidden-room", "--owner", "alice@localhost", "--hidden")
    server.restart()
    listed = room_cli(server, "list").stdout
    assert f"hidden-room@{SERVICE}\tpersistent\thidden\t" in listed, listed
    assert "owners: alice@localhost" in room_cli(server, "info", "hidden-room").stdout
    for bad in ("room@localhost", f"@{SERVICE}", "a@b@c"):
        refused = room_cli(server, "info", bad, check=False)
        assert refused.returncode != 0, (bad, refused.stdout)
    no_owner = room_cli(server, "create", "x", "--owner", "not a jid@", check=False)
    assert no_owner.returncode != 0 and "owner" in no_owner.stderr
