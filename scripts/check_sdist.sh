#!/usr/bin/env bash
# Check the source distribution of `make sdist` (make check-sdist; CI).
#
#   scripts/check_sdist.sh VENV     VENV: a virtualenv of the interpreter to build with
#
# 1. It holds what a build needs: csrc/*.c and csrc/*.h, setup.py,
#    pyproject.toml, the package; no compiled object.
# 2. With the system's libuv (pkg-config finds it), `pip install` of the
#    sdist into a fresh virtualenv builds, imports and runs a gather
#    (scripts/wheel_smoke.py).
# 3. Where pkg-config finds no libuv (PKG_CONFIG_LIBDIR and PKG_CONFIG_PATH
#    pointing at an empty directory), and where there is no pkg-config at
#    all (PATH: every command of the normal PATH but pkg-config), building
#    the sdist fails with setup.py's one message, naming what is missing,
#    before any compiler runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${1:?usage: scripts/check_sdist.sh VENV}
py=$root/$venv/bin/python
sdist=$(ls "$root"/dist/flaskasync-*.tar.gz 2>/dev/null | tail -1 || true)
[ -n "$sdist" ] || { echo "check-sdist: no dist/flaskasync-*.tar.gz: run make sdist first" >&2; exit 1; }
fail() { echo "check-sdist: FAIL: $*" >&2; exit 1; }

echo "== contents of $(basename "$sdist")"
listing=$(tar tzf "$sdist" | sed 's|^[^/]*/||')
for need in setup.py pyproject.toml README.md LICENSE flaskasync/__init__.py flaskasync/py.typed; do
    grep -qx "$need" <<<"$listing" || fail "$need missing"
done
for src in csrc/*.c csrc/*.h; do
    grep -qx "$src" <<<"$listing" || fail "$src missing"
done
if grep -E '\.(so|o)$' <<<"$listing"; then fail "compiled objects in the sdist"; fi
echo "check-sdist: $(grep -c '^csrc/' <<<"$listing") files of csrc/, setup.py, pyproject.toml, the package; no compiled object"

work=$(mktemp -d /tmp/flaskasync-check-sdist.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp scripts/wheel_smoke.py "$work/"
cd "$work"

echo "== pip install of the sdist, system libuv $(pkg-config --modversion libuv 2>/dev/null || echo '(none!)')"
"$py" -m venv "$work/ok"
"$work/ok/bin/python" -m pip install -q "$sdist" >"$work/ok.log" 2>&1 || { cat "$work/ok.log"; fail "the sdist does not build against the system libuv"; }
"$work/ok/bin/python" -I wheel_smoke.py

# Builds the sdist in an environment; its output must be setup.py's message
# with the given reason, once, and no compiler call.
expect_no_libuv() {
    local what=$1 reason=$2; shift 2
    echo "== build without libuv: $what"
    if env "$@" "$py" -m pip wheel --no-deps -w "$work/never" "$sdist" >"$work/no.log" 2>&1; then
        fail "$what: the build succeeded"
    fi
    if [ "$(grep -c 'flaskasync needs libuv' "$work/no.log")" != 1 ]; then
        cat "$work/no.log"; fail "$what: setup.py's message is not there once"
    fi
    grep -qF "$reason" "$work/no.log" || { cat "$work/no.log"; fail "$what: the message does not say '$reason'"; }
    if grep -qE '(^| )(gcc|cc|x86_64-linux-gnu-gcc) |uv\.h' "$work/no.log"; then
        cat "$work/no.log"; fail "$what: a compiler ran"
    fi
    sed -n '/flaskasync needs libuv/,/needs neither/p' "$work/no.log" | sed 's/^/    /'
}

mkdir "$work/nopc"
expect_no_libuv "pkg-config finds no libuv.pc" "pkg-config finds no libuv" \
    PKG_CONFIG_LIBDIR="$work/nopc" PKG_CONFIG_PATH="$work/nopc"

# Every command of PATH but pkg-config (and its other names).
mkdir "$work/bin"
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
        name=${f##*/}
        case "$name" in *pkg-config*|pkgconf*) continue ;; esac
        [ -x "$f" ] && [ ! -e "$work/bin/$name" ] && ln -s "$f" "$work/bin/$name"
    done
done
PATH="$work/bin" command -v pkg-config >/dev/null && fail "pkg-config still on the reduced PATH"
PATH="$work/bin" command -v gcc >/dev/null || fail "no gcc on the reduced PATH"
expect_no_libuv "no pkg-config on PATH" "pkg-config is not on PATH" PATH="$work/bin"
echo "check-sdist: OK"
