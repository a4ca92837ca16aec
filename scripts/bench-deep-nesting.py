"""What one connection sending `<a>` x 80,000 before authentication costs the server
(issue 9, item 1):  python3 scripts/bench-deep-nesting.py path/to/martlet
Starts that binary on 127.0.0.1:26522 (`cores = 1`, a temporary directory), sends the
stream header and the open tags, and prints how long until the server closed the
connection (at most 30 s), the server's CPU seconds meanwhile, and whether it answered
with <policy-violation/>."""
import socket, subprocess, time, sys, os, tempfile
binary = sys.argv[1]
d = tempfile.mkdtemp()
open(f"{d}/m.toml","w").write(f'domain = "localhost"\ncores = 1\n[c2s]\nlisten = "127.0.0.1:26522"\n[c2s_direct_tls]\nlisten = ""\n[storage]\npath = "{d}/data"\n')
p = subprocess.Popen([binary, "serve", "--config", f"{d}/m.toml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
c0 = cpu(); t0 = time.time()
s = socket.create_connection(("127.0.0.1", 26522))
s.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
try:
    s.sendall(b"<a>" * 80000)
except OSError:
    pass
s.settimeout(30)
data = b""
try:
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
except Exception:
    pass
t1 = time.time(); time.sleep(0.5)
print(f"closed after {t1-t0:.2f} s, server CPU {cpu()-c0:.3f} s, reply has policy-violation: {b'policy-violation' in data}")
p.terminate(); p.wait()
