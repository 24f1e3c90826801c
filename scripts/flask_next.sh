#!/usr/bin/env bash
# The Flask tests (tests/flask, tests/asgi) against the next, unreleased Flask: the wheel
# in ../shared/wheels/ beside the repository (see its README), in a
# virtualenv of its own (.venv-flask-next), so that .venv keeps the released
# Flask.
#
#   scripts/flask_next.sh [pytest args]
#   FLASKASYNC_FLASK_WHEELS=/path/to/wheels scripts/flask_next.sh
# Exit status 3 (and a message) when there is no such wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${FLASKASYNC_FLASK_WHEELS:-../shared/wheels}
wheel=$(ls "$wheels"/flask-*.whl 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$wheel" ]; then
    echo "flask-next: no flask-*.whl in $wheels: not run"
    exit 3
fi
. scripts/python.sh
fa_resolve_python "${PYTHON:-}"
venv=.venv-flask-next
if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then rm -rf "$venv"; fi
[ -x "$venv/bin/python" ] || "$FA_PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip setuptools
FLASKASYNC_WERROR=1 "$venv/bin/python" -m pip install -q -e ".[test]"
# The wheel replaces the released Flask that .[test] brought; Werkzeug from PyPI.
"$venv/bin/python" -m pip install -q "$wheel"
"$venv/bin/python" -c '
import importlib.metadata as m, sys
print("flask-next: Python %s, Flask %s, Werkzeug %s" % (sys.version.split()[0], m.version("flask"), m.version("werkzeug")))'
exec "$venv/bin/python" -m pytest tests/flask tests/asgi -q "$@"
