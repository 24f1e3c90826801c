#!/usr/bin/env python3
"""Mutation testing of the C core: does the test suite notice a wrong loop?

Each mutant below is one small, deliberate bug in csrc/ (a dropped check, a
flipped condition, a skipped cancel): (file, exact original snippet,
replacement, description).  For each mutant the script

1. copies the repository's working tree (tracked and untracked, not
   ignored files: uncommitted tests count) to a scratch directory once,
   never touching the worktree itself;
2. applies the mutant to the scratch copy's source, rebuilds the extension
   there (``python setup.py build_ext --inplace``) and restores the source;
3. runs a core subset of the tests from the scratch copy with ``-x -q``
   against that build, flaskasync's loop only (a C mutant cannot change
   asyncio's reference loop, so the reference half of each parametrized
   test is deselected), under a per-mutant timeout: a failure or a hang
   kills the mutant, a green run means it survived.

Then it prints a table and the kill rate.  A mutant whose snippet is not
found exactly once in its file is reported as STALE (update the list when
the C code changes); one that does not compile as NOBUILD.  Neither counts
in the kill rate.

Usage (run by hand, it is CPU heavy: a rebuild is ~15 s, a test run up to
a minute or two per mutant; nice it on a shared machine)::

    nice -n 10 .venv/bin/python scripts/mutate.py            # every mutant
    .venv/bin/python scripts/mutate.py --list                 # list them
    .venv/bin/python scripts/mutate.py --only 3 --only 17     # a few (1-based)
    .venv/bin/python scripts/mutate.py --only 3-9 --jobs 2    # two at a time
    .venv/bin/python scripts/mutate.py --tests tests/test_loop_run.py

Options: ``--python`` (default: the worktree's .venv python, else this
one), ``--timeout`` seconds per mutant (default 300), ``--jobs`` parallel
mutants (default 1; each needs its own scratch copy), ``--keep`` keeps the
scratch directories, ``--no-baseline`` skips the run of the unmutated tree
(by default it must pass first, or every mutant would look killed).
Exit status: 0 when every applicable mutant was killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The core subset: fast files that exercise the loop, the runner, gather,
# the watchers and the transports.
CORE_TESTS = [
    "tests/test_loop_callbacks.py",
    "tests/test_loop_run.py",
    "tests/test_loop_errors.py",
    "tests/test_loop_io.py",
    "tests/test_runner.py",
    "tests/test_gather.py",
    "tests/test_loop_stream.py",
    "tests/test_loop_unix.py",
    "tests/test_loop_udp.py",
    "tests/test_loop_pipes.py",
    "tests/test_loop_sock.py",
    "tests/test_faults.py",
]

# Deselects the asyncio (reference) half of the parametrized tests.
PLUGIN = '''
def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "asyncio" in (params.get("loop_kind"), params.get("kind")):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
'''


@dataclasses.dataclass(frozen=True)
class Mutant:
    file: str  # relative to csrc/
    original: str  # must occur exactly once in the file
    replacement: str
    description: str


M = Mutant

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------- loop.c
    M("loop.c",
      "int block = may_block && self->ready_len == 0 && !self->stopping;",
      "int block = may_block && self->ready_len == 0;",
      "a stopped loop with nothing ready still blocks in its poll"),
    M("loop.c",
      "if (block && self->heap_len && self->heap[0]->when <= fa_now()) {",
      "if (0) {",
      "a due timer does not prevent a blocking poll"),
    M("loop.c",
      "while (self->heap_len && self->heap[0]->when <= now) {",
      "while (self->heap_len && self->heap[0]->when < now - 0.005) {",
      "timers fire 5 ms late"),
    M("loop.c",
      "    while (n-- > 0 && self->ready_len > 0) {",
      "    while (self->ready_len > 0) {",
      "callbacks scheduled by callbacks run in the same iteration"),
    M("loop.c",
      "        if (!h->cancelled) {\n            if (self->debug) {",
      "        if (1) {\n            if (self->debug) {",
      "cancelled handles still run"),
    M("loop.c",
      "                    if (dt >= slow) {",
      "                    if (dt >= slow * 10) {",
      "slow callbacks are not logged at slow_callback_duration"),
    M("loop.c",
      "        if (self->stopping) {\n            break;",
      "        if (self->stopping && self->ready_len == 0) {\n            break;",
      "stop() waits until the ready queue is empty"),
    M("loop.c",
      "        if (fatal) {\n            Py_RETURN_NONE;\n        }",
      "",
      "run_until_complete stops on a future failed with KeyboardInterrupt"),
    M("loop.c",
      '        PyErr_SetString(PyExc_RuntimeError, "Event loop stopped before Future completed.");\n'
      "        goto done;",
      "        Py_CLEAR(r);\n        Py_RETURN_NONE;",
      "run_until_complete returns None when stopped early"),
    M("loop.c",
      "    if (self->thread_id != 0) {\n"
      '        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");',
      "    if (0) {\n"
      '        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");',
      "running a running loop is not refused"),
    M("loop.c",
      '        PyErr_SetString(PyExc_RuntimeError, "Cannot close a running event loop");\n'
      "        return NULL;",
      "        Py_RETURN_NONE;",
      "close() of a running loop silently does nothing"),
    M("loop.c",
      "    self->closed = 1;\n    fa_jobs_fail_all(self);",
      "    self->closed = 1;",
      "closing the app loop leaves run() callers waiting"),
    M("runner.c",
      "        if (j->error == NULL && atomic_load(&j->posted) == 0) {",
      "        if (0) {",
      "a run() caller woken by close() gets the task's InvalidStateError"),
    M("loop.c",
      "    self->closed = 1;\n    fa_jobs_fail_all(self);\n    ready_clear(self);",
      "    self->closed = 1;\n    fa_jobs_fail_all(self);",
      "close() keeps the pending callbacks"),
    M("loop.c",
      "    self->stopping = 0;\n    self->thread_id = 0;",
      "    self->thread_id = 0;",
      "a stop() is remembered across runs"),
    M("loop.c",
      "    if (new_task && PyObject_SetAttr(fut, st->s_log_destroy_pending, Py_False) < 0) {",
      "    if (0) {",
      "run_until_complete's own task logs 'destroyed but pending'"),
    M("loop.c",
      "    return a->when < b->when || (a->when == b->when && a->seq < b->seq);",
      "    return a->when < b->when;",
      "timers with equal deadlines lose their scheduling order"),
    M("loop.c",
      "        if (c + 1 < n && timer_lt(self->heap[c + 1], self->heap[c])) {\n            c++;",
      "        if (0) {\n            c++;",
      "the heap's sift-down ignores the right child"),
    # ----------------------------------------------------------- runner.c
    M("runner.c",
      "        if (!(j->timeout >= 0.0)) {",
      "        if (!(j->timeout > 0.0)) {",
      "run(timeout=0) is refused"),
    M("runner.c",
      "        j->timed_out = 1;",
      "",
      "a timed-out run() raises CancelledError, not TimeoutError"),
    M("runner.c",
      "PyOS_double_to_string(j->timeout, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);",
      "PyOS_double_to_string(j->timeout, 'g', 3, 0, NULL);",
      "the timeout message writes the seconds with %.3g"),
    M("runner.c",
      "        PyException_SetCause(timeout_exc, Py_XNewRef(cancelled));",
      "",
      "the TimeoutError does not come from the CancelledError"),
    M("runner.c",
      "    job_cancel_timeout(j);\n    job_close_scope(j);\n    job_post(j);",
      "    job_close_scope(j);\n    job_post(j);",
      "a run() finished in another thread leaves its timeout armed"),
    M("runner.c",
      "    if (done) {\n        job_close_scope(j);\n        fa_loop_leave(L);\n        job_cancel_timeout(j);",
      "    if (done) {\n        job_close_scope(j);\n        fa_loop_leave(L);",
      "a run() finished inline leaves its timeout armed"),
    M("runner.c",
      "    if (j->task != NULL && !j->loop->closed) {\n        PyObject *cancel",
      "    if (0) {\n        PyObject *cancel",
      "an abandoned run() (KeyboardInterrupt) leaves its task running"),
    M("runner.c",
      "    if (j->abandoned) {",
      "    if (0) {",
      "an abandoned submitted coroutine is still started"),
    # ----------------------------------------------------------- handle.c
    M("handle.c",
      "        Py_CLEAR(h->args);\n        Py_SETREF(h->callback, Py_NewRef(Py_None));",
      "",
      "a cancelled handle keeps its callback and arguments"),
    M("handle.c",
      "        Py_CLEAR(h->args);\n        Py_SETREF(h->callback, Py_NewRef(Py_None));",
      "        Py_CLEAR(h->args);",
      "a cancelled handle keeps its callback"),
    M("handle.c",
      "        Py_SETREF(h->callback, Py_NewRef(Py_None));",
      "        Py_INCREF(h->callback);\n        Py_SETREF(h->callback, Py_NewRef(Py_None));",
      "cancel() leaks a reference to the callback"),
    M("handle.c",
      "        if (h->is_timer && h->scheduled && h->loop != NULL) {\n"
      "            fa_timer_remove(h->loop, h);\n        }",
      "",
      "a cancelled timer stays in the heap"),
    M("handle.c",
      "    if (PyContext_Enter(ctx) < 0) {\n        res = NULL;\n    }",
      "    if (0) {\n        res = NULL;\n    }",
      "callbacks run outside their context"),
    # ------------------------------------------------------------ gather.c
    M("gather.c",
      "    if (ret) {\n        /* Propagate the cancellation whatever return_exceptions says. */",
      "    if (0) {\n        /* Propagate the cancellation whatever return_exceptions says. */",
      "a cancelled gather(return_exceptions=True) returns instead of raising"),
    M("gather.c",
      "    if (!f->return_exceptions) {\n        c = is_cancelled(st, fut);",
      "    if (0) {\n        c = is_cancelled(st, fut);",
      "the first child's exception no longer fails the gather at once"),
    M("gather.c",
      "    if (f->nfinished < f->nfuts || f->children == NULL) {",
      "    if (f->nfinished < f->nfuts - 1 || f->children == NULL) {",
      "the gather's result is set one child early"),
    M("gather.c",
      "        if (!c) {\n            exc = call0(fut, st->s_exception);",
      "        if (0) {\n            exc = call0(fut, st->s_exception);",
      "a late child's exception is logged as never retrieved"),
    M("gather.c",
      "                Py_SETREF(msg, PyUnicode_FromString(\"\"));",
      "                Py_SETREF(msg, PyUnicode_FromString(\"None\"));",
      "a cancelled child's CancelledError in the results gets a wrong message"),
    M("gather.c",
      "        r = PyObject_CallMethodOneArg(outer, st->s_set_result, results);",
      "        PyList_Reverse(results);\n        r = PyObject_CallMethodOneArg(outer, st->s_set_result, results);",
      "the results come back in reverse order"),
    M("gather.c",
      "        seen = PyDict_Contains(arg_to_fut, key);",
      "        seen = 0;",
      "a child passed twice gets its done callback twice"),
    # --------------------------------------------------- stream.c / udp.c / transport.c
    M("stream.c",
      "    if (t->started && !t->closing && !t->paused && !t->read_eof) {",
      "    if (t->started && !t->closing && !t->read_eof) {",
      "pause_reading() does not stop reading"),
    M("stream.c",
      "    if (t->wsize <= t->high || t->protocol_paused) {",
      "    if (t->wsize <= 2 * t->high || t->protocol_paused) {",
      "pause_writing() comes late (at twice the high-water mark)"),
    M("stream.c",
      "    if (!t->protocol_paused || t->wsize > t->low) {",
      "    if (!t->protocol_paused || t->wsize > 0) {",
      "resume_writing() waits for an empty buffer instead of the low-water mark"),
    M("stream.c",
      '    if (is_socket(t) && t->eof) {\n        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");',
      '    if (0) {\n        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");',
      "write() after write_eof() is accepted"),
    M("stream.c",
      "        if (t->conn_lost >= LOG_THRESHOLD) {\n"
      '            fa_transport_log_warning(T(t), "socket.send() raised exception.");',
      "        if (0) {\n"
      '            fa_transport_log_warning(T(t), "socket.send() raised exception.");',
      "writes after the connection is lost are dropped silently"),
    M("stream.c",
      "    if (t->closing || !t->paused) {\n        Py_RETURN_NONE;\n    }\n    t->paused = 0;",
      "    if (!t->paused) {\n        Py_RETURN_NONE;\n    }\n    t->paused = 0;",
      "resume_reading() on a closing transport reads again"),
    M("stream.c",
      "    wbuf_clear(t);\n    t->closing = 1;\n    Py_CLEAR(t->protocol);",
      "    wbuf_clear(t);\n    t->closing = 1;",
      "a transport keeps its protocol after connection_lost"),
    M("udp.c",
      "    if (t->started && !t->closing && !t->paused) {",
      "    if (t->started && !t->closing) {",
      "a paused datagram transport keeps reading"),
    M("udp.c",
      "    if (t->qsize <= t->high || t->protocol_paused || t->protocol == NULL) {",
      "    if (t->qsize <= 2 * t->high || t->protocol_paused || t->protocol == NULL) {",
      "a datagram transport pauses its protocol late"),
    M("udp.c",
      "        if (t->closing && !t->lost) {\n            PyObject *res = udp_call_connection_lost(t, Py_None);",
      "        if (0) {\n            PyObject *res = udp_call_connection_lost(t, Py_None);",
      "a closing datagram transport never calls connection_lost after draining"),
    M("transport.c",
      "    if (!detach && t->fd >= 0 && fa_reg_same_file(&t->reg) != 1) {\n        detach = 1;\n    }",
      "",
      "a transport closes the fd's new owner after its fd was reused"),
    M("transport.c",
      "            if (same != 1) {\n                transport_lost(t, same);",
      "            if (0) {\n                transport_lost(t, same);",
      "the sweep misses an idle transport whose fd was replaced"),
    M("ioset.c",
      "        if (r->ops->closed_is_lost && rc == -EBADF) {",
      "        if (0) {",
      "a transport's closed fd gives EBADF instead of a lost connection"),
    # ------------------------------------------------------------ ioset.c / watcher.c
    M("watcher.c",
      "    if (h != NULL && !h->cancelled && !h->queued && fa_loop_push_ready(loop, h) == 0) {",
      "    if (h != NULL && !h->queued && fa_loop_push_ready(loop, h) == 0) {",
      "a cancelled fd callback is queued"),
    M("watcher.c",
      "    if (events & ~(uint32_t)EPOLLIN) {\n        push(w->loop, w->writer);",
      "    if (events & EPOLLOUT) {\n        push(w->loop, w->writer);",
      "an error/hang-up does not wake the writer"),
    M("watcher.c",
      "    if (events & ~(uint32_t)EPOLLOUT) {\n        push(w->loop, w->reader);",
      "    if (events & EPOLLIN) {\n        push(w->loop, w->reader);",
      "an error/hang-up does not wake the reader"),
    M("watcher.c",
      "    cancel_handle(h);",
      "",
      "remove_reader/remove_writer does not cancel the queued handle"),
]


# ------------------------------------------------------------------ running


def python_default() -> str:
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def copy_tree(dest: str) -> None:
    """Copy the working tree's files (tracked and untracked, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):  # deleted but still in the index
            continue
        dst = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    with open(os.path.join(dest, "_mutate_plugin.py"), "w") as f:
        f.write(PLUGIN)


def build(scratch: str, python: str) -> tuple[bool, str]:
    env = dict(os.environ, FLASKASYNC_WERROR="0")
    p = subprocess.run(
        [python, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=scratch, env=env, capture_output=True, text=True,
    )
    return p.returncode == 0, p.stdout + p.stderr


def run_tests(scratch: str, python: str, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """('pass'|'fail'|'hang', seconds, last output lines)."""
    env = dict(os.environ, PYTHONPATH=scratch, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "_mutate_plugin", *tests]
    t0 = time.monotonic()
    # A new session so that a hang is killed with all its children.
    p = subprocess.Popen(cmd, cwd=scratch, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, _ = p.communicate()
        return "hang", time.monotonic() - t0, out[-2000:]
    dt = time.monotonic() - t0
    return ("pass" if p.returncode == 0 else "fail"), dt, out[-2000:]


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    for line in reversed(output.splitlines()):
        if "Timeout" in line or "Fatal Python error" in line:
            return line.strip()[:60]
    return ""


def run_mutant(index: int, m: Mutant, scratch: str, args) -> dict:
    path = os.path.join(scratch, "csrc", m.file)
    with open(path) as f:
        source = f.read()
    row = {"n": index, "mutant": m, "status": "", "secs": 0.0, "test": ""}
    if source.count(m.original) != 1:
        row["status"] = "STALE"
        row["test"] = f"snippet found {source.count(m.original)} times"
        return row
    try:
        with open(path, "w") as f:
            f.write(source.replace(m.original, m.replacement))
        ok, log = build(scratch, args.python)
    finally:
        with open(path, "w") as f:
            f.write(source)
    if not ok:
        row["status"] = "NOBUILD"
        row["test"] = next((ln for ln in log.splitlines() if "error" in ln), "")[:60]
        return row
    outcome, dt, out = run_tests(scratch, args.python, args.tests, args.timeout)
    row["secs"] = dt
    row["status"] = {"pass": "SURVIVED", "fail": "killed", "hang": "killed (hang)"}[outcome]
    row["test"] = first_failure(out) if outcome != "pass" else ""
    return row


def parse_only(values: list[str], n: int) -> list[int]:
    picked: list[int] = []
    for v in values:
        for part in v.split(","):
            if "-" in part:
                a, b = part.split("-")
                picked.extend(range(int(a), int(b) + 1))
            else:
                picked.append(int(part))
    bad = [i for i in picked if not 1 <= i <= n]
    if bad:
        sys.exit(f"--only: no mutant {bad[0]} (there are {n})")
    return sorted(set(picked))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", action="append", default=[], metavar="N[-M][,K]",
                    help="run only these mutants (1-based; repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per mutant's test run; past it the mutant counts as killed")
    ap.add_argument("--python", default=python_default(), help="interpreter with the test deps")
    ap.add_argument("--tests", nargs="+", default=CORE_TESTS, help="test files to run")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directories")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the check that the unmutated tree passes")
    args = ap.parse_args()
    # Started in the background by a shell, this process may have SIGINT
    # ignored, and the tests' children would inherit that: the Ctrl-C tests
    # would hang.  A Python handler here is reset to the default on exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.list:
        for i, m in enumerate(MUTANTS, 1):
            print(f"{i:3d}  {m.file:<12} {m.description}")
        return 0
    chosen = parse_only(args.only, len(MUTANTS)) if args.only else list(range(1, len(MUTANTS) + 1))

    jobs = max(1, min(args.jobs, len(chosen)))
    scratches = [tempfile.mkdtemp(prefix=f"fa-mutate-{i}-") for i in range(jobs)]
    try:
        for s in scratches:
            copy_tree(s)
        if not args.no_baseline:
            ok, log = build(scratches[0], args.python)
            if not ok:
                print(log)
                sys.exit("the unmutated tree does not build")
            outcome, dt, out = run_tests(scratches[0], args.python, args.tests, args.timeout)
            print(f"baseline: {outcome} in {dt:.0f} s", flush=True)
            if outcome != "pass":
                print(out)
                sys.exit("the unmutated tree does not pass its tests: fix that first")

        free = list(scratches)
        rows: list[dict] = []

        def work(i: int) -> dict:
            s = free.pop()
            try:
                return run_mutant(i, MUTANTS[i - 1], s, args)
            finally:
                free.append(s)

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for row in pool.map(work, chosen):
                m = row["mutant"]
                print(f"{row['n']:3d} {row['status']:<14} {row['secs']:6.0f}s  "
                      f"{m.file:<11} {m.description}"
                      + (f"\n{'':27}{row['test']}" if row["test"] else ""), flush=True)
                rows.append(row)
    finally:
        if not args.keep:
            for s in scratches:
                shutil.rmtree(s, ignore_errors=True)
        else:
            print("scratch:", " ".join(scratches))

    counted = [r for r in rows if r["status"] not in ("STALE", "NOBUILD")]
    killed = [r for r in counted if r["status"].startswith("killed")]
    survived = [r for r in counted if r["status"] == "SURVIVED"]
    print()
    print(f"{'#':>3} {'status':<14} {'file':<11} description")
    for r in rows:
        print(f"{r['n']:3d} {r['status']:<14} {r['mutant'].file:<11} {r['mutant'].description}")
    if counted:
        print(f"\nkilled {len(killed)} of {len(counted)} "
              f"({100.0 * len(killed) / len(counted):.0f}%); survived: "
              + (", ".join(str(r["n"]) for r in survived) or "none")
              + (f"; stale/nobuild: {len(rows) - len(counted)}" if len(rows) != len(counted) else ""))
    return 0 if not survived and len(counted) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
