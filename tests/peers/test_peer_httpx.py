"""httpx.AsyncClient against a real HTTP/1.1 server (peer_httpd.py, its own
process), plain and TLS with a trustme CA, on flaskasync's loop and on
asyncio's (the `loop` fixture's two params)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

import peerservers
from peer_httpd import big_body

httpx = peerservers.import_or_skip("httpx")

BIG = 16 * 1024 * 1024
BIG_SHA256 = hashlib.sha256(big_body(BIG)).hexdigest()

# plain: http://127.0.0.1; tls: https://127.0.0.1 (IP in the certificate's
# SAN, no SNI); tls-name: https://localhost (name resolution, SNI, name check)
SCHEMES = ["plain", "tls", "tls-name"]


def base_url(peer, scheme):
    return {"plain": peer.url, "tls": peer.tls_url, "tls-name": peer.tls_name_url}[scheme]


def client(peer, scheme, **kwargs):
    return httpx.AsyncClient(base_url=base_url(peer, scheme), verify=peer.ssl_context(), **kwargs)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_get_and_post(arun, http_peer, scheme):
    async def main():
        async with client(http_peer, scheme) as c:
            r = await c.get("/hello")
            assert (r.status_code, r.text, r.headers["content-type"]) == (200, "hello", "text/plain")

            r = await c.get("/json", params={"x": "héllo wörld"})
            assert r.status_code == 200
            body = r.json()
            assert body["x"] == "héllo wörld"
            assert body["scheme"] == ("http" if scheme == "plain" else "https")
            assert body["sni"] == ("localhost" if scheme == "tls-name" else None)

            payload = {"n": list(range(100)), "s": "ünïcode"}
            r = await c.post("/echo", json=payload)
            assert r.status_code == 200 and r.json() == payload
            assert r.headers["x-body-sha256"] == hashlib.sha256(r.content).hexdigest()

            # A 4 MiB upload: the transport's write buffer and flow control.
            upload = bytes(range(256)) * (16 * 1024)
            r = await c.post("/echo", content=upload, headers={"content-type": "application/x-test"})
            assert r.status_code == 200
            assert int(r.headers["x-body-length"]) == len(upload)
            assert r.headers["x-body-sha256"] == hashlib.sha256(upload).hexdigest()
            assert r.content == upload

            r = await c.get("/nowhere")
            assert r.status_code == 404 and r.json()["path"] == "/nowhere"

            # A body delimited by the server closing the connection (EOF;
            # over TLS, close_notify first), then a new connection.
            r = await c.get("/eof", params={"size": 300_000})
            assert r.status_code == 200 and r.content == big_body(300_000)
            assert (await c.get("/hello")).text == "hello"

    arun(main())


def test_tls_rejects_an_untrusted_certificate(arun, http_peer):
    async def main():
        # httpx's default trust store does not hold the session's CA.
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.get(http_peer.tls_url + "/hello")
        # The same server, trusted, answers.
        async with client(http_peer, "tls") as c:
            assert (await c.get("/hello")).text == "hello"

    arun(main())


def test_connection_refused(arun):
    port = peerservers.free_port()  # nothing listens there

    async def main():
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")

    arun(main())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_timeout_then_the_client_still_works(arun, http_peer, scheme):
    async def main():
        async with client(http_peer, scheme) as c:
            t0 = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await c.get("/slow", params={"ms": 3000}, timeout=0.3)
            assert time.monotonic() - t0 < 2.5
            # The timed-out connection is dropped; the next request gets a new one.
            r = await c.get("/json", params={"x": "after"})
            assert r.json()["x"] == "after"
            # Cancelling a request mid-flight is the same for the pool.
            task = asyncio.ensure_future(c.get("/slow", params={"ms": 3000}))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await c.get("/hello")).text == "hello"

    arun(main())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_many_concurrent_requests_on_one_client(arun, http_peer, scheme):
    async def main():
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with client(http_peer, scheme, limits=limits, timeout=30) as c:
            # 100 requests that each take 100 ms server-side: one after the
            # other that is 10 s; over 20 connections about 0.5 s.
            t0 = time.monotonic()
            rs = await asyncio.gather(*(c.get("/slow", params={"ms": 100, "x": i}) for i in range(100)))
            elapsed = time.monotonic() - t0
            assert [r.json()["x"] for r in rs] == [str(i) for i in range(100)]
            assert elapsed < 5.0, f"100 concurrent 100 ms requests took {elapsed:.2f} s"
            # Then 400 fast ones, all on the pool's kept-alive connections.
            rs = await asyncio.gather(*(c.get("/json", params={"x": i}) for i in range(400)))
            assert all(r.status_code == 200 for r in rs)
            assert [r.json()["x"] for r in rs] == [str(i) for i in range(400)]

    arun(main())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_stream_a_large_response(arun, http_peer, scheme):
    async def main():
        async with client(http_peer, scheme, timeout=60) as c:
            digest = hashlib.sha256()
            size = chunks = 0
            async with c.stream("GET", "/big", params={"size": BIG}) as r:
                assert r.status_code == 200
                assert r.headers["transfer-encoding"] == "chunked"
                async for chunk in r.aiter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
                    chunks += 1
            assert size == BIG
            assert digest.hexdigest() == BIG_SHA256
            assert chunks > 16  # delivered piece by piece, not as one body

            # And a streamed (chunked) upload from an async generator.
            async def body():
                for i in range(64):
                    await asyncio.sleep(0)
                    yield bytes([i]) * 65536

            r = await c.post("/echo", content=body())
            expected = b"".join(bytes([i]) * 65536 for i in range(64))
            assert r.headers["x-body-sha256"] == hashlib.sha256(expected).hexdigest()
            assert r.content == expected

    arun(main())


def test_client_reused_by_many_tasks_over_time(arun, http_peer):
    """One client, many tasks that start and end at different times, each
    making several requests: the connection pool is shared across them."""

    async def main():
        async with client(http_peer, "plain", limits=httpx.Limits(max_connections=5)) as c:
            async def worker(w):
                out = []
                for i in range(20):
                    r = await c.get("/json", params={"x": f"{w}-{i}"})
                    out.append(json.loads(r.content)["x"])
                    if i % 5 == 0:
                        await asyncio.sleep(0.001 * w)
                return out

            results = await asyncio.gather(*(worker(w) for w in range(10)))
            assert results == [[f"{w}-{i}" for i in range(20)] for w in range(10)]

    arun(main())
