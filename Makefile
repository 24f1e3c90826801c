# The two commands of the README, plus the developer switches.
#   make serve   set up (apt, .venv, build) and serve examples/app.py on :5000
#   make test    set up and run the test suite
#
# PYTHON=...  picks the interpreter (default: python3, in .venv):
#   make test PYTHON=3.13          pyenv's 3.13 (or python3.13 from PATH)
#   make test PYTHON=python3.13    a command; PYTHON=/path/to/python a path
# Each interpreter gets its own virtualenv (.venv-3.13, ...), so switching
# versions never rebuilds another.  scripts/python.sh resolves the name.
# PYTEST_ARGS=... is added to make test's pytest command line.
PORT ?= 5000
PYTHON ?=
PYTEST_ARGS ?=
SOAK_ARGS ?=

ifeq ($(strip $(PYTHON)),)
VENV := .venv
else
VENV := $(word 2,$(shell ./scripts/python.sh '$(PYTHON)'))
ifeq ($(VENV),)
$(error PYTHON=$(PYTHON) is not a usable interpreter (see above))
endif
endif
export PYTHON

.PHONY: serve test test-asan bench soak wheel check-wheel sdist check-sdist clean

serve:
	FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	$(VENV)/bin/flask --app examples/app:app run --port $(PORT) --with-threads

test:
	./scripts/bootstrap.sh
	$(VENV)/bin/python -m pytest tests -q $(PYTEST_ARGS)

# The loop, runner and gather tests against an ASan+UBSan build of the C
# core (built in build/asan or build/asan-X.Y, not in the source tree).
test-asan:
	./scripts/bootstrap.sh
	FLASKASYNC_VENV=$(VENV) ./scripts/asan.sh

bench:
	EXTRA_TOOLS=wrk FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	$(VENV)/bin/pip install -q uvloop asgiref gunicorn httpx sniffio
	$(VENV)/bin/python bench/bench_core.py
	$(VENV)/bin/python bench/bench_net.py

# The soak: 1,000,000 requests per mode (gunicorn gthread, ASGI mode) of a
# mix of async views, errors and worker RSS every 50,000; writes
# bench/results/soak.json and docs/img/soak_rss.png.  A shorter run:
#   make soak SOAK_ARGS='--requests 100000'
soak:
	EXTRA_TOOLS=wrk FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	$(VENV)/bin/pip install -q matplotlib
	nice -n 5 $(VENV)/bin/python bench/soak.py $(SOAK_ARGS)

# A binary wheel for this interpreter, repaired by auditwheel into a
# manylinux wheel that carries libuv: dist/flaskasync-*-cpXY-*-manylinux_*.whl
wheel:
	FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	./scripts/wheel.sh $(VENV)

# That wheel, in a fresh virtualenv with the system's libuv hidden.
check-wheel: wheel
	./scripts/check_wheel.sh $(VENV)

# The source distribution: dist/flaskasync-<version>.tar.gz
sdist:
	FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	$(VENV)/bin/python -m pip install -q build
	rm -f dist/flaskasync-*.tar.gz
	$(VENV)/bin/python -m build --sdist --outdir dist .

# It builds with the system's libuv, and fails clearly without.
check-sdist: sdist
	./scripts/check_sdist.sh $(VENV)

clean:
	rm -rf build dist .venv .venv-* flaskasync/*.so *.egg-info
