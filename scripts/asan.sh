#!/usr/bin/env bash
# Build the C core with ASan + UBSan (debug, asserts on) into build/asan and
# run the core test files against it, from inside build/asan so that its
# flaskasync package (not the source tree's) is the one imported.
#
#   scripts/asan.sh                      # all core test files
#   scripts/asan.sh tests/test_loop_udp.py -k flaskasync   # chosen tests
#   FLASKASYNC_ASAN_DIR=build/asan2 scripts/asan.sh ...    # a second build dir
#   FLASKASYNC_VENV=.venv-3.13 scripts/asan.sh              # another interpreter
#                                    (make test-asan PYTHON=3.13 sets it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${FLASKASYNC_VENV:-.venv}
python="$root/$venv/bin/python"
if [ "$venv" = .venv ]; then
    out=${FLASKASYNC_ASAN_DIR:-build/asan}
else
    out=${FLASKASYNC_ASAN_DIR:-build/asan-${venv#.venv-}}
fi
rm -rf "$out" && mkdir -p "$out"
cp -r csrc flaskasync tests setup.py pyproject.toml README.md "$out"/
rm -f "$out"/flaskasync/*.so
cd "$out"
if [ $# -eq 0 ]; then
    set -- tests/test_loop_*.py tests/test_gather.py tests/test_runner.py tests/test_leaks.py \
        tests/test_faults.py
fi
FLASKASYNC_SANITIZE=1 FLASKASYNC_DEBUG=1 FLASKASYNC_WERROR=1 \
    "$python" setup.py -q build_ext --inplace 2>&1 | grep -v -i "betaconfiguration\|warnings.warn" || true
ls flaskasync/_core*.so >/dev/null
# use_sigaltstack=0: gcc 12's ASan reports its own thread teardown
# (sigaltstack) as stack-use-after-scope on glibc 2.36.
# detect_leaks=0: CPython's own allocations at exit are not ours; reference
# leaks are checked by tests/test_leaks.py.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:use_sigaltstack=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$PWD"
"$python" -c "
import flaskasync._core as c, os, sys
assert c.__file__.startswith(os.getcwd()), c.__file__
print('ASan build:', c.__file__, 'Python', sys.version.split()[0])"
"$python" -m pytest -q -p no:cacheprovider \
    "$@"
