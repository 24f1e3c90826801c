#!/usr/bin/env bash
# Set up everything flaskasync needs on a fresh Debian/Ubuntu machine:
# system packages (libuv headers, pkg-config, a C compiler, and the servers
# the client tests in tests/peers talk to: redis-server and PostgreSQL), a
# virtualenv in .venv, and the package itself (editable) with its test
# extras.  Idempotent: a second run only checks.
#   PYTHON=3.13               build for that interpreter (a version, a command
#                             or a path: see scripts/python.sh) in its own
#                             virtualenv, .venv-3.13; unset: python3 in .venv
#   FLASKASYNC_TEST_PEERS=0   do not install redis-server and postgresql
#                             (their tests then skip, saying why)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/python.sh
fa_resolve_python "${PYTHON:-}"
venv=$FA_VENV
echo "bootstrap: Python $FA_PYVER ($FA_PY) in $venv" >&2
need_apt=()
# A Debian python3 without its venv module or headers (pyenv's have both).
if ! "$FA_PY" -c 'import ensurepip, venv, os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    case "$FA_PY" in /usr/bin/*) need_apt+=("python$FA_PYVER-venv" "python$FA_PYVER-dev") ;; esac
fi
pkg-config --exists libuv 2>/dev/null || need_apt+=(libuv1-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v gcc >/dev/null || need_apt+=(gcc)
if [ "${FLASKASYNC_TEST_PEERS:-1}" != 0 ]; then
    # The tests start their own throw-away servers (tests/peers/peerservers.py);
    # only the binaries are needed.
    command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
fi
for tool in ${EXTRA_TOOLS:-}; do
    command -v "$tool" >/dev/null || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A virtualenv whose interpreter is gone or is another version (python3
# upgraded, pyenv version removed) is made anew.
if [ -e "$venv" ] && ! [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$FA_PYVER" ]; then
    echo "bootstrap: $venv is not a working Python $FA_PYVER virtualenv; making it anew" >&2
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    "$FA_PY" -m venv "$venv"
fi
stamp=$venv/.flaskasync-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ -n "$(find csrc -newer "$stamp" -name '*.[ch]' 2>/dev/null)" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
    FLASKASYNC_WERROR=1 "$venv/bin/python" -m pip install -q -e ".[test]"
    touch "$stamp"
fi
