"""asyncpg against a real PostgreSQL server (a throw-away cluster, see
peerservers.PostgresPeer), on flaskasync's loop and on asyncio's (the `loop`
fixture's two params)."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import time
import uuid

import pytest

import peerservers

asyncpg = peerservers.import_or_skip("asyncpg")


def test_connect_fetch_and_types(arun, pg_peer):
    async def main():
        conn = await asyncpg.connect(pg_peer.dsn)
        try:
            assert conn.get_server_version().major >= 11
            assert await conn.fetchval("select 1") == 1
            rows = await conn.fetch(
                "select g, g * $2::int as double from generate_series(1, $1::int) g", 1000, 2)
            assert len(rows) == 1000
            assert [tuple(r) for r in rows[:3]] == [(1, 2), (2, 4), (3, 6)]
            assert rows[-1]["double"] == 2000

            blob = bytes(range(256)) * 4096  # 1 MiB each way
            u = uuid.uuid4()
            ts = datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc)
            row = await conn.fetchrow(
                "select $1::text as t, $2::numeric as n, $3::timestamptz as ts, $4::bytea as b,"
                " $5::int[] as a, $6::uuid as u, $7::jsonb as j",
                "ünïcode ✓", decimal.Decimal("12345.678901"), ts, blob, [1, 2, 3], u, '{"k": [1, 2]}',
            )
            assert row["t"] == "ünïcode ✓"
            assert row["n"] == decimal.Decimal("12345.678901")
            assert row["ts"] == ts
            assert row["b"] == blob
            assert row["a"] == [1, 2, 3]
            assert row["u"] == u
            assert row["j"] == '{"k": [1, 2]}'

            stmt = await conn.prepare("select $1::int + 1")
            assert [await stmt.fetchval(i) for i in range(5)] == [1, 2, 3, 4, 5]

            # A server-side error, then the connection goes on.
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await conn.execute("selec 1")
            with pytest.raises(asyncpg.DivisionByZeroError):
                await conn.fetchval("select 1 / 0")
            assert await conn.fetchval("select 'still here'") == "still here"
        finally:
            await conn.close()
        assert conn.is_closed()

    arun(main())


def test_executemany_copy_and_cursor(arun, pg_peer, unique):
    async def main():
        conn = await asyncpg.connect(pg_peer.dsn)
        try:
            await conn.execute(f"create temporary table {unique} (id int primary key, name text)")
            await conn.executemany(f"insert into {unique} values ($1, $2)",
                                   [(i, f"name {i}") for i in range(1000)])
            assert await conn.fetchval(f"select count(*) from {unique}") == 1000

            # COPY FROM STDIN: the client streams the rows.
            result = await conn.copy_records_to_table(
                unique, records=((i, f"copied {i}") for i in range(1000, 21000)))
            assert result == "COPY 20000"
            assert await conn.fetchval(f"select count(*) from {unique}") == 21000

            # COPY TO STDOUT: the server streams them back.
            chunks = []

            async def sink(data):
                chunks.append(data)

            await conn.copy_from_query(f"select * from {unique} order by id", output=sink, format="csv")
            lines = b"".join(chunks).decode().splitlines()
            assert len(lines) == 21000
            assert lines[0] == "0,name 0" and lines[-1] == "20999,copied 20999"

            # A server-side cursor, fetched in batches as it is iterated.
            async with conn.transaction():
                cursor = conn.cursor(f"select id from {unique} order by id", prefetch=100)
                ids = [r["id"] async for r in cursor]
            assert ids == list(range(21000))
        finally:
            await conn.close()

    arun(main())


def test_transactions(arun, pg_peer, unique):
    async def main():
        conn = await asyncpg.connect(pg_peer.dsn)
        other = await asyncpg.connect(pg_peer.dsn)
        try:
            await conn.execute(f"create table {unique} (v int)")
            async with conn.transaction():
                await conn.execute(f"insert into {unique} values (1)")
                # Not visible to another connection before the commit.
                assert await other.fetchval(f"select count(*) from {unique}") == 0
            assert await other.fetchval(f"select count(*) from {unique}") == 1

            class Boom(Exception):
                pass

            with pytest.raises(Boom):
                async with conn.transaction():
                    await conn.execute(f"insert into {unique} values (2)")
                    raise Boom
            assert await conn.fetchval(f"select array_agg(v order by v) from {unique}") == [1]

            # A savepoint rolled back inside a committed transaction.
            async with conn.transaction():
                await conn.execute(f"insert into {unique} values (3)")
                with pytest.raises(Boom):
                    async with conn.transaction():
                        await conn.execute(f"insert into {unique} values (4)")
                        raise Boom
            assert await conn.fetchval(f"select array_agg(v order by v) from {unique}") == [1, 3]

            # Serializable: a concurrent update makes one of them fail.
            tr = conn.transaction(isolation="serializable")
            await tr.start()
            assert await conn.fetchval(f"select sum(v) from {unique}") == 4
            await other.execute(f"update {unique} set v = v + 10")
            with pytest.raises(asyncpg.SerializationError):
                await conn.execute(f"update {unique} set v = v + 100")
            await tr.rollback()
            assert await conn.fetchval(f"select array_agg(v order by v) from {unique}") == [11, 13]
        finally:
            await conn.execute(f"drop table if exists {unique}")
            await conn.close()
            await other.close()

    arun(main())


def test_pool_with_concurrent_queries(arun, pg_peer, unique):
    async def main():
        async with asyncpg.create_pool(pg_peer.dsn, min_size=2, max_size=10) as pool:
            results = await asyncio.gather(*(pool.fetchval("select $1::int * 2", i) for i in range(300)))
            assert results == [i * 2 for i in range(300)]

            # 10 queries of 0.5 s each: 5 s one after the other, ~0.5 s on
            # the pool's 10 connections.
            t0 = time.monotonic()
            pids = await asyncio.gather(*(pool.fetchval("select pg_backend_pid() from pg_sleep(0.5)")
                                          for _ in range(10)))
            elapsed = time.monotonic() - t0
            assert len(set(pids)) == 10
            assert elapsed < 3.0, f"10 concurrent 0.5 s queries took {elapsed:.2f} s"

            # Transactions on acquired connections, concurrently.
            await pool.execute(f"create table {unique} (k int primary key, n int)")
            await pool.execute(f"insert into {unique} values (1, 0)")

            async def bump():
                async with pool.acquire() as conn:
                    async with conn.transaction():
                        n = await conn.fetchval(f"select n from {unique} where k = 1 for update")
                        await asyncio.sleep(0.001)
                        await conn.execute(f"update {unique} set n = $1 where k = 1", n + 1)

            await asyncio.gather(*(bump() for _ in range(100)))
            assert await pool.fetchval(f"select n from {unique} where k = 1") == 100
            await pool.execute(f"drop table {unique}")

    arun(main())


def test_query_timeout_cancels_on_the_server(arun, pg_peer):
    async def main():
        conn = await asyncpg.connect(pg_peer.dsn)
        try:
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("select pg_sleep(10)", timeout=0.3)
            assert time.monotonic() - t0 < 5
            # asyncpg cancelled it server-side (over a second connection), so
            # this one is free again at once.
            assert await conn.fetchval("select 42", timeout=5) == 42
        finally:
            await conn.close()

    arun(main())


def test_listen_notify(arun, pg_peer, unique):
    async def main():
        listener = await asyncpg.connect(pg_peer.dsn)
        sender = await asyncpg.connect(pg_peer.dsn)
        queue: asyncio.Queue = asyncio.Queue()
        try:
            def on_notify(conn, pid, channel, payload):
                assert channel == unique
                queue.put_nowait(payload)

            await listener.add_listener(unique, on_notify)
            for i in range(50):
                await sender.execute("select pg_notify($1, $2)", unique, f"n{i}")
            got = [await asyncio.wait_for(queue.get(), 10) for _ in range(50)]
            assert got == [f"n{i}" for i in range(50)]

            # Sent in a transaction: delivered at the commit, not before.
            async with sender.transaction():
                await sender.execute("select pg_notify($1, 'in tx')", unique)
                await asyncio.sleep(0.2)
                assert queue.empty()
            assert await asyncio.wait_for(queue.get(), 10) == "in tx"
            await listener.remove_listener(unique, on_notify)
            await sender.execute("select pg_notify($1, 'unheard')", unique)
            await asyncio.sleep(0.2)
            assert queue.empty()
        finally:
            await listener.close()
            await sender.close()

    arun(main())


def test_unix_socket(arun, pg_peer):
    async def main():
        conn = await asyncpg.connect(host=pg_peer.socket_dir, port=pg_peer.port,
                                     user="postgres", database="postgres")
        try:
            # Over the Unix socket the server sees no client address.
            assert await conn.fetchval("select inet_client_addr()") is None
            rows = await conn.fetch("select g from generate_series(1, 5000) g")
            assert [r["g"] for r in rows] == list(range(1, 5001))
            assert await conn.fetchval("select length($1::text)", "x" * 1_000_000) == 1_000_000
        finally:
            await conn.close()

    arun(main())


def test_connection_refused(arun):
    port = peerservers.free_port()

    async def main():
        with pytest.raises(OSError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=10)

    arun(main())
