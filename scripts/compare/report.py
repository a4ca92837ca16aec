"""Renders scripts/compare.sh results as markdown tables: one column per server, then the
ratio martlet/peer for each peer (martlet/relay: martlet's figure as a multiple of the raw
relay's, the box's ceiling).

    report.py SCENARIO RESULTS_DIR SERVER...

RESULTS_DIR/<server>/ holds loadgen's JSON (paper.json, memory.json, storm.json,
presence.json, knee.json, cpu-per-msg.json, room.json).
"""
import json
import os
import sys

# (JSON key, label, direction): direction says which way is better, for the reader of a ratio.
FIGURES = {
    "paper": [
        ("users_online", "users online", None),
        ("login_errors", "login errors", None),
        ("logins_per_sec", "logins/s", "higher"),
        ("sent", "messages sent", None),
        ("send_errors", "send errors", None),
        ("delivered", "messages delivered", None),
        ("delivery_ratio", "delivery ratio", "higher"),
        ("latency_mean_ms", "latency mean ms", "lower"),
        ("latency_p50_ms", "latency p50 ms", "lower"),
        ("latency_p90_ms", "latency p90 ms", "lower"),
        ("latency_p99_ms", "latency p99 ms", "lower"),
        ("latency_p999_ms", "latency p99.9 ms", "lower"),
        ("latency_max_ms", "latency max ms", "lower"),
    ],
    "memory": [
        ("sessions", "sessions held", None),
        ("login_errors", "login errors", None),
        ("logins_per_sec", "logins/s", "higher"),
        ("server_rss_before_bytes", "server RSS before, MiB", None),
        ("server_rss_after_bytes", "server RSS with the sessions, MiB", None),
        ("server_rss_per_session_bytes", "RSS per session, bytes", "lower"),
    ],
    "presence": [
        ("users_online", "users online", None),
        ("login_errors", "login errors", None),
        ("setup_secs", "roster setup, s", None),
        ("expected_per_kind", "broadcasts expected, each of unavailable/available", None),
        ("unavailable_delivered", "unavailable delivered", None),
        ("available_delivered", "available delivered", None),
        ("delivery_ratio", "delivery ratio", "higher"),
        ("presence_delivered_per_sec", "presence delivered/s over the paced rounds", None),
        ("latency_mean_ms", "latency mean ms (bound to fan-out)", "lower"),
        ("latency_p50_ms", "latency p50 ms", "lower"),
        ("latency_p99_ms", "latency p99 ms", "lower"),
        ("latency_max_ms", "latency max ms", "lower"),
        ("server_cpu_us_per_unavailable_delivered", "server CPU µs per unavailable delivered (leaving phases)", "lower"),
        ("server_cpu_pct_of_core_rounds", "server CPU over the paced rounds, % of one core", None),
    ],
    "storm": [
        ("sessions", "sessions before the storm", None),
        ("login_errors", "login errors (first logins)", None),
        ("logins_per_sec", "logins/s (first logins)", "higher"),
        ("storm_reconnected", "sessions back after the storm", None),
        ("storm_errors", "reconnect errors", None),
        ("storm_secs", "time until all were back, s", "lower"),
        ("latency_p50_ms", "one reconnect, p50 ms", "lower"),
        ("latency_p99_ms", "one reconnect, p99 ms", "lower"),
        ("latency_max_ms", "one reconnect, max ms", "lower"),
    ],
    "room": [
        ("users_online", "users online", None),
        ("login_errors", "login errors", None),
        ("occupants", "occupants joined", None),
        ("join_errors", "join errors", None),
        ("join_secs", "join time of all occupants, s", "lower"),
        ("joins_per_sec", "joins/s", "higher"),
        ("join_p50_ms", "one join, p50 ms", "lower"),
        ("join_p99_ms", "one join, p99 ms", "lower"),
        ("offered_msgs_per_sec", "fixed rate, msg/s", None),
        ("delivery_ratio", "delivery at the fixed rate (copies / messages × occupants)", "higher"),
        ("messages_incomplete", "messages some occupant missed", None),
        ("fanout_p50_ms", "send to last occupant, p50 ms", "lower"),
        ("fanout_p99_ms", "send to last occupant, p99 ms", "lower"),
        ("fanout_max_ms", "send to last occupant, max ms", "lower"),
        ("copy_p50_ms", "send to each copy, p50 ms", "lower"),
        ("copy_p99_ms", "send to each copy, p99 ms", "lower"),
        ("server_cpu_pct_of_core", "server CPU at the fixed rate, % of one core", None),
        ("server_cpu_us_per_copy", "server CPU µs per copy at the fixed rate", "lower"),
        ("generator_cpu_pct_of_core", "loadgen CPU at the fixed rate, % of one core", None),
        ("sustained_msgs_per_sec", "sustained room rate, msg/s (highest step that held)", "higher"),
        ("sustained_verdict", "whose limit (server CPU at that step or the failed one above)", None),
        ("first_failed_msgs_per_sec", "first rate that did not hold, msg/s", None),
    ],
}
MIB_KEYS = {"server_rss_before_bytes", "server_rss_after_bytes"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(value, key=""):
    if value is None:
        return "—"
    if key in MIB_KEYS:
        return f"{value / 2**20:.1f}"
    if isinstance(value, float) and value.is_integer() and key != "delivery_ratio":
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}" if key == "delivery_ratio" else f"{value:g}"
    return str(value)


def ratio(ours, theirs):
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)) or theirs == 0:
        return "—"
    return f"{ours / theirs:.2f}×"


def table(rows, servers):
    """rows: (label, direction, {server: value}, key). Prints the markdown table."""
    peers = [s for s in servers if s != "martlet"] if "martlet" in servers else []
    head = ["figure"] + servers + [f"martlet/{p}" for p in peers]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, direction, values, key in rows:
        cells = [label + (f" ({direction} is better)" if direction and peers else "")]
        cells += [fmt(values.get(s), key) for s in servers]
        cells += [ratio(values.get("martlet"), values.get(p)) if direction else "" for p in peers]
        print("| " + " | ".join(cells) + " |")


def scenario_table(scenario, results, servers):
    data = {s: load(os.path.join(results, s, f"{scenario}.json")) or {} for s in servers}
    rows = [(label, d, {s: data[s].get(k) for s in servers}, k) for k, label, d in FIGURES[scenario]]
    table(rows, servers)


def steps_of(data, servers):
    """{server: {offered rate: step}} from stepped results (knee, cpu-per-msg)."""
    return {s: {st["offered_msgs_per_sec"]: st for st in data[s].get("steps", [])} for s in servers}


def knee_tables(results, servers):
    data = {s: load(os.path.join(results, s, "knee.json")) or {} for s in servers}
    steps = steps_of(data, servers)
    knee = {s: data[s].get("knee_msgs_per_sec") for s in servers}
    at_knee = {s: steps[s].get(knee[s], {}) for s in servers}
    rows = [("knee, msg/s offered that held", "higher", knee, ""),
            ("whose knee (server CPU at the knee or the failed step above it)", None,
             {s: data[s].get("knee_verdict") for s in servers}, "")]
    for k, label in [("latency_p50_ms", "p50 ms at the knee"), ("latency_p99_ms", "p99 ms at the knee"),
                     ("latency_p999_ms", "p99.9 ms at the knee"),
                     ("server_cpu_pct_of_cores", "server CPU at the knee, % of the cores it may use"),
                     ("server_cpu_us_per_msg", "server CPU µs per message at the knee"),
                     ("generator_cpu_pct_of_core", "load processes' CPU at the knee, % of one core")]:
        rows.append((label, None, {s: at_knee[s].get(k) for s in servers}, k))
    table(rows, servers)
    print()
    print("Every step (delivered/sent, p50 / p99 / p99.9 ms, server CPU % of its cores); ✗ = did not hold:")

    def cell(r):
        return (f"{r['delivered']}/{r['sent']}, {r['latency_p50_ms']:g} / {r['latency_p99_ms']:g} / "
                f"{r['latency_p999_ms']:g}, {fmt(r.get('server_cpu_pct_of_cores'))} %")
    steps_table(steps, servers, cell)


def steps_table(steps, servers, cell):
    """One row per offered rate, one cell per server: cell(step), ✗ where it did not hold."""
    print()
    print("| offered msg/s | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for rate in sorted({r for s in servers for r in steps[s]}):
        cells = []
        for s in servers:
            r = steps[s].get(rate)
            cells.append("" if not r else cell(r) + ("" if r["held"] else " ✗"))
        print(f"| {rate} | " + " | ".join(cells) + " |")


def room_tables(results, servers):
    scenario_table("room", results, servers)
    data = {s: load(os.path.join(results, s, "room.json")) or {} for s in servers}
    steps = steps_of(data, servers)
    print()
    print("Every step (delivered/expected copies, send-to-last p50 / p99 ms, server CPU % of its cores,")
    print("loadgen CPU % of its core, the room's errors); ✗ = did not hold:")

    def cell(r):
        errors = "".join(f", {k} {v}" for k, v in r["room_errors"].items())
        return (f"{r['copies_delivered']}/{r['copies_expected']}, {r['fanout_p50_ms']:g} / {r['fanout_p99_ms']:g}, "
                f"{fmt(r.get('server_cpu_pct_of_cores'))} %, {fmt(r.get('generator_cpu_pct_of_core'))} %{errors}")
    steps_table(steps, servers, cell)


def cpu_tables(results, servers):
    data = {s: load(os.path.join(results, s, "cpu-per-msg.json")) or {} for s in servers}
    steps = steps_of(data, servers)
    rows = []
    for rate in sorted({r for s in servers for r in steps[s]}):
        at = {s: steps[s].get(rate, {}) for s in servers}
        rows.append((f"server CPU µs per message at {rate} msg/s", "lower",
                     {s: at[s].get("server_cpu_us_per_msg") for s in servers}, ""))
        rows.append((f"server CPU at {rate} msg/s, % of the cores it may use", None,
                     {s: at[s].get("server_cpu_pct_of_cores") for s in servers}, ""))
        rows.append((f"delivered/sent at {rate} msg/s", None,
                     {s: f"{at[s]['delivered']}/{at[s]['sent']}" if at[s] else None for s in servers}, ""))
    table(rows, servers)
    print()
    print("A figure is the cost of a message below saturation only where delivery was whole and the server's")
    print("CPU stayed under 90 % of its cores; the time is the server's over the send and the drain after it.")


def main():
    scenario, results, servers = sys.argv[1], sys.argv[2], sys.argv[3:]
    if scenario == "knee":
        knee_tables(results, servers)
    elif scenario == "cpu":
        cpu_tables(results, servers)
    elif scenario == "room":
        room_tables(results, servers)
    else:
        scenario_table(scenario, results, servers)


if __name__ == "__main__":
    main()
