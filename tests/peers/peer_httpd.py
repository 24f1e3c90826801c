"""The HTTP peer of the tests: a stdlib threaded HTTP/1.1 server, plain and
TLS, in its own process (it never imports flaskasync).

    python peer_httpd.py --certfile server.pem [--host 127.0.0.1]

Listens on two free ports of --host (plain and TLS, the TLS one with the
certificate chain and key in --certfile, PEM), prints one JSON line
``{"plain": PORT, "tls": PORT}`` on stdout once both listen, and serves until
SIGTERM or SIGINT.

Endpoints (every response has a Content-Length or is chunked, so clients
keep connections alive):

    GET  /hello            "hello" (text/plain)
    GET  /json?x=V         {"x": V, "scheme": "http"|"https", "sni": NAME|null, "pid": PID,
                            "client_port": the client's port (tells connections apart)}
    GET  /slow?ms=N&x=V    sleeps N ms, then {"x": V}
    POST /echo             the request body back, same Content-Type; headers
                           X-Body-Length and X-Body-SHA256 describe what was received
    GET  /big?size=N       N bytes of big_body(N), chunked in 64 KiB chunks
    GET  /eof?size=N       N bytes of big_body(N) with neither length nor chunks:
                           the body ends when the server closes the connection
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse

BLOCK = bytes(range(256)) * 256  # 64 KiB


def big_body(size: int) -> bytes:
    """The body of GET /big?size=N (the tests import this to check it)."""
    reps, rest = divmod(size, len(BLOCK))
    return BLOCK * reps + BLOCK[:rest]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flaskasync-peer/1"
    # Headers and body go out in separate writes: without TCP_NODELAY each
    # response would wait out the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def setup(self):
        self.sni = None
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake runs here, in the connection's own thread, not in
            # accept() where a slow client would stall every other one.
            self.request.settimeout(30)
            self.request.do_handshake()
            self.sni = getattr(self.request, "sni_name", None)
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _send(self, status, body: bytes, ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, status=200):
        self._send(status, json.dumps(obj).encode())

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/hello":
            self._send(200, b"hello", "text/plain")
        elif url.path == "/json":
            self._json({
                "x": q.get("x"),
                "scheme": "https" if isinstance(self.request, ssl.SSLSocket) else "http",
                "sni": self.sni,
                "pid": os.getpid(),
                "client_port": self.client_address[1],
            })
        elif url.path == "/slow":
            time.sleep(int(q.get("ms", "100")) / 1000)
            self._json({"x": q.get("x")})
        elif url.path == "/big":
            size = int(q["size"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            while sent < size:
                chunk = BLOCK[: min(len(BLOCK), size - sent)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/eof":
            size = int(q["size"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(big_body(size))
            self.close_connection = True
            if isinstance(self.request, ssl.SSLSocket):
                self.request.unwrap()  # close_notify, then the TCP close
        else:
            self._json({"error": "not found", "path": url.path}, 404)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length)
        if url.path != "/echo":
            self._json({"error": "not found", "path": url.path}, 404)
            return
        self._send(200, body, self.headers.get("Content-Type", "application/octet-stream"), [
            ("X-Body-Length", str(len(body))),
            ("X-Body-SHA256", hashlib.sha256(body).hexdigest()),
        ])

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that goes away mid-response (or a failed TLS handshake, as
        # in the test that connects without trusting the CA) is not news.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, socket.timeout, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--certfile", required=True)
    args = ap.parse_args()

    plain = Server((args.host, 0), Handler)
    tls = Server((args.host, 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.certfile)

    def sni_callback(sslobj, name, _ctx):
        sslobj.sni_name = name  # read back in Handler.setup

    ctx.sni_callback = sni_callback
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)

    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (plain, tls)]
    for t in threads:
        t.start()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"plain": plain.server_address[1], "tls": tls.server_address[1]}), flush=True)
    stop.wait()
    for s in (plain, tls):
        s.shutdown()
        s.server_close()


if __name__ == "__main__":
    main()
