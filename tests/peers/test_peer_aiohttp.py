"""aiohttp.ClientSession against a real HTTP/1.1 server (peer_httpd.py, its
own process), plain and TLS with a trustme CA, on flaskasync's loop and on
asyncio's (the `loop` fixture's two params)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

import peerservers
from peer_httpd import big_body

aiohttp = peerservers.import_or_skip("aiohttp")

BIG = 16 * 1024 * 1024
BIG_SHA256 = hashlib.sha256(big_body(BIG)).hexdigest()
SCHEMES = ["plain", "tls", "tls-name"]  # as in test_peer_httpx.py


def base_url(peer, scheme):
    return {"plain": peer.url, "tls": peer.tls_url, "tls-name": peer.tls_name_url}[scheme]


def session(peer, scheme, limit=100, **kwargs):
    """A ClientSession trusting the session's CA (create it inside the loop)."""
    connector = aiohttp.TCPConnector(ssl=peer.ssl_context(), limit=limit)
    return aiohttp.ClientSession(base_url=base_url(peer, scheme), connector=connector, **kwargs)


@pytest.mark.parametrize("scheme", SCHEMES)
# The 4 MiB upload is sent as raw bytes on purpose (one big transport write).
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
def test_get_and_post(arun, http_peer, scheme):
    async def main():
        async with session(http_peer, scheme) as s:
            async with s.get("/hello") as r:
                assert (r.status, await r.text(), r.content_type) == (200, "hello", "text/plain")

            async with s.get("/json", params={"x": "héllo wörld"}) as r:
                assert r.status == 200
                body = await r.json()
            assert body["x"] == "héllo wörld"
            assert body["scheme"] == ("http" if scheme == "plain" else "https")
            assert body["sni"] == ("localhost" if scheme == "tls-name" else None)

            payload = {"n": list(range(100)), "s": "ünïcode"}
            async with s.post("/echo", json=payload) as r:
                assert r.status == 200 and await r.json() == payload

            upload = bytes(range(256)) * (16 * 1024)  # 4 MiB
            async with s.post("/echo", data=upload) as r:
                assert r.status == 200
                assert int(r.headers["X-Body-Length"]) == len(upload)
                assert r.headers["X-Body-SHA256"] == hashlib.sha256(upload).hexdigest()
                assert await r.read() == upload

            async with s.get("/nowhere") as r:
                assert r.status == 404 and (await r.json())["path"] == "/nowhere"

            # A body delimited by the server closing the connection (EOF;
            # over TLS, close_notify first), then a new connection.
            async with s.get("/eof", params={"size": 300_000}) as r:
                assert r.status == 200 and await r.read() == big_body(300_000)
            async with s.get("/hello") as r:
                assert await r.text() == "hello"

    arun(main())


def test_tls_rejects_an_untrusted_certificate(arun, http_peer):
    async def main():
        # The default context (system trust store) does not hold the session's CA.
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.get(http_peer.tls_url + "/hello"):
                    pass
        async with session(http_peer, "tls") as s:
            async with s.get("/hello") as r:
                assert await r.text() == "hello"

    arun(main())


def test_connection_refused(arun):
    port = peerservers.free_port()  # nothing listens there

    async def main():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectorError):
                async with s.get(f"http://127.0.0.1:{port}/"):
                    pass

    arun(main())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_timeout_then_the_session_still_works(arun, http_peer, scheme):
    async def main():
        async with session(http_peer, scheme) as s:
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                async with s.get("/slow", params={"ms": 3000}, timeout=aiohttp.ClientTimeout(total=0.3)):
                    pass
            assert time.monotonic() - t0 < 2.5
            async with s.get("/json", params={"x": "after"}) as r:
                assert (await r.json())["x"] == "after"

            async def slow():
                async with s.get("/slow", params={"ms": 3000}) as r:
                    return await r.read()

            task = asyncio.ensure_future(slow())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with s.get("/hello") as r:
                assert await r.text() == "hello"

    arun(main())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_many_concurrent_requests_on_one_session(arun, http_peer, scheme):
    async def main():
        async with session(http_peer, scheme, limit=20) as s:
            async def get(path, **params):
                async with s.get(path, params=params) as r:
                    assert r.status == 200
                    return (await r.json())["x"]

            # 100 requests of 100 ms each: 10 s one after the other, ~0.5 s
            # over the 20 connections the connector allows.
            t0 = time.monotonic()
            xs = await asyncio.gather(*(get("/slow", ms=100, x=i) for i in range(100)))
            elapsed = time.monotonic() - t0
            assert xs == [str(i) for i in range(100)]
            assert elapsed < 5.0, f"100 concurrent 100 ms requests took {elapsed:.2f} s"
            xs = await asyncio.gather(*(get("/json", x=i) for i in range(400)))
            assert xs == [str(i) for i in range(400)]

    arun(main())


@pytest.mark.parametrize("scheme", ["plain", "tls"])
def test_stream_a_large_response(arun, http_peer, scheme):
    async def main():
        async with session(http_peer, scheme) as s:
            digest = hashlib.sha256()
            size = chunks = 0
            async with s.get("/big", params={"size": BIG}) as r:
                assert r.status == 200
                assert r.headers["Transfer-Encoding"] == "chunked"
                async for chunk in r.content.iter_chunked(65536):
                    digest.update(chunk)
                    size += len(chunk)
                    chunks += 1
            assert size == BIG
            assert digest.hexdigest() == BIG_SHA256
            assert chunks > 16

            # A slow reader: the transport must pause reading (flow control)
            # and resume, without losing or reordering bytes.
            digest = hashlib.sha256()
            size = 0
            async with s.get("/big", params={"size": 4 * 1024 * 1024}) as r:
                async for chunk in r.content.iter_chunked(256 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.sleep(0.005)
            assert size == 4 * 1024 * 1024
            assert digest.hexdigest() == hashlib.sha256(big_body(size)).hexdigest()

            async def body():
                for i in range(64):
                    await asyncio.sleep(0)
                    yield bytes([i]) * 65536

            async with s.post("/echo", data=body()) as r:
                expected = b"".join(bytes([i]) * 65536 for i in range(64))
                assert r.headers["X-Body-SHA256"] == hashlib.sha256(expected).hexdigest()
                assert await r.read() == expected

    arun(main())
