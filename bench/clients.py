#!/usr/bin/env python3
"""Opens many logged-in PostgreSQL client connections and holds them idle.

usage: clients.py HOST PORT USER COUNT HOLD_SECONDS

Each connection sends a protocol 3.0 StartupMessage (no password: the benchmark's user
authenticates by trust) and reads until ReadyForQuery. Prints one line,
`connected=N failed=M`, once every connection has either logged in or failed, then holds
them for HOLD_SECONDS (so the caller can measure the server's memory) and exits.
"""
import selectors
import socket
import struct
import sys
import time


def startup(user):
    body = struct.pack("!I", 196608)
    for key, value in (("user", user), ("database", "postgres"), ("application_name", "clients.py")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def main():
    host, port, user, count, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    sel = selectors.DefaultSelector()
    pending, ok, failed, socks = {}, 0, 0, []
    packet = startup(user)
    deadline = time.time() + 120
    opened = 0
    while opened < count or pending:
        # Open in waves of 500 so the listen backlog is not overrun.
        while opened < count and len(pending) < 500:
            s = socket.socket()
            try:
                s.connect((host, port))
                s.sendall(packet)
            except OSError:
                failed += 1
                opened += 1
                s.close()
                continue
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            pending[s] = b""
            socks.append(s)
            opened += 1
        if time.time() > deadline:
            failed += len(pending)
            break
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                del pending[s]
                failed += 1
                continue
            buf = pending[s] + data
            done = False
            while len(buf) >= 5:
                tag, length = buf[0:1], struct.unpack("!I", buf[1:5])[0]
                if len(buf) < 1 + length:
                    break
                if tag == b"E":
                    failed += 1
                    done = True
                    break
                if tag == b"Z":
                    ok += 1
                    done = True
                    break
                buf = buf[1 + length:]
            if done:
                sel.unregister(s)
                del pending[s]
            else:
                pending[s] = buf
    print(f"connected={ok} failed={failed}", flush=True)
    time.sleep(hold)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
