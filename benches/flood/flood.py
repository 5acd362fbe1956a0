#!/usr/bin/env python3
"""Floods a server and reports its resident memory: before, peak, after.

usage: flood.py ping|body|frame PID HOST PORT [PROTOCOL_VERSION TOKEN]
"""
import socket, sys, threading, time

mode, pid, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def run_all(one, clients):
    """Runs `one` on `clients` threads at once and waits for them all."""
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()

def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return -1

peak = [0]
stop = [False]
def sampler():
    while not stop[0]:
        try:
            peak[0] = max(peak[0], rss())
        except Exception:
            return
        time.sleep(0.05)

def ws_handshake(path):
    s = socket.create_connection((host, port))
    s.sendall((f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
               "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return s

def ping_flood(seconds=3.0):
    s = ws_handshake("/ChatRoom/lobby/websocket")
    ping = bytes([0x89, 0x80 | 125, 0, 0, 0, 0]) + b"p" * 125
    chunk = ping * 512
    sent, end = 0, time.time() + seconds
    s.settimeout(2.0)
    try:
        while time.time() < end:
            s.sendall(chunk)
            sent += len(chunk)
    except Exception as e:
        print(f"  the server let go after {sent >> 20} MiB of pings ({type(e).__name__})")
        return
    print(f"  {sent >> 20} MiB of pings sent in {seconds} s, still connected")

def body_flood(clients=100, size=16 << 20):
    def one():
        try:
            s = socket.create_connection((host, port))
            s.sendall(f"POST /ChatRoom/lobby/x HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n".encode())
            chunk = b"x" * (1 << 20)
            s.settimeout(10)
            for _ in range(size >> 20):
                s.sendall(chunk)
            time.sleep(1.0)
            s.close()
        except Exception:
            pass
    run_all(one, clients)
    print(f"  {clients} clients sent (or tried) {size >> 20} MiB bodies")

def frame_flood(version, token, clients=60, size=(16 << 20) - 64):
    def varint(n):
        out = b""
        while n >= 0x80:
            out += bytes([(n & 0x7f) | 0x80]); n >>= 7
        return out + bytes([n])
    body = b"\x00" + varint(version) + b"\x01" + varint(len(token)) + token.encode()
    hello = len(body).to_bytes(4, "little") + body
    def one():
        try:
            s = socket.create_connection((host, port))
            s.sendall(hello)
            s.recv(4)
            s.sendall(size.to_bytes(4, "little"))
            chunk = b"\x00" * (1 << 20)
            s.settimeout(10)
            for _ in range((size >> 20) - 1):
                s.sendall(chunk)
            time.sleep(1.5)
            s.close()
        except Exception:
            pass
    run_all(one, clients)
    print(f"  {clients} clients each began a frame of {size >> 20} MiB")

before = rss()
t = threading.Thread(target=sampler); t.start()
if mode == "ping":
    ping_flood()
elif mode == "body":
    body_flood()
else:
    frame_flood(int(sys.argv[5]), sys.argv[6])
time.sleep(0.5)
stop[0] = True; t.join()
time.sleep(1.0)
print(f"  RSS before {before} MiB, peak {peak[0]} MiB, after {rss()} MiB")
