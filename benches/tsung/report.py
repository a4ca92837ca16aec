"""Reads a Tsung run of benches/tsung/paper.xml (dumptraffic="true") and prints a markdown
table: Tsung's own figures from tsung.log, and delivery and latency counted from the
traffic dump, since Tsung's xmpp_msg_latency undercounts. A chat is matched by its sender
and id: sent by the session whose bind answer named that user, received with from='user'.

    python3 report.py LOG_DIR
"""
import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"^(Send|Recv):([0-9.]+):(<[0-9.]+>):(.*)$")
BOUND = re.compile(r"<jid>([^@<]+)@")
SENT = re.compile(r"<message id='([^']+)'")
RECEIVED = re.compile(r"<message [^>]*from='([^@']+)@[^']*' id='([^']+)'")


def tsung_stats(log_dir):
    """The final cumulative value of each counter in tsung.log (the last dump's lines)."""
    stats = {}
    for line in (log_dir / "tsung.log").read_text().splitlines():
        if line.startswith("stats: "):
            fields = line.split()
            stats[fields[1]] = fields[2:]
    return stats


def traffic(log_dir):
    user_of, sent, latencies = {}, {}, []
    received = 0
    for line in (log_dir / "tsung.dump").open(errors="replace"):
        m = LINE.match(line.rstrip("\n"))
        if not m:
            continue
        kind, ts, pid, data = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if kind == "Recv":
            if pid not in user_of and (b := BOUND.search(data)):
                user_of[pid] = b.group(1)
            for frm, mid in RECEIVED.findall(data):
                received += 1
                if (frm, mid) in sent:
                    latencies.append((ts - sent[(frm, mid)]) * 1000)
        else:
            for mid in SENT.findall(data):
                sent[(user_of.get(pid, pid), mid)] = ts
    return len(sent), received, sorted(latencies)


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))] if sorted_values else float("nan")


def main():
    log_dir = Path(sys.argv[1])
    stats = tsung_stats(log_dir)
    sent, received, lat = traffic(log_dir)
    # Sample stats end with the whole run's mean and count; counters with the total.
    login = stats.get("tr_login", [])
    rows = [
        ("users started / finished", f"{stats.get('users_count', ['', '?'])[-1]} / {stats.get('finish_users_count', ['', '?'])[-1]}"),
        ("logins (tr_login) count", login[-1] if login else "?"),
        ("login mean ms (SASL PLAIN to the session IQ answered)", f"{float(login[-2]):.1f}" if login else "?"),
        ("connect mean ms", f"{float(stats['connect'][-2]):.2f}" if "connect" in stats else "?"),
        ("chats sent", sent),
        ("chats received", received),
        ("delivery ratio", f"{received / sent:.4f}" if sent else "?"),
        ("latency p50 ms", f"{pct(lat, 0.5):.2f}"),
        ("latency p99 ms", f"{pct(lat, 0.99):.2f}"),
        ("latency max ms", f"{lat[-1]:.2f}" if lat else "?"),
        ("latency mean ms", f"{statistics.fmean(lat):.2f}" if lat else "?"),
        ("errors", ", ".join(f"{k} {v[-1]}" for k, v in stats.items() if k.startswith("error")) or "none"),
    ]
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
