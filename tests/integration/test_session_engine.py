"""The session engine's memory per idle session (issue: a million connections).

An idle session's cost is mostly two spawned futures: its own task and its user's actor.
Their sizes are exported as gauges when spawned; a change that makes them grow (a large
future held across an await, an argument kept twice) fails here, not at a million sessions.
"""
from rawxmpp import Raw
from conftest import PASSWORD

# Measured: 1,232 and 376 bytes (2026-12-06; 1,320 and 376 on 2026-12-05, 2,048 and 792
# before). The limits are allocator size classes, not margins: glommio's task adds 48
# bytes (its header and schedule handle), and mimalloc rounds a 1,281-byte task up to
# 1,536, a 449-byte one up to 512. A byte over costs a whole class per idle session.
SESSION_TASK_BYTES_MAX = 1280 - 48
USER_TASK_BYTES_MAX = 448 - 48


def test_an_idle_sessions_task_and_its_users_actor_stay_small(martlet_server):
    server = martlet_server()
    raws = []
    for user in ("alice", "bob"):
        raw = Raw(server.port)
        raw.login(server.ca, user, PASSWORD)
        raws.append(raw)
    m = server.metrics()
    session_bytes = max(v for (n, _), v in m.items() if n == "martlet_session_task_bytes")
    user_bytes = max(v for (n, _), v in m.items() if n == "martlet_user_task_bytes")
    assert 0 < session_bytes <= SESSION_TASK_BYTES_MAX, session_bytes
    assert 0 < user_bytes <= USER_TASK_BYTES_MAX, user_bytes
    for raw in raws:
        raw.close()
