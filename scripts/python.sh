#!/usr/bin/env bash
# Which interpreter and which virtualenv a PYTHON= setting means.
#
#   scripts/python.sh [SPEC]          prints "INTERPRETER VENV X.Y"
#   . scripts/python.sh; fa_resolve_python SPEC   sets FA_PY, FA_VENV, FA_PYVER
#
# SPEC is what a user writes after `make test PYTHON=`:
#   (empty)            python3 from PATH, virtualenv .venv (the README's default)
#   3.13 or 3.13.0     pyenv's newest matching version ($PYENV_ROOT/versions/3.13.*),
#                      else python3.13 from PATH
#   python3.13         that command from PATH; if it is a pyenv shim for a
#                      version that is not selected, pyenv's 3.13 instead
#   /path/to/python    that interpreter
# Every SPEC but the empty one gets its own virtualenv, .venv-X.Y (X.Y read
# from the interpreter), so that switching versions never rebuilds another.

# The newest pyenv version directory matching a version prefix (3.13 ->
# 3.13.0, 3.13.1 ...; 3.13.0 -> itself), excluding free-threaded (3.13.0t)
# and development builds.
fa_pyenv_python() {
    local want=$1 root=${PYENV_ROOT:-$HOME/.pyenv} v best=""
    [ -d "$root/versions" ] || return 1
    for v in $(ls "$root/versions" 2>/dev/null | sort -V); do
        case "$v" in
            "$want"|"$want".*) ;;
            *) continue ;;
        esac
        [[ "$v" =~ ^[0-9]+(\.[0-9]+)*$ ]] || continue
        [ -x "$root/versions/$v/bin/python" ] && best="$root/versions/$v/bin/python"
    done
    [ -n "$best" ] && echo "$best"
}

fa_runs() { "$1" -c '' >/dev/null 2>&1; }

fa_resolve_python() {
    local spec=${1:-} py="" ver=""
    FA_PY="" FA_VENV="" FA_PYVER=""
    if [ -z "$spec" ]; then
        py=$(command -v python3 || true)
        if [ -z "$py" ]; then
            echo "no python3 on PATH (flaskasync needs Python 3.11 or newer)" >&2
            return 1
        fi
    else
        case "$spec" in
            */*)
                py=$spec ;;
            [0-9]*)
                py=$(fa_pyenv_python "$spec" || true)
                [ -n "$py" ] || py=$(command -v "python$spec" || true) ;;
            *)
                py=$(command -v "$spec" || true)
                if [ -z "$py" ] || ! fa_runs "$py"; then
                    # python3.13 as a pyenv shim of a version not selected
                    ver=${spec#python}
                    [[ "$ver" =~ ^[0-9]+(\.[0-9]+)*$ ]] && py=$(fa_pyenv_python "$ver" || true)
                fi ;;
        esac
        if [ -z "$py" ] || ! fa_runs "$py"; then
            echo "PYTHON=$spec: no such interpreter (tried ${py:-PATH}" \
                 "and ${PYENV_ROOT:-$HOME/.pyenv}/versions/)" >&2
            return 1
        fi
    fi
    if ! ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
        echo "$py does not run" >&2
        return 1
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "$py is Python $ver: flaskasync needs Python 3.11 or newer" \
             "(3.9 and 3.10 are past their end of life)" >&2
        return 1
    fi
    FA_PY=$py
    FA_PYVER=$ver
    if [ -z "$spec" ]; then FA_VENV=.venv; else FA_VENV=.venv-$ver; fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    fa_resolve_python "${1:-}"
    echo "$FA_PY $FA_VENV $FA_PYVER"
fi
