# The two commands of the README, plus the developer switches.
#   make serve   set up (apt, .venv, build) and serve examples/app.py on :5000
#   make test    set up and run the test suite
PORT ?= 5000

.PHONY: serve test test-asan bench clean

serve:
	FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	.venv/bin/flask --app examples/app:app run --port $(PORT) --with-threads

test:
	./scripts/bootstrap.sh
	.venv/bin/python -m pytest tests -q

# The loop, runner and gather tests against an ASan+UBSan build of the C
# core (built in build/asan, not in the source tree).
test-asan:
	./scripts/bootstrap.sh
	./scripts/asan.sh

bench:
	EXTRA_TOOLS=wrk FLASKASYNC_TEST_PEERS=0 ./scripts/bootstrap.sh
	.venv/bin/pip install -q uvloop asgiref gunicorn httpx sniffio
	.venv/bin/python bench/bench_core.py
	.venv/bin/python bench/bench_net.py

clean:
	rm -rf build .venv flaskasync/*.so *.egg-info
