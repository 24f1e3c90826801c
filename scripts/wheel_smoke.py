"""Smoke test of an installed flaskasync: import it and run a C gather of
100 sleeps on the app loop.

Run against an installed wheel, never the source tree: by
scripts/check_wheel.sh (in a fresh virtualenv, with the system's libuv
hidden) and by cibuildwheel's test-command (pyproject.toml).

    python -I scripts/wheel_smoke.py [--expect-bundled-libuv]

--expect-bundled-libuv: also require that the libuv the extension loaded
is the copy auditwheel put in the wheel (flaskasync.libs/), not a system one.
"""

import asyncio
import os
import sys
import time


def loaded_libuv():
    """The path of the libuv shared object mapped into this process."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libuv" in os.path.basename(path):
                return path
    return None


def main():
    import flaskasync

    here = os.path.dirname(os.path.abspath(__file__))
    pkg = os.path.dirname(os.path.abspath(flaskasync.__file__))
    repo = os.path.dirname(here)
    if pkg == os.path.join(repo, "flaskasync"):
        sys.exit(f"imported the source tree's flaskasync ({pkg}), not an installed one")

    async def hundred_sleeps():
        # flaskasync.run takes a coroutine, not gather's future.
        return await flaskasync.gather(*[asyncio.sleep(0.01, i) for i in range(100)])

    start = time.perf_counter()
    results = flaskasync.run(hundred_sleeps())
    took = time.perf_counter() - start
    if results != list(range(100)):
        sys.exit(f"gather returned {results!r}")
    if took > 5:
        sys.exit(f"gather of 100 x sleep(0.01) took {took:.2f}s")

    libuv = loaded_libuv()
    print(f"flaskasync {flaskasync.__version__} from {pkg}")
    print(f"Python {sys.version.split()[0]}; libuv {flaskasync._core.libuv_version} from {libuv}")
    print(f"gather of 100 sleeps: {took * 1000:.0f} ms")
    if "--expect-bundled-libuv" in sys.argv[1:]:
        libs = os.path.join(os.path.dirname(pkg), "flaskasync.libs")
        if libuv is None or os.path.dirname(libuv) != libs:
            sys.exit(f"libuv was loaded from {libuv}, not from the wheel's {libs}")


if __name__ == "__main__":
    main()
