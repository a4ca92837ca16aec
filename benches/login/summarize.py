"""The table of scripts/bench-login.sh, from the clients' reports and the latency proxy's log.

    summarize.py RTT_MS PROXY_LOG RTT_REPORTS DIRECT_REPORTS

RTT_REPORTS: the JSON lines of the logins through the proxy (legacy.py, login.mjs);
DIRECT_REPORTS: those of the same logins straight to the server. Each login through the
proxy is matched with the last connection the proxy accepted between its start and the
moment it was usable, and that connection's round trips are counted up to that moment
(latency_proxy.round_trips), with the time the server took to answer them, as the
proxy saw it (latency_proxy.server_waits). Prints a markdown table, the legacy / FAST +
resume ratio, and the round trips of each method's last login, burst by burst.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latency_proxy import server_waits  # noqa: E402

LABELS = {
    "legacy": "legacy: slixmpp, RFC 6120 SASL SCRAM + bind + XEP-0198 enable",
    "sasl2": "SASL2 first login: SCRAM-SHA-1 + Bind 2 + SM inline + token request",
    "fast": "FAST token login + Bind 2 + SM inline",
    "resume": "FAST + resume (reconnect after a dropped socket)",
    "resume-directtls": "FAST + resume over XEP-0368 Direct TLS",
}
# Clocks: the clients' Unix times and the proxy's come from different processes; a server
# burst written up to this long after a client's "usable" still counts (the next one comes
# a whole RTT later at the earliest).
SLACK_FRACTION_OF_RTT = 0.25


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def by_method(reports):
    out = defaultdict(list)
    for r in reports:
        out[r["method"]].append(r)
    return out


def fmt(x):
    return f"{x:.1f}"


def span(values):
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def bursts(events, until):
    """One connection's chunks up to `until` as bursts, "→ 80+150 ← 184+867 (0.4 ms)": the
    bytes of each chunk (TLS records included) and the server's time to answer, taken as
    latency_proxy.server_waits takes them."""
    out, cur = [], None
    for e in sorted(events, key=lambda e: e["read"]):
        if e["dir"] == "c2s" and e["read"] > until:
            break
        if e["dir"] == "s2c" and e["written"] > until:
            continue
        if cur is None or cur["dir"] != e["dir"]:
            cur = {"dir": e["dir"], "bytes": []}
            out.append(cur)
        cur["bytes"].append(str(e["bytes"]))
    if out and out[-1]["dir"] == "c2s":
        out.pop()  # sent once usable, within the slack: the client's next step, not the login
    waits = iter(server_waits(events, until))
    text = []
    for i, b in enumerate(out):
        wait = next(waits, None) if b["dir"] == "s2c" and i > 0 else None
        wait = "" if wait is None else f" ({wait * 1000:.1f} ms)"
        text.append(f"{'→' if b['dir'] == 'c2s' else '←'} {'+'.join(b['bytes'])}{wait}")
    return " ".join(text)


def main():
    rtt_ms, proxy_log, rtt_reports, direct_reports = float(sys.argv[1]), *sys.argv[2:5]
    slack = rtt_ms / 1000 * SLACK_FRACTION_OF_RTT
    opened, events = {}, defaultdict(list)
    for rec in lines(proxy_log):
        if "open" in rec:
            opened[rec["conn"]] = rec["open"]
        elif "dir" in rec:
            events[rec["conn"]].append(rec)
    timed, direct = by_method(lines(rtt_reports)), by_method(lines(direct_reports))
    rtt = int(rtt_ms) if rtt_ms == int(rtt_ms) else rtt_ms
    print(f"| method | round trips counted by the proxy | RTT {rtt} ms: median ms | max ms | median ms/RTT "
          f"| RTT 0 (direct): median ms | max ms | (median − median at RTT 0)/RTT | server ms (proxy's view) |")
    print("|---|---|---|---|---|---|---|---|---|")
    medians, counts, traces = {}, {}, {}
    for method, label in LABELS.items():
        if method not in timed:
            continue
        trips, server = [], []
        for r in timed[method]:
            conns = [c for c, t in opened.items() if r["start"] - slack <= t <= r["usable"]]
            if not conns:
                sys.exit(f"summarize: no proxy connection for {method} login {r['i']}")
            conn = max(conns, key=lambda c: opened[c])
            waits = server_waits(events[conn], until=r["usable"] + slack)
            trips.append(len(waits))
            traces[method] = bursts(events[conn], r["usable"] + slack)
            server.append(sum(waits) * 1000)
        ms = [r["ms"] for r in timed[method]]
        zero = [r["ms"] for r in direct.get(method, [])]
        medians[method], counts[method] = statistics.median(ms), statistics.median(trips)
        if zero:
            waits = (medians[method] - statistics.median(zero)) / rtt_ms
            zero_cells = f"{fmt(statistics.median(zero))} | {fmt(max(zero))} | {waits:.2f}"
        else:
            zero_cells = "– | – | –"
        print(f"| {label} | {span(trips)} | {fmt(medians[method])} | {fmt(max(ms))} | "
              f"{medians[method] / rtt_ms:.2f} | {zero_cells} | {fmt(statistics.median(server))} |")
    if "legacy" in medians and "resume" in medians:
        print()
        print(f"legacy / FAST + resume at RTT {rtt} ms: {medians['legacy'] / medians['resume']:.2f}x the time "
              f"({fmt(medians['legacy'])} vs {fmt(medians['resume'])} ms), "
              f"{counts['legacy']:g} vs {counts['resume']:g} round trips counted by the proxy.")
    print()
    print("The last login of each, as the proxy saw it: → client bytes, ← server bytes (per chunk read; "
          "TLS records included) and the server's time to answer:")
    print()
    for method, trace in traces.items():
        print(f"- {method}: {trace}")


if __name__ == "__main__":
    main()
