#!/usr/bin/env python3
"""A versioned app for the Service e2e tests (seed 004's canary): real servers that say which
version they are and count the connections they serve, and one client process that makes many
sequential connections to a Service and tallies who answered.

  serve --port P --version V [--bind ADDR]
      Per connection: read to EOF hashing with sha256, reply
      "version=V n=<count> sha256=<hex> bytes=<n>\\n" followed by the bytes received (echo),
      close. Prints {"event":"listening"} once, then one JSON line per connection served
      ({"event":"conn","version","n","peer","bytes","sha256"}): the count is at the app.

  connect HOST:PORT --count N [--sample-every K] [--sample-bytes B] [--max-s S]
      N sequential connections from this one process. Each sends 8 bytes, except every K-th,
      which sends B random bytes and checks the server's sha256 and the echo (sha256-intact
      both ways). HOST is resolved once. Prints one JSON summary: {"target","count","ok","versions":{V:n},"errors":{name:n},
      "samples","samples_intact","first_error","seconds"}. Bounded: stops after S seconds.

  errno HOST:PORT
      One connect(); prints {"connect":"ok"|errno name,"errno":n}.
"""
import argparse
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import time

IO_TIMEOUT_S = 10


def split_target(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def serve(args):
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(512)
    lock = threading.Lock()
    served = [0]
    print(json.dumps({"event": "listening", "port": args.port, "version": args.version}), flush=True)

    def handle(conn, peer):
        # Why a thread per connection: a stalled client must not hold up the others.
        with conn:
            conn.settimeout(IO_TIMEOUT_S)
            h, got = hashlib.sha256(), bytearray()
            try:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    h.update(b)
                    got += b
                with lock:
                    served[0] += 1
                    n = served[0]
                head = "version=%s n=%d sha256=%s bytes=%d\n" % (args.version, n, h.hexdigest(), len(got))
                conn.sendall(head.encode() + bytes(got))
            except OSError as e:
                print(json.dumps({"event": "error", "peer": "%s:%d" % peer[:2], "error": str(e)}), flush=True)
                return
            with lock:
                print(json.dumps({"event": "conn", "version": args.version, "n": n,
                                  "peer": "%s:%d" % peer[:2], "bytes": len(got),
                                  "sha256": h.hexdigest()}), flush=True)

    while True:
        conn, peer = ls.accept()
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def errno_name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def one_connection(host, port, payload):
    """Returns (version, intact) or raises OSError / ValueError."""
    with socket.create_connection((host, port), timeout=IO_TIMEOUT_S) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, sep, body = bytes(data).partition(b"\n")
    if not sep:
        raise ValueError("no header in %d bytes" % len(data))
    fields = dict(kv.split("=", 1) for kv in head.decode().split())
    want = hashlib.sha256(payload).hexdigest()
    intact = fields.get("sha256") == want and int(fields.get("bytes", -1)) == len(payload) \
        and hashlib.sha256(body).hexdigest() == want
    return fields.get("version", "?"), intact


def connect(args):
    host, port = split_target(args.target)
    # Resolved once, as an app with a DNS cache would: the lab DNS is not what is measured.
    host = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    res = {"target": "%s:%d" % (host, port), "count": args.count, "ok": 0, "versions": {}, "errors": {}, "samples": 0,
           "samples_intact": 0, "first_error": None}
    t0 = time.monotonic()
    for i in range(args.count):
        if time.monotonic() - t0 > args.max_s:
            res["errors"]["time_limit"] = args.count - i
            break
        sample = args.sample_every > 0 and i % args.sample_every == 0
        payload = os.urandom(args.sample_bytes if sample else 8)
        try:
            version, intact = one_connection(host, port, payload)
        except (OSError, ValueError) as e:
            name = errno_name(e) if isinstance(e, OSError) else "BAD_REPLY"
            res["errors"][name] = res["errors"].get(name, 0) + 1
            res["first_error"] = res["first_error"] or "connection %d: %s: %s" % (i, name, e)
            continue
        res["ok"] += 1
        res["versions"][version] = res["versions"].get(version, 0) + 1
        if sample:
            res["samples"] += 1
            res["samples_intact"] += int(intact)
    res["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(res), flush=True)


def errno_check(args):
    host, port = split_target(args.target)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT_S)
    try:
        s.connect((host, port))
        out = {"connect": "ok", "errno": 0}
    except OSError as e:
        out = {"connect": errno_name(e), "errno": e.errno}
    finally:
        s.close()
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--version", required=True)
    s.add_argument("--bind", default="0.0.0.0")
    c = sub.add_parser("connect")
    c.add_argument("target")
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--sample-every", type=int, default=50)
    c.add_argument("--sample-bytes", type=int, default=65536)
    c.add_argument("--max-s", type=float, default=120)
    e = sub.add_parser("errno")
    e.add_argument("target")
    args = p.parse_args()
    {"serve": serve, "connect": connect, "errno": errno_check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
