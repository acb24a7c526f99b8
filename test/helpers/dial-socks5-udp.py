#!/usr/bin/env python3
"""A tiny independent SOCKS5 server with UDP ASSOCIATE (RFC 1928) and optional
RFC 1929 username/password, for test/dial-socks5.test.ts only. Python stdlib,
loopback only. It shares no code with brook-ts.

argv: [username password]. Prints "PORT <tcp port>" when listening, then
"ASSOC <relay port>" per association and "CLOSED <relay port>" when one ends.
A line "drop" on stdin closes every control connection (the test's way to cut
an association from the proxy side). Exits when stdin closes.
"""
import select
import socket
import struct
import sys
import threading

USER = sys.argv[1].encode() if len(sys.argv) > 2 else None
PASS = sys.argv[2].encode() if len(sys.argv) > 2 else None
controls = []
lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError()
        b += d
    return b


def read_addr(c):
    atyp = recv_exact(c, 1)[0]
    if atyp == 1:
        host = socket.inet_ntop(socket.AF_INET, recv_exact(c, 4))
    elif atyp == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(c, 16))
    elif atyp == 3:
        host = recv_exact(c, recv_exact(c, 1)[0]).decode()
    else:
        raise ValueError("atyp")
    port = struct.unpack(">H", recv_exact(c, 2))[0]
    return host, port


def parse_udp(d):
    """RSV RSV FRAG ATYP ADDR PORT DATA -> ((host, port), data)"""
    if len(d) < 4 or d[2] != 0:
        return None
    atyp = d[3]
    if atyp == 1:
        host, o = socket.inet_ntop(socket.AF_INET, d[4:8]), 8
    elif atyp == 4:
        host, o = socket.inet_ntop(socket.AF_INET6, d[4:20]), 20
    elif atyp == 3:
        n = d[4]
        host, o = d[5:5 + n].decode(), 5 + n
    else:
        return None
    port = struct.unpack(">H", d[o:o + 2])[0]
    return (host, port), d[o + 2:]


def handle(c):
    try:
        ver, n = recv_exact(c, 2)
        methods = recv_exact(c, n)
        want = 2 if USER else 0
        if ver != 5 or want not in methods:
            c.sendall(b"\x05\xff")
            return
        c.sendall(bytes([5, want]))
        if USER:
            v, ulen = recv_exact(c, 2)
            u = recv_exact(c, ulen)
            plen = recv_exact(c, 1)[0]
            p = recv_exact(c, plen)
            ok = u == USER and p == PASS
            c.sendall(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        ver, cmd, _ = recv_exact(c, 3)
        read_addr(c)
        if cmd != 3:
            c.sendall(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        # BND.ADDR 0.0.0.0: the client must use the proxy's own address
        c.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00" + struct.pack(">H", port))
        with lock:
            controls.append(c)
        say("ASSOC %d" % port)
        client = None
        try:
            while True:
                r, _, _ = select.select([c, u], [], [], 30)
                if not r:
                    break
                if c in r:
                    if not c.recv(512):
                        break
                if u in r:
                    d, src = u.recvfrom(65535)
                    if client is None or src == client:
                        p = parse_udp(d)
                        if p is None:
                            continue
                        client = src
                        (host, dport), data = p
                        u.sendto(data, (host, dport))
                    else:
                        hdr = b"\x00\x00\x00\x01" + socket.inet_aton(src[0]) + struct.pack(">H", src[1])
                        u.sendto(hdr + d, client)
        finally:
            u.close()
            say("CLOSED %d" % port)
    except (EOFError, OSError, ValueError):
        pass
    finally:
        try:
            c.close()
        except OSError:
            pass


def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    say("PORT %d" % s.getsockname()[1])

    def accept_loop():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    for line in sys.stdin:
        if line.strip() == "drop":
            with lock:
                for c in controls:
                    try:
                        c.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                controls.clear()
    s.close()


if __name__ == "__main__":
    main()
