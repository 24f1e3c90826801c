#!/usr/bin/env bash
# Check that the wheel of `make wheel` works where libuv is not installed
# (make check-wheel; CI).
#
#   scripts/check_wheel.sh VENV     VENV: the virtualenv make wheel used
#
# On this machine libuv is installed (the build needs it), so the check
# hides it: in a private mount namespace (`unshare -m`), every libuv shared
# object that ldconfig knows (libuv.so.1 -> libuv.so.1.0.0, wherever it is)
# has an empty file bind-mounted over it, so the dynamic loader cannot load
# it ("ImportError: .../libuv.so.1: file too short").  Under that hiding, in fresh virtualenvs:
#   1. the plain wheel (build/wheel/, linked to the system's libuv) must FAIL
#      to import, with an ImportError naming libuv: the hiding works and the
#      check can fail;
#   2. the repaired wheel (dist/, manylinux) must import and run a C gather
#      of 100 sleeps (scripts/wheel_smoke.py), with libuv loaded from the
#      wheel's own flaskasync.libs/.
# The plain wheel also runs without the hiding, so that its failure in 1 is
# known to come from the missing libuv and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${1:?usage: scripts/check_wheel.sh VENV}
py=$root/$venv/bin/python
tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')

repaired=$(ls "$root"/dist/flaskasync-*-"$tag"-"$tag"-manylinux*.whl 2>/dev/null | tail -1 || true)
plain=$(ls "$root"/build/wheel/"$tag"/flaskasync-*-"$tag"-"$tag"-linux_*.whl 2>/dev/null | tail -1 || true)
if [ -z "$repaired" ] || [ -z "$plain" ]; then
    echo "check-wheel: no $tag wheels in dist/ and build/wheel/$tag/: run make wheel first" >&2
    exit 1
fi
fail() { echo "check-wheel: FAIL: $*" >&2; exit 1; }

# The wheel carries libuv, and nothing else beside the extension.
libs_in_wheel=$("$py" -m zipfile -l "$repaired" | awk '{print $1}' | grep -E '\.so' || true)
echo "$libs_in_wheel" | grep -qE '^flaskasync\.libs/libuv[^/]*\.so' || fail "$repaired carries no libuv: $libs_in_wheel"
[ "$(echo "$libs_in_wheel" | grep -c '^flaskasync/_core\.')" = 1 ] || fail "not exactly one extension in $repaired: $libs_in_wheel"

# Every libuv shared object the dynamic loader could find.
mapfile -t system_libuv < <(ldconfig -p | awk '/libuv\.so/ {print $NF}' | xargs -r readlink -f | sort -u)
if [ ${#system_libuv[@]} -eq 0 ]; then
    fail "ldconfig knows no libuv on this machine: the control (plain wheel) needs one"
fi

work=$(mktemp -d /tmp/flaskasync-check-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
: >"$work/empty"
cp scripts/wheel_smoke.py "$work/"
cd "$work"   # never the source tree's flaskasync

# Run "$@" with every system libuv hidden.
unshare_args=(-m)
[ "$(id -u)" -eq 0 ] || unshare_args=(-r -m)   # unprivileged: a user namespace too
without_libuv() {
    unshare "${unshare_args[@]}" -- bash -c '
        set -e
        empty=$1; shift
        while [ "$1" != -- ]; do mount --bind "$empty" "$1"; shift; done
        shift
        exec "$@"' _ "$work/empty" "${system_libuv[@]}" -- "$@"
}

echo "check-wheel: system libuv: ${system_libuv[*]}"
"$py" -c 'import ctypes; ctypes.CDLL("libuv.so.1")' || fail "libuv.so.1 does not load even before hiding it"
if without_libuv "$py" -c 'import ctypes; ctypes.CDLL("libuv.so.1")' 2>/dev/null; then
    fail "libuv.so.1 still loads with ${system_libuv[*]} hidden"
fi
echo "check-wheel: hidden with unshare ${unshare_args[*]} + bind mounts: libuv.so.1 no longer loads"

"$py" -m venv "$work/plain"
"$work/plain/bin/python" -m pip install -q --no-deps "$plain"
"$py" -m venv "$work/repaired"
"$work/repaired/bin/python" -m pip install -q "$repaired"

echo "== plain wheel, system libuv present (control): $(basename "$plain")"
"$work/plain/bin/python" -I wheel_smoke.py || fail "the plain wheel does not work even with the system libuv"

echo "== plain wheel, system libuv hidden: must fail"
if without_libuv "$work/plain/bin/python" -I -c 'import flaskasync' >"$work/plain.out" 2>&1; then
    fail "the plain wheel imported with libuv hidden: the hiding does not work, this check proves nothing"
fi
grep -E '^ImportError: .*libuv\.so' "$work/plain.out" || { cat "$work/plain.out"; fail "the plain wheel failed, but not for lack of libuv"; }

echo "== repaired wheel, system libuv hidden: $(basename "$repaired")"
without_libuv "$work/repaired/bin/python" -I wheel_smoke.py --expect-bundled-libuv \
    || fail "the repaired wheel does not work without the system libuv"
echo "check-wheel: OK: $(basename "$repaired") works without the system libuv; the plain wheel does not"
