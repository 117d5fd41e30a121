"""The anchor for scripts/bench-peer.sh's small requests: a mutual-TLS 1.3 echo (Python's ssl:
OpenSSL) of BLOCK bytes over one long-lived connection, between the same two namespaces as the
Strata round trips. At depth D the client keeps D requests on the wire at once (pipelined on the
one connection, as HTTP/2 streams share one) and times each from its send to its answer.

Usage:
  tls-echo.py serve TLS_DIR HOST PORT BLOCK
  tls-echo.py client TLS_DIR HOST PORT BLOCK COUNT DEPTH...   prints one JSON object
"""
import json
import socket
import ssl
import sys
import time


def context(tls, server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(f"{tls}/tls.crt", f"{tls}/tls.key")
    ctx.load_verify_locations(f"{tls}/ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False
    return ctx


def receive(conn, buffer):
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = conn.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def serve(tls, host, port, block):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    conn = context(tls, True).wrap_socket(listener.accept()[0], server_side=True)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray(block)
    while receive(conn, buffer):
        conn.sendall(buffer)


def client(tls, host, port, block, count, depths):
    conn = context(tls, False).wrap_socket(socket.create_connection((host, port)))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload, answer = bytes(block), bytearray(block)
    figures = {}
    for depth in [1] + depths:  # the first pass warms up
        sent, latencies, started = [], [], time.perf_counter()
        for _ in range(depth):
            sent.append(time.perf_counter())
            conn.sendall(payload)
        while len(latencies) < count:
            receive(conn, answer)
            latencies.append(time.perf_counter() - sent.pop(0))
            if len(latencies) + len(sent) < count:
                sent.append(time.perf_counter())
                conn.sendall(payload)
        seconds = time.perf_counter() - started
        latencies.sort()
        figures[f"d{depth}"] = {"p50_us": latencies[len(latencies) // 2] * 1e6,
                                "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
                                "per_second": count / seconds}
    conn.close()
    print(json.dumps(figures))


if __name__ == "__main__":
    mode, tls, host, port, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    if mode == "serve":
        serve(tls, host, port, block)
    else:
        client(tls, host, port, block, int(sys.argv[6]), [int(d) for d in sys.argv[7:]])
