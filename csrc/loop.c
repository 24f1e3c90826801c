/* The event loop core: ready queue, timer heap, the run loop and the
 * scheduling methods of flaskasync.Loop.
 *
 * Timers live in our own heap ordered by (deadline, sequence) so that equal
 * deadlines run in the order they were scheduled.  The earliest deadline is
 * programmed into a timerfd with nanosecond resolution, watched by libuv
 * like any other fd: a timer never fires before its deadline (the heap is
 * checked against CLOCK_MONOTONIC, the clock of time.monotonic()) and the
 * kernel wakes us within its timer slack after it, instead of libuv's
 * millisecond-rounded timers. */
#include "loop.h"
#include "handle.h"
#include "ioset.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

double
fa_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- hooks */
/* What the layers above the loop do when it closes or supervises a task
 * (loop.h, fa_loop_hooks): set by module.c before it makes the loop type,
 * so every loop sees it.  One constant table for the process. */
static const fa_loop_hooks *layer_hooks;

void
fa_loop_set_hooks(const fa_loop_hooks *h)
{
    layer_hooks = h;
}

static void
run_hooks(fa_loop_hook const *list, fa_loop *self)
{
    for (int i = 0; i < FA_LOOP_HOOKS_MAX && list[i] != NULL; i++) {
        list[i](self);
    }
}

/* ---------------------------------------------------------------- ready */

int
fa_loop_push_ready(fa_loop *self, fa_handle *h)
{
    /* The capacity is a power of two: positions wrap with a mask. */
    if (self->ready_len == self->ready_cap) {
        Py_ssize_t ncap = self->ready_cap ? self->ready_cap * 2 : 64;
        fa_handle **n = PyMem_Malloc(sizeof(fa_handle *) * ncap);
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < self->ready_len; i++) {
            n[i] = self->ready[(self->ready_head + i) & (self->ready_cap - 1)];
        }
        PyMem_Free(self->ready);
        self->ready = n;
        self->ready_head = 0;
        self->ready_cap = ncap;
    }
    self->ready[(self->ready_head + self->ready_len) & (self->ready_cap - 1)] =
        (fa_handle *)Py_NewRef(h);
    self->ready_len++;
    return 0;
}

static fa_handle *
ready_pop(fa_loop *self)
{
    fa_handle *h = self->ready[self->ready_head];
    self->ready_head = (self->ready_head + 1) & (self->ready_cap - 1);
    self->ready_len--;
    return h;
}

static void
ready_clear(fa_loop *self)
{
    while (self->ready_len > 0) {
        fa_handle *h = ready_pop(self);
        h->queued = 0;
        Py_DECREF(h);
    }
}

/* ----------------------------------------------------------- timer heap */

static inline int
timer_lt(fa_handle *a, fa_handle *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static inline void
heap_set(fa_loop *self, Py_ssize_t i, fa_handle *h)
{
    self->heap[i] = h;
    h->heap_index = i;
}

static void
heap_up(fa_loop *self, Py_ssize_t i)
{
    fa_handle *h = self->heap[i];
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!timer_lt(h, self->heap[p])) {
            break;
        }
        heap_set(self, i, self->heap[p]);
        i = p;
    }
    heap_set(self, i, h);
}

static void
heap_down(fa_loop *self, Py_ssize_t i)
{
    fa_handle *h = self->heap[i];
    Py_ssize_t n = self->heap_len;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && timer_lt(self->heap[c + 1], self->heap[c])) {
            c++;
        }
        if (!timer_lt(self->heap[c], h)) {
            break;
        }
        heap_set(self, i, self->heap[c]);
        i = c;
    }
    heap_set(self, i, h);
}

static int
heap_push(fa_loop *self, fa_handle *h)
{
    if (self->heap_len == self->heap_cap) {
        Py_ssize_t ncap = self->heap_cap ? self->heap_cap * 2 : 64;
        fa_handle **n = PyMem_Realloc(self->heap, sizeof(fa_handle *) * ncap);
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->heap = n;
        self->heap_cap = ncap;
    }
    Py_INCREF(h);
    h->scheduled = 1;
    heap_set(self, self->heap_len++, h);
    heap_up(self, self->heap_len - 1);
    return 0;
}

/* Remove h from the heap; the heap's reference is returned to the caller. */
static fa_handle *
heap_take(fa_loop *self, Py_ssize_t i)
{
    fa_handle *h = self->heap[i];
    fa_handle *last = self->heap[--self->heap_len];
    if (i < self->heap_len) {
        heap_set(self, i, last);
        if (i > 0 && timer_lt(last, self->heap[(i - 1) / 2])) {
            heap_up(self, i);
        }
        else {
            heap_down(self, i);
        }
    }
    h->heap_index = -1;
    h->scheduled = 0;
    return h;
}

void
fa_timer_remove(fa_loop *self, fa_handle *h)
{
    Py_ssize_t i = h->heap_index;
    if (i < 0 || i >= self->heap_len || self->heap[i] != h) {
        return;
    }
    Py_DECREF(heap_take(self, i));
}

static void
heap_clear(fa_loop *self)
{
    while (self->heap_len > 0) {
        fa_handle *h = heap_take(self, self->heap_len - 1);
        Py_DECREF(h);
    }
}

/* Program timer_fd for the earliest deadline.  A syscall only when the
 * deadline changed since the last call. */
void
fa_loop_arm_timer(fa_loop *self)
{
    double when = self->heap_len ? self->heap[0]->when : -1.0;
    struct itimerspec its;

    if (when == self->armed_when || self->timer_fd < 0 || fa_loop_forked(self)) {
        return;
    }
    memset(&its, 0, sizeof(its));
    if (when >= 0.0 && isfinite(when) && when < 1e15) {
        double sec = floor(when);
        long nsec = (long)ceil((when - sec) * 1e9);
        if (nsec >= 1000000000L) {
            sec += 1.0;
            nsec -= 1000000000L;
        }
        its.it_value.tv_sec = (time_t)sec;
        its.it_value.tv_nsec = nsec;
        if (its.it_value.tv_sec == 0 && nsec == 0) {
            its.it_value.tv_nsec = 1; /* zero would disarm */
        }
    }
    else if (when < 0.0 && self->heap_len) {
        its.it_value.tv_nsec = 1; /* a deadline in the past: fire now */
    }
    /* else: no timers or an infinite deadline: disarm. */
    (void)timerfd_settime(self->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
    self->armed_when = when;
}

/* -------------------------------------------------------- GIL handling
 *
 * The GIL protocol of the loop and the runner, written once, here.
 *
 * - Everything in a loop (its fields, the ready queue, the heap, the fd
 *   set, every Python object) is touched with the GIL held.  The only
 *   exceptions are the runner's atomics (fa_runner in runner.h: baton,
 *   home_missed, home_stop, all seq_cst), its semaphores, and libuv's
 *   poll of the backend fd, which touches no Python state.
 * - The thread running a loop gives the GIL up in one place: on_prepare,
 *   right before a uv_run that may block (`blocking` set by
 *   fa_loop_collect, or by close() waiting for a DNS request), keeping
 *   the thread state in `released`.  It re-takes it in fa_loop_gil_ensure
 *   (loop.h): from on_check after the poll, from any libuv callback that
 *   runs inside that uv_run and needs Python (signals, DNS results, the
 *   fd set), and once more after uv_run returns.  Every uv_run that does
 *   not set `blocking` runs with the GIL held throughout.
 * - The runner's threads (runner.c): a driver (a thread in run()) holds
 *   the GIL and then tries the baton with one compare-and-swap, never
 *   waiting for it; it waits for its job's semaphore with the GIL
 *   released.  The home thread polls libuv's backend fd holding neither,
 *   takes the baton first and the GIL second (PyEval_RestoreThread in
 *   home_main), and gives the baton back before the GIL.  Nobody ever
 *   waits for the baton while holding the GIL, so that order cannot
 *   deadlock.  Stopping the home thread (runner.c's home_stop, from
 *   fa_runner_loop_closing) joins it with the GIL released, because it may
 *   be waiting for the GIL to finish its round. */

static void
on_prepare(uv_prepare_t *p)
{
    fa_loop *self = (fa_loop *)p->data;
    /* Release the GIL if this uv_run may block.  We decide from our own
     * state (fa_loop_collect set `blocking` only when nothing is ready and
     * no timer is due), not from uv_backend_timeout(): libuv 1.44 returns 0
     * there while a new watcher waits to be registered, then blocks anyway. */
    if (self->blocking && self->released == NULL) {
        self->released = PyEval_SaveThread();
    }
}

static void
on_check(uv_check_t *c)
{
    fa_loop_gil_ensure((fa_loop *)c->data);
}

static void
on_wakeup(uv_async_t *a)
{
    (void)a; /* work arrives through the ready queue; this only wakes the poll */
}

static void
on_timer_fd(uv_poll_t *p, int status, int events)
{
    fa_loop *self = (fa_loop *)p->data;
    uint64_t ticks;
    (void)status;
    (void)events;
    /* Reset the timerfd's readiness; the heap is checked after the poll. */
    if (read(self->timer_fd, &ticks, sizeof(ticks)) == (ssize_t)sizeof(ticks)) {
        self->armed_when = -2.0;
    }
}

/* ------------------------------------------------------------ signals */

/* Python's C signal handler writes the signal number to the wakeup fd.
 * While a loop blocks in the main thread that fd is our pipe, watched by
 * libuv, so a signal ends the poll; fa_loop_collect then runs the Python
 * handlers (PyErr_CheckSignals).  Loop-level handlers registered with
 * add_signal_handler() are dispatched from the bytes read here. */
static void
on_sig_pipe(uv_poll_t *p, int status, int events)
{
    fa_loop *self = (fa_loop *)p->data;
    char buf[256];
    PyObject *data = NULL;
    (void)status;
    (void)events;
    fa_loop_gil_ensure(self);
    for (;;) {
        ssize_t n = read(self->sig_rfd, buf, sizeof(buf));
        if (n <= 0) {
            break;
        }
        if (self->sig_dispatch) {
            PyObject *chunk = PyBytes_FromStringAndSize(buf, n);
            if (chunk == NULL) {
                PyErr_WriteUnraisable((PyObject *)self);
                break;
            }
            if (data == NULL) {
                data = chunk;
            }
            else {
                PyBytes_ConcatAndDel(&data, chunk);
                if (data == NULL) {
                    PyErr_WriteUnraisable((PyObject *)self);
                    break;
                }
            }
        }
    }
    if (data != NULL) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_process_self_data", "O", data);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
        Py_DECREF(data);
    }
}

static int
ensure_sig_pipe(fa_loop *self)
{
    int fds[2], r;
    if (self->sig_rfd >= 0) {
        return 0;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r = uv_poll_init(&self->uv, &self->sig_poll, fds[0]);
    if (r < 0) {
        close(fds[0]);
        close(fds[1]);
        return fa_set_uv_error(r, "uv_poll_init");
    }
    self->sig_poll.data = self;
    uv_poll_start(&self->sig_poll, UV_READABLE, on_sig_pipe);
    uv_unref((uv_handle_t *)&self->sig_poll);
    self->sig_rfd = fds[0];
    self->sig_wfd = fds[1];
    self->sig_poll_ready = 1;
    self->io_dirty = 1;
    return 0;
}

/* Before blocking in the main thread: make our pipe the wakeup fd. */
static void
install_wakeup(fa_loop *self)
{
    PyObject *args = NULL, *kw = NULL, *old = NULL;
    if (self->wakeup_old != NULL || fa_app_is(self) ||
        PyThread_get_thread_ident() != self->st->main_ident) {
        return;
    }
    if (ensure_sig_pipe(self) < 0) {
        goto fail;
    }
    args = Py_BuildValue("(i)", self->sig_wfd);
    kw = Py_BuildValue("{s:O}", "warn_on_full_buffer", Py_False);
    if (args == NULL || kw == NULL) {
        goto fail;
    }
    old = PyObject_Call(self->st->set_wakeup_fd, args, kw);
    if (old == NULL) {
        goto fail;
    }
    self->wakeup_old = old;
    Py_DECREF(args);
    Py_DECREF(kw);
    return;
fail:
    /* Not fatal (e.g. a subinterpreter): signals then wait for the next event. */
    Py_XDECREF(args);
    Py_XDECREF(kw);
    PyErr_Clear();
}

/* signal.set_wakeup_fd(fd); returns the fd it replaced, or -2 with the
 * error cleared (not the main thread, interpreter finalizing). */
static long
swap_wakeup_fd(fa_loop *self, PyObject *fd)
{
    PyObject *r = PyObject_CallOneArg(self->st->set_wakeup_fd, fd);
    long prev = r != NULL ? PyLong_AsLong(r) : -2;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        prev = -2;
    }
    return prev;
}

/* After the run: put back the wakeup fd found when the loop first blocked.
 * Not if the run changed it: add_signal_handler()/remove_signal_handler()
 * (loop_set_signal_dispatch forgets wakeup_old then) and whoever else set
 * it meant it to stay, as asyncio leaves its self-pipe installed. */
static void
uninstall_wakeup(fa_loop *self)
{
    PyObject *old = self->wakeup_old;
    long cur;
    if (old == NULL) {
        return;
    }
    self->wakeup_old = NULL;
    cur = swap_wakeup_fd(self, old);
    if (cur != self->sig_wfd && cur != -2) {
        /* Somebody set their own fd during the run: keep it. */
        PyObject *keep = PyLong_FromLong(cur);
        if (keep != NULL) {
            (void)swap_wakeup_fd(self, keep);
            Py_DECREF(keep);
        }
        PyErr_Clear();
    }
    Py_DECREF(old);
}

/* Before the signal pipe is closed: a wakeup fd still pointing at it would
 * make every later signal write into a closed fd, or into whatever file
 * reuses its number.  Reset it to -1 (main thread only, as
 * signal.set_wakeup_fd allows). */
static void
release_wakeup_fd(fa_loop *self)
{
    PyObject *none;
    long cur;
    if (self->sig_wfd < 0 || PyThread_get_thread_ident() != self->st->main_ident) {
        return;
    }
    none = PyLong_FromLong(-1);
    if (none == NULL) {
        PyErr_Clear();
        return;
    }
    cur = swap_wakeup_fd(self, none);
    Py_DECREF(none);
    if (cur != self->sig_wfd && cur >= 0) {
        PyObject *keep = PyLong_FromLong(cur);
        if (keep != NULL) {
            (void)swap_wakeup_fd(self, keep);
            Py_DECREF(keep);
        }
        PyErr_Clear();
    }
}

static PyObject *
loop_signal_fd(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (fa_loop_check_closed(self) < 0 || ensure_sig_pipe(self) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->sig_wfd);
}

static PyObject *
loop_set_signal_dispatch(fa_loop *self, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0) {
        return NULL;
    }
    if (on && !self->sig_dispatch) {
        if (ensure_sig_pipe(self) < 0) {
            return NULL;
        }
        /* Count the pipe as I/O so a busy loop still polls it. */
        self->n_io++;
    }
    else if (!on && self->sig_dispatch) {
        self->n_io--;
    }
    self->sig_dispatch = on;
    /* add_signal_handler()/remove_signal_handler() just set the wakeup fd
     * (our pipe, or -1 for the last one): that stays after the run. */
    Py_CLEAR(self->wakeup_old);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ run loop */

/* Poll for I/O (blocking if may_block and nothing is ready) and move due
 * timers to the ready queue. */
int
fa_loop_collect(fa_loop *self, int may_block)
{
    int block = may_block && self->ready_len == 0 && !self->stopping;
    if (block && self->heap_len && self->heap[0]->when <= fa_now()) {
        block = 0;
    }
    if (block) {
        fa_loop_arm_timer(self);
        install_wakeup(self);
        self->blocking = 1;
        self->io_dirty = 0;
        uv_run(&self->uv, UV_RUN_ONCE);
        self->blocking = 0;
        fa_loop_gil_ensure(self);
        /* libuv retries epoll_wait after EINTR, so Python-level signal
         * handlers (KeyboardInterrupt, asyncio.Runner's SIGINT handler)
         * would wait for the next event: run them now.  The wakeup fd that
         * Loop.run_forever installs in the main thread makes a signal
         * such an event. */
        if (!PyErr_Occurred() && PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    else if (self->n_io > 0 || self->n_closing > 0 || self->io_dirty) {
        self->io_dirty = 0;
        uv_run(&self->uv, UV_RUN_NOWAIT); /* collects the ready user fds too */
    }
    else if (self->n_watch > 0) {
        /* Only user fds to look at: one epoll_wait on the loop's own set,
         * without going through uv_run. */
        fa_ioset_harvest(self);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    if (self->heap_len) {
        double now = fa_now();
        while (self->heap_len && self->heap[0]->when <= now) {
            fa_handle *h = heap_take(self, 0);
            int r = fa_loop_push_ready(self, h);
            Py_DECREF(h);
            if (r < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static void
log_slow_callback(fa_loop *self, fa_handle *h, double dt)
{
    PyObject *d = PyFloat_FromDouble(dt);
    PyObject *r = NULL;
    if (d != NULL) {
        r = PyObject_CallMethodObjArgs((PyObject *)self, self->st->s_log_slow_callback,
                                       (PyObject *)h, d, NULL);
    }
    Py_XDECREF(d);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(r);
}

/* Run the callbacks that were ready when this call started; callbacks they
 * schedule wait for the next iteration, as in asyncio. */
int
fa_loop_run_ready(fa_loop *self)
{
    Py_ssize_t n = self->ready_len;
    while (n-- > 0 && self->ready_len > 0) {
        fa_handle *h = ready_pop(self);
        int r = 0;
        h->queued = 0;
        if (!h->cancelled) {
            if (self->debug) {
                /* As asyncio: the running handle is recorded (for the
                 * exception handler's handle_traceback) in debug mode. */
                double t0 = fa_now();
                double slow = 0.1;
                self->current = h;
                r = fa_handle_run(h);
                self->current = NULL;
                double dt = fa_now() - t0;
                if (r == 0) {
                    PyObject *v = PyObject_GetAttr((PyObject *)self,
                                                   self->st->s_slow_callback_duration);
                    if (v != NULL) {
                        slow = PyFloat_AsDouble(v);
                        Py_DECREF(v);
                    }
                    PyErr_Clear();
                    if (dt >= slow) {
                        log_slow_callback(self, h, dt);
                    }
                }
            }
            else {
                r = fa_handle_run(h);
            }
        }
        if (r < 0) {
            Py_XSETREF(self->failed, h);
            Py_CLEAR(self->last_ctx);
            return -1;
        }
        Py_DECREF(h);
    }
    /* The shared context of the callbacks scheduled in a row is not kept
     * beyond the iteration: it may hold a request's objects. */
    Py_CLEAR(self->last_ctx);
    return 0;
}

/* After fa_loop_run_ready() failed with KeyboardInterrupt/SystemExit: was
 * it a task's step?  asyncio.Task stores such an exception as its outcome
 * before re-raising it, so whoever waits on the task receives it; the
 * thread that merely happened to drive the loop must not raise it too.
 * Returns 1 (and clears the error) in that case, 0 otherwise. */
int
fa_loop_failure_is_task_outcome(fa_loop *self)
{
    fa_handle *h = self->failed;
    PyObject *owner, *done;
    int outcome = 0;
    self->failed = NULL;
    if (h == NULL || !fa_is_fatal_exception()) {
        Py_XDECREF(h);
        return 0;
    }
    PyObject *exc = fa_fetch_exception();
    owner = h->callback ? PyObject_GetAttrString(h->callback, "__self__") : NULL;
    if (owner != NULL && PyObject_TypeCheck(owner, (PyTypeObject *)self->st->TaskType)) {
        done = PyObject_CallMethodNoArgs(owner, self->st->s_done);
        outcome = done == Py_True;
        Py_XDECREF(done);
    }
    Py_XDECREF(owner);
    PyErr_Clear();
    Py_DECREF(h);
    if (outcome) {
        Py_XDECREF(exc);
        return 1;
    }
    fa_restore_exception(exc);
    return 0;
}

/* Does this thread already have our asyncgen hooks installed?  Known
 * without a call where the thread state shows them (up to 3.12); otherwise
 * they are installed again. */
static int
hooks_are_ours(fa_loop *self)
{
    return self->hook_first != NULL &&
           fa_asyncgen_hooks_are(self->hook_first, self->hook_fin) == 1;
}

/* Make this thread the one running the loop: running-loop slot, asyncgen
 * hooks and thread id, as BaseEventLoop.run_forever does.
 *
 * The app loop leaves its hooks installed in the thread afterwards (an
 * async generator first iterated by that thread belongs to the app loop
 * anyway), so a worker thread pays for installing them once. */
int
fa_loop_enter(fa_loop *self)
{
    fa_state *st = self->st;
    PyObject *hooks = NULL, *r;

    if (self->sig_rfd < 0 && !fa_app_is(self) && PyThread_get_thread_ident() == st->main_ident) {
        /* The pipe a blocking main-thread loop uses as signal wakeup fd:
         * made when the loop first runs rather than at its first blocking
         * poll, so user code never sees the loop's fd count change. */
        if (ensure_sig_pipe(self) < 0) {
            PyErr_Clear(); /* not fatal: install_wakeup retries */
        }
    }
    if (self->hook_first == NULL) {
        self->hook_first = PyObject_GetAttr((PyObject *)self, st->s_asyncgen_firstiter_hook);
        if (self->hook_first == NULL) {
            return -1;
        }
        self->hook_fin = PyObject_GetAttr((PyObject *)self, st->s_asyncgen_finalizer_hook);
        if (self->hook_fin == NULL) {
            Py_CLEAR(self->hook_first);
            return -1;
        }
    }
    if (!hooks_are_ours(self)) {
        if (!fa_app_is(self)) {
            hooks = PyObject_CallNoArgs(st->get_asyncgen_hooks);
            if (hooks == NULL) {
                return -1;
            }
        }
        r = PyObject_CallFunctionObjArgs(st->set_asyncgen_hooks, self->hook_first,
                                         self->hook_fin, NULL);
        if (r == NULL) {
            Py_XDECREF(hooks);
            return -1;
        }
        Py_DECREF(r);
    }
    r = PyObject_CallOneArg(st->set_running_loop, (PyObject *)self);
    if (r == NULL) {
        if (hooks != NULL) {
            PyObject *undo = PyObject_Call(st->set_asyncgen_hooks, hooks, NULL);
            Py_XDECREF(undo);
            Py_DECREF(hooks);
        }
        return -1;
    }
    Py_DECREF(r);
    Py_XSETREF(self->saved_hooks, hooks);
    self->thread_id = PyThread_get_thread_ident();
    return 0;
}

/* Undo fa_loop_enter.  Preserves a pending exception. */
void
fa_loop_leave(fa_loop *self)
{
    fa_state *st = self->st;
    PyObject *exc = fa_fetch_exception(), *r;
    uninstall_wakeup(self);
    self->stopping = 0;
    self->thread_id = 0;
    r = PyObject_CallOneArg(st->set_running_loop, Py_None);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(r);
    if (self->saved_hooks != NULL) {
        PyObject *hooks = self->saved_hooks;
        self->saved_hooks = NULL;
        r = PyObject_Call(st->set_asyncgen_hooks, hooks, NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
        Py_DECREF(hooks);
    }
    fa_restore_exception(exc);
}

/* Was this loop created before a fork() that led to this process?  Its
 * epoll set, eventfd and timerfd are shared with the parent then: using
 * them would change the parent's loop. */
int
fa_loop_check_closed(fa_loop *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    if (fa_loop_forked(self)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this event loop was created before os.fork() and cannot be "
                        "used in the child process; create a new loop in the child");
        return -1;
    }
    return 0;
}

static int
check_can_run(fa_loop *self)
{
    PyObject *running;
    if (fa_loop_check_closed(self) < 0) {
        return -1;
    }
    if (fa_app_is(self)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the flaskasync app loop is driven by flaskasync.run(); "
                        "use flaskasync.run(coro) or flaskasync.spawn(coro) instead "
                        "of running it directly");
        return -1;
    }
    if (self->thread_id != 0) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return -1;
    }
    running = PyObject_CallNoArgs(self->st->get_running_loop);
    if (running == NULL) {
        return -1;
    }
    if (running != Py_None) {
        Py_DECREF(running);
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot run the event loop while another loop is running");
        return -1;
    }
    Py_DECREF(running);
    return 0;
}

static PyObject *
loop_run_forever(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    int err = 0;
    if (check_can_run(self) < 0 || fa_loop_enter(self) < 0) {
        return NULL;
    }
    for (;;) {
        if (fa_loop_collect(self, 1) < 0 || fa_loop_run_ready(self) < 0) {
            err = 1;
            break;
        }
        if (self->stopping) {
            break;
        }
    }
    fa_loop_leave(self);
    if (err) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Done callback of run_until_complete's future: stop the loop unless the
 * future carries KeyboardInterrupt/SystemExit, which the loop propagates. */
static PyObject *
loop_ruc_done(PyObject *loop, PyObject *fut)
{
    fa_loop *self = (fa_loop *)loop;
    fa_state *st = self->st;
    PyObject *c = PyObject_CallMethodNoArgs(fut, st->s_cancelled);
    if (c == NULL) {
        return NULL;
    }
    int cancelled = PyObject_IsTrue(c);
    Py_DECREF(c);
    if (!cancelled) {
        PyObject *exc = PyObject_CallMethodNoArgs(fut, st->s_exception);
        if (exc == NULL) {
            return NULL;
        }
        int fatal = PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_KeyboardInterrupt) ||
                    PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_SystemExit);
        Py_DECREF(exc);
        if (fatal) {
            Py_RETURN_NONE;
        }
    }
    self->stopping = 1;
    Py_RETURN_NONE;
}

static PyMethodDef ruc_done_def = {"_run_until_complete_cb", loop_ruc_done, METH_O, NULL};

static PyObject *
loop_run_until_complete(fa_loop *self, PyObject *future)
{
    fa_state *st = self->st;
    PyObject *fut = NULL, *cb = NULL, *r = NULL, *res = NULL;
    int new_task;

    if (check_can_run(self) < 0) {
        return NULL;
    }
    if (PyCoro_CheckExact(future)) {
        new_task = 1;
        fut = fa_loop_create_task(self, future, NULL, NULL);
    }
    else {
        PyObject *blocking = PyObject_GetAttrString((PyObject *)Py_TYPE(future),
                                                    "_asyncio_future_blocking");
        new_task = blocking == NULL;
        Py_XDECREF(blocking);
        PyErr_Clear();
        PyObject *kwn = PyTuple_Pack(1, st->s_loop);
        PyObject *args2[2] = {future, (PyObject *)self};
        if (kwn == NULL) {
            return NULL;
        }
        fut = PyObject_Vectorcall(st->ensure_future, args2, 1, kwn);
        Py_DECREF(kwn);
    }
    if (fut == NULL) {
        return NULL;
    }
    if (new_task && PyObject_SetAttr(fut, st->s_log_destroy_pending, Py_False) < 0) {
        PyErr_Clear();
    }
    cb = PyCFunction_New(&ruc_done_def, (PyObject *)self);
    if (cb == NULL) {
        goto done;
    }
    r = PyObject_CallMethodOneArg(fut, st->s_add_done_callback, cb);
    if (r == NULL) {
        goto done;
    }
    Py_CLEAR(r);
    r = loop_run_forever(self, NULL);
    if (r == NULL) {
        /* As asyncio: don't log "exception was never retrieved" for a task
         * we created, then re-raise. */
        PyObject *exc = fa_fetch_exception();
        if (new_task) {
            PyObject *d = PyObject_CallMethodNoArgs(fut, st->s_done);
            if (d != NULL && PyObject_IsTrue(d)) {
                PyObject *c = PyObject_CallMethodNoArgs(fut, st->s_cancelled);
                if (c != NULL && !PyObject_IsTrue(c)) {
                    PyObject *e = PyObject_CallMethodNoArgs(fut, st->s_exception);
                    Py_XDECREF(e);
                }
                Py_XDECREF(c);
            }
            Py_XDECREF(d);
            PyErr_Clear();
        }
        PyObject *rm = PyObject_CallMethodOneArg(fut, st->s_remove_done_callback, cb);
        Py_XDECREF(rm);
        PyErr_Clear();
        fa_restore_exception(exc);
        goto done;
    }
    Py_CLEAR(r);
    r = PyObject_CallMethodOneArg(fut, st->s_remove_done_callback, cb);
    if (r == NULL) {
        goto done;
    }
    Py_CLEAR(r);
    r = PyObject_CallMethodNoArgs(fut, st->s_done);
    if (r == NULL) {
        goto done;
    }
    if (!PyObject_IsTrue(r)) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop stopped before Future completed.");
        goto done;
    }
    res = PyObject_CallMethodNoArgs(fut, st->s_result);
done:
    Py_XDECREF(r);
    Py_XDECREF(cb);
    Py_XDECREF(fut);
    return res;
}

static PyObject *
loop_stop(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    self->stopping = 1;
    Py_RETURN_NONE;
}

static PyObject *
loop_is_running(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->thread_id != 0);
}

static PyObject *
loop_is_closed(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_time(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(fa_now());
}

/* ---------------------------------------------------------- scheduling */

static int
check_callback(fa_loop *self, PyObject *cb, const char *method)
{
    if (!PyCallable_Check(cb)) {
        int iscoro = PyCoro_CheckExact(cb);
        if (!iscoro) {
            PyObject *r = PyObject_CallOneArg(self->st->iscoroutine, cb);
            if (r == NULL) {
                return -1;
            }
            iscoro = PyObject_IsTrue(r);
            Py_DECREF(r);
        }
        if (iscoro) {
            PyErr_Format(PyExc_TypeError, "coroutines cannot be used with %s()", method);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "a callable object was expected by %s(), got %R", method, cb);
        }
        return -1;
    }
    if (self->debug) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_check_callback", "Os", cb, method);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static int
check_thread(fa_loop *self)
{
    if (self->debug && self->thread_id != 0 &&
        self->thread_id != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop other "
                        "than the current one");
        return -1;
    }
    return 0;
}

fa_handle *
fa_loop_call_soon(fa_loop *self, PyObject *callback, PyObject *args, PyObject *context)
{
    fa_handle *h = fa_handle_new_oneshot(self, self->st->HandleType, callback, args, context);
    if (h == NULL) {
        return NULL;
    }
    if (fa_loop_push_ready(self, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    fa_app_wake(self);
    return h;
}

/* Whether the keyword name k (always a str in kwnames) is "context".
 * Compared as bytes: PyUnicode_CompareWithASCIIString cost about 80
 * instructions on every Task step and done callback, which all pass it. */
static inline int
is_context_keyword(PyObject *k)
{
    return PyUnicode_IS_ASCII(k) && PyUnicode_GET_LENGTH(k) == 7 &&
           memcmp(PyUnicode_DATA(k), "context", 7) == 0;
}

/* Parse (callback, *args, context=None) from a vectorcall. */
static int
parse_cb_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              Py_ssize_t skip, const char *method, PyObject **cb, PyObject **cbargs,
              PyObject **context)
{
    *context = NULL;
    if (kwnames != NULL) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (is_context_keyword(k)) {
                *context = args[nargs + i];
            }
            else {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             method, k);
                return -1;
            }
        }
    }
    if (nargs < skip + 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'callback'", method);
        return -1;
    }
    if (*context == Py_None) {
        *context = NULL;
    }
    if (*context != NULL && !PyContext_CheckExact(*context)) {
        PyErr_Format(PyExc_TypeError, "%s(): context must be a contextvars.Context, got %R",
                     method, *context);
        return -1;
    }
    *cb = args[skip];
    *cbargs = NULL;
    if (nargs > skip + 1) {
        Py_ssize_t n = nargs - skip - 1;
        *cbargs = PyTuple_New(n);
        if (*cbargs == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTuple_SET_ITEM(*cbargs, i, Py_NewRef(args[skip + 1 + i]));
        }
    }
    return 0;
}

static PyObject *
loop_call_soon(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *cb, *cbargs, *context;
    fa_handle *h;
    if (parse_cb_args(args, nargs, kwnames, 0, "call_soon", &cb, &cbargs, &context) < 0) {
        return NULL;
    }
    if (fa_loop_check_closed(self) < 0 || check_thread(self) < 0 ||
        check_callback(self, cb, "call_soon") < 0) {
        Py_XDECREF(cbargs);
        return NULL;
    }
    h = fa_loop_call_soon(self, cb, cbargs, context);
    Py_XDECREF(cbargs);
    return (PyObject *)h;
}

static PyObject *
loop_call_soon_threadsafe(fa_loop *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    PyObject *cb, *cbargs, *context;
    fa_handle *h;
    if (parse_cb_args(args, nargs, kwnames, 0, "call_soon_threadsafe", &cb, &cbargs,
                      &context) < 0) {
        return NULL;
    }
    if (fa_loop_check_closed(self) < 0 ||
        check_callback(self, cb, "call_soon_threadsafe") < 0) {
        Py_XDECREF(cbargs);
        return NULL;
    }
    /* The GIL serialises this append with the thread running the loop;
     * the async handle wakes that thread if it is blocked in its poll. */
    h = fa_handle_new_oneshot(self, self->st->HandleType, cb, cbargs, context);
    Py_XDECREF(cbargs);
    if (h == NULL) {
        return NULL;
    }
    if (fa_loop_push_ready(self, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    fa_loop_poke(self);
    return (PyObject *)h;
}

static PyObject *
call_at_impl(fa_loop *self, double when, PyObject *cb, PyObject *cbargs, PyObject *context,
             const char *method)
{
    fa_handle *h;
    if (isnan(when)) {
        PyErr_Format(PyExc_ValueError, "%s(): the deadline must not be NaN", method);
        return NULL;
    }
    if (fa_loop_check_closed(self) < 0 || check_thread(self) < 0 ||
        check_callback(self, cb, method) < 0) {
        return NULL;
    }
    h = fa_handle_new_oneshot(self, self->st->TimerHandleType, cb, cbargs, context);
    if (h == NULL) {
        return NULL;
    }
    h->is_timer = 1;
    h->when = when;
    h->seq = self->timer_seq++;
    if (heap_push(self, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    if (fa_app_idle(self)) {
        /* Nobody drives the app loop: reprogram the home thread's wake-up
         * (its timerfd) rather than poking it: it wakes when the timer is
         * due. */
        fa_loop_arm_timer(self);
    }
    return (PyObject *)h;
}

static int
as_time(PyObject *o, const char *method, const char *what, double *out)
{
    if (o == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must not be None", method, what);
        return -1;
    }
    *out = PyFloat_AsDouble(o);
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a number, got %R", method, what, o);
        return -1;
    }
    return 0;
}

static PyObject *
loop_call_later(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *cb, *cbargs, *context, *res;
    double delay;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_later() missing required argument 'delay'");
        return NULL;
    }
    if (as_time(args[0], "call_later", "delay", &delay) < 0) {
        return NULL;
    }
    if (parse_cb_args(args, nargs, kwnames, 1, "call_later", &cb, &cbargs, &context) < 0) {
        return NULL;
    }
    res = call_at_impl(self, fa_now() + delay, cb, cbargs, context, "call_later");
    Py_XDECREF(cbargs);
    return res;
}

static PyObject *
loop_call_at(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *cb, *cbargs, *context, *res;
    double when;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call_at() missing required argument 'when'");
        return NULL;
    }
    if (as_time(args[0], "call_at", "when", &when) < 0) {
        return NULL;
    }
    if (parse_cb_args(args, nargs, kwnames, 1, "call_at", &cb, &cbargs, &context) < 0) {
        return NULL;
    }
    res = call_at_impl(self, when, cb, cbargs, context, "call_at");
    Py_XDECREF(cbargs);
    return res;
}

/* ------------------------------------------------------ futures, tasks */

static PyObject *
loop_create_future(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args[1] = {(PyObject *)self};
    PyObject *kwn = PyTuple_Pack(1, self->st->s_loop);
    PyObject *res;
    if (kwn == NULL) {
        return NULL;
    }
    res = PyObject_Vectorcall(self->st->FutureType, args, 0, kwn);
    Py_DECREF(kwn);
    return res;
}

/* Task(coro, loop=self, name=name, context=context): what every version's
 * BaseEventLoop.create_task does when no task factory is set and no other
 * keyword is given.  The keyword-name tuples are made once, at import. */
static PyObject *
new_task(fa_loop *self, PyObject *coro, PyObject *name, PyObject *context)
{
    fa_state *st = self->st;
    PyObject *argv[4];
    Py_ssize_t nk = 0;
    argv[0] = coro;
    argv[1] = (PyObject *)self;
    if (name != NULL) {
        argv[2 + nk++] = name;
    }
    if (context != NULL) {
        argv[2 + nk++] = context;
    }
    PyObject *kwn = name != NULL ? (context != NULL ? st->kw_loop_name_context : st->kw_loop_name)
                                 : (context != NULL ? st->kw_loop_context : st->kw_loop);
    return PyObject_Vectorcall(st->TaskType, argv, 1, kwn);
}

/* Everything else (a task factory is set, or keywords other than name and
 * context, such as 3.14's eager_start) is the running interpreter's own
 * asyncio.BaseEventLoop.create_task, called on this loop: what it passes to
 * the factory and to Task, and how it names the task, changed in 3.13's
 * and 3.14's releases; following it is the only way to match each one.  It
 * reads self._check_closed() and self._task_factory, which CLoop provides.
 * args[0] and args[1] are self and the coroutine, then the keyword values. */
static PyObject *
create_task_by_asyncio(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t nkw,
                       PyObject *kwnames)
{
    return PyObject_Vectorcall(self->st->base_create_task, args, nargs, nkw > 0 ? kwnames : NULL);
}

/* The task for coro, not supervised: NULL or None leave a keyword out, as
 * asyncio's callers do. */
static PyObject *
make_task(fa_loop *self, PyObject *coro, PyObject *name, PyObject *context)
{
    fa_state *st = self->st;
    if (name == Py_None) {
        name = NULL;
    }
    if (context == Py_None) {
        context = NULL;
    }
    if (self->task_factory == NULL) {
        if (fa_loop_check_closed(self) < 0) {
            return NULL;
        }
        return new_task(self, coro, name, context);
    }
    PyObject *argv[4] = {(PyObject *)self, coro, NULL, NULL};
    Py_ssize_t nk = 0;
    if (name != NULL) {
        argv[2 + nk++] = name;
    }
    if (context != NULL) {
        argv[2 + nk++] = context;
    }
    PyObject *kwn = name != NULL ? (context != NULL ? st->kw_name_context : st->kw_name)
                                 : (context != NULL ? st->kw_context : NULL);
    return create_task_by_asyncio(self, argv, 2, nk, kwn);
}

/* A task is made; with supervision on (supervise.c), record it.  If that
 * fails the task is cancelled (it never ran) and the error raised. */
static PyObject *
supervised(fa_loop *self, PyObject *task, PyObject *context)
{
    if (task != NULL && self->sup_var != NULL && layer_hooks->supervise(self, task, context) < 0) {
        PyObject *exc = fa_fetch_exception();
        PyObject *r = PyObject_CallMethodNoArgs(task, self->st->s_cancel);
        Py_XDECREF(r);
        PyErr_Clear();
        fa_restore_exception(exc);
        Py_CLEAR(task);
    }
    return task;
}

/* loop.create_task(coro, name=name, context=context) for the C callers
 * (gather, run_until_complete). */
PyObject *
fa_loop_create_task(fa_loop *self, PyObject *coro, PyObject *name, PyObject *context)
{
    return supervised(self, make_task(self, coro, name, context), context);
}

/* The same for the runner's own task: its caller holds it, so it is not
 * supervised. */
PyObject *
fa_loop_create_own_task(fa_loop *self, PyObject *coro, PyObject *name, PyObject *context)
{
    return make_task(self, coro, name, context);
}

/* create_task(coro, **kwargs): the fast path in C when asyncio would call
 * Task(coro, loop=self, name=..., context=...) itself; else asyncio's own. */
static PyObject *
loop_create_task(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *name = NULL, *context = NULL;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    /* Anything but one positional coroutine (coro=..., none, too many) is
     * asyncio's to accept or refuse. */
    int plain = self->task_factory == NULL && nargs == 1;
    for (Py_ssize_t i = 0; i < nkw && plain; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "name") == 0) {
            name = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(k, "context") == 0) {
            context = args[nargs + i];
        }
        else {
            plain = 0;
        }
    }
    if (plain) {
        if (fa_loop_check_closed(self) < 0) {
            return NULL;
        }
        return supervised(self, new_task(self, args[0], name == Py_None ? NULL : name,
                                         context == Py_None ? NULL : context), context);
    }
    context = NULL;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "context") == 0) {
            context = args[nargs + i];
        }
    }
    /* self, the positional arguments, then the keyword values, as a
     * vectorcall wants them. */
    PyObject *small[8], **argv = small;
    if (1 + nargs + nkw > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        argv = PyMem_New(PyObject *, 1 + nargs + nkw);
        if (argv == NULL) {
            return PyErr_NoMemory();
        }
    }
    argv[0] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        argv[1 + i] = args[i];
    }
    PyObject *task = create_task_by_asyncio(self, argv, 1 + nargs, nkw, kwnames);
    if (argv != small) {
        PyMem_Free(argv);
    }
    return supervised(self, task, context);
}

static PyObject *
loop_set_task_factory(fa_loop *self, PyObject *factory)
{
    if (factory != Py_None && !PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "task factory must be a callable or None");
        return NULL;
    }
    Py_XSETREF(self->task_factory, factory == Py_None ? NULL : Py_NewRef(factory));
    Py_RETURN_NONE;
}

static PyObject *
loop_get_task_factory(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->task_factory ? self->task_factory : Py_None);
}

/* _task_factory: the attribute asyncio's BaseEventLoop code reads and sets
 * (create_task, set_task_factory, __init__), kept in the C field. */
static PyObject *
loop_get_task_factory_attr(fa_loop *self, void *Py_UNUSED(c))
{
    return loop_get_task_factory(self, NULL);
}

static int
loop_set_task_factory_attr(fa_loop *self, PyObject *value, void *Py_UNUSED(c))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _task_factory");
        return -1;
    }
    Py_XSETREF(self->task_factory, value == Py_None ? NULL : Py_NewRef(value));
    return 0;
}

/* _check_closed(): BaseEventLoop's, for its code that runs on this loop. */
static PyObject *
loop_check_closed_py(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (fa_loop_check_closed(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_get_debug(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

/* ------------------------------------------------------ life and death */

static void
on_internal_close(uv_handle_t *h)
{
    (void)h;
}

/* Free libuv resources.  In a forked child the epoll instance is shared
 * with the parent, so we must not touch it (removing registrations would
 * remove the parent's): only our own copy of the fds is closed. */
static void
loop_free_uv(fa_loop *self)
{
    if (!self->uv_ready) {
        return;
    }
    self->uv_ready = 0;
    if (fa_loop_forked(self)) {
        close(uv_backend_fd(&self->uv));
        fa_ioset_free(self); /* our copies of the fds only */
        if (self->timer_fd >= 0) {
            close(self->timer_fd);
        }
        self->timer_fd = -1;
        if (self->sig_rfd >= 0) {
            release_wakeup_fd(self);
            close(self->sig_rfd);
            close(self->sig_wfd);
            self->sig_rfd = self->sig_wfd = -1;
        }
        return;
    }
    if (self->sig_poll_ready) {
        uv_close((uv_handle_t *)&self->sig_poll, on_internal_close);
        self->sig_poll_ready = 0;
    }
    if (self->ioset_poll_ready) {
        uv_close((uv_handle_t *)&self->ioset_poll, on_internal_close);
        self->ioset_poll_ready = 0;
    }
    uv_close((uv_handle_t *)&self->wakeup, on_internal_close);
    uv_close((uv_handle_t *)&self->prepare, on_internal_close);
    uv_close((uv_handle_t *)&self->check, on_internal_close);
    uv_close((uv_handle_t *)&self->timer_poll, on_internal_close);
    uv_run(&self->uv, UV_RUN_DEFAULT);
    fa_ioset_free(self);
    if (uv_loop_close(&self->uv) != 0) {
        /* Some handle is still open (cannot happen unless a transport leaked
         * it); run once more to flush its close callback. */
        uv_run(&self->uv, UV_RUN_DEFAULT);
        (void)uv_loop_close(&self->uv);
    }
    if (self->timer_fd >= 0) {
        close(self->timer_fd);
        self->timer_fd = -1;
    }
    if (self->sig_rfd >= 0) {
        release_wakeup_fd(self);
        close(self->sig_rfd);
        close(self->sig_wfd);
        self->sig_rfd = self->sig_wfd = -1;
    }
}

static PyObject *
loop_close_c(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    if (self->thread_id != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot close a running event loop");
        return NULL;
    }
    if (self->closed) {
        Py_RETURN_NONE;
    }
    run_hooks(layer_hooks->closing, self);
    self->closed = 1;
    ready_clear(self);
    heap_clear(self);
    Py_CLEAR(self->last_ctx);
    run_hooks(layer_hooks->release, self);
    /* DNS lookups still queued are dropped; one already running in
     * libuv's threadpool cannot be: wait for it with the GIL released (the
     * prepare handle releases it when `blocking` is set), so other threads
     * keep running, as asyncio's close() does not block them either. */
    run_hooks(layer_hooks->cancel, self);
    if (self->uv_ready && !fa_loop_forked(self)) {
        while (self->requests != NULL) {
            self->blocking = 1;
            uv_run(&self->uv, UV_RUN_ONCE);
            self->blocking = 0;
            fa_loop_gil_ensure(self);
        }
    }
    /* Flush the watchers' close callbacks before the uv loop goes. */
    if (self->uv_ready && !fa_loop_forked(self)) {
        while (self->n_closing > 0) {
            uv_run(&self->uv, UV_RUN_NOWAIT);
        }
    }
    loop_free_uv(self);
    Py_RETURN_NONE;
}

static PyObject *
loop_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    fa_loop *self;
    PyObject *module;
    int r;

    module = fa_module_of_type(type);   /* type may be a Python subclass */
    if (module == NULL) {
        return NULL;
    }
    self = (fa_loop *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->module = Py_NewRef(module);
    self->st = fa_get_state(module);
    self->timer_fd = -1;
    self->sig_rfd = self->sig_wfd = -1;
    self->ioset_fd = self->sweep_fd = -1;
    self->sweep_interval = 1.0;
    self->armed_when = -1.0;
    self->fork_gen = fa_fork_gen();
    self->watchers = PyDict_New();
    if (self->watchers == NULL) {
        goto error;
    }
    r = uv_loop_init(&self->uv);
    if (r < 0) {
        fa_set_uv_error(r, "uv_loop_init");
        goto error;
    }
    self->uv.data = self;
    if ((r = uv_async_init(&self->uv, &self->wakeup, on_wakeup)) < 0) {
        fa_set_uv_error(r, "uv_async_init");
        goto fail_loop;
    }
    self->wakeup.data = self;
    uv_prepare_init(&self->uv, &self->prepare);
    self->prepare.data = self;
    uv_prepare_start(&self->prepare, on_prepare);
    uv_unref((uv_handle_t *)&self->prepare);
    uv_check_init(&self->uv, &self->check);
    self->check.data = self;
    uv_check_start(&self->check, on_check);
    uv_unref((uv_handle_t *)&self->check);
    self->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (self->timer_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail_handles;
    }
    if ((r = uv_poll_init(&self->uv, &self->timer_poll, self->timer_fd)) < 0) {
        fa_set_uv_error(r, "uv_poll_init");
        close(self->timer_fd);
        self->timer_fd = -1;
        goto fail_handles;
    }
    self->timer_poll.data = self;
    uv_poll_start(&self->timer_poll, UV_READABLE, on_timer_fd);
    uv_unref((uv_handle_t *)&self->timer_poll);
    self->uv_ready = 1;
    if (fa_ioset_init(self) < 0) {
        goto fail_ioset;
    }
    /* libuv adds fds to its epoll set lazily, on the next uv_run: do it now
     * so the home thread's poll on the backend fd sees the timerfd and the
     * wake-up eventfd from the start. */
    uv_run(&self->uv, UV_RUN_NOWAIT);
    return (PyObject *)self;

fail_ioset:
    self->uv_ready = 0;
    uv_close((uv_handle_t *)&self->timer_poll, NULL);
    close(self->timer_fd);
    self->timer_fd = -1;
fail_handles:
    uv_close((uv_handle_t *)&self->wakeup, NULL);
    uv_close((uv_handle_t *)&self->prepare, NULL);
    uv_close((uv_handle_t *)&self->check, NULL);
    uv_run(&self->uv, UV_RUN_DEFAULT);
fail_loop:
    uv_loop_close(&self->uv);
error:
    Py_DECREF(self);
    return NULL;
}

static int
loop_traverse(fa_loop *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->watchers);
    Py_VISIT(self->task_factory);
    Py_VISIT(self->last_ctx);
    Py_VISIT(self->sup_var);
    Py_VISIT(self->sup_hook);
    Py_VISIT(self->saved_hooks);
    Py_VISIT(self->hook_first);
    Py_VISIT(self->hook_fin);
    Py_VISIT((PyObject *)self->failed);
    for (Py_ssize_t i = 0; i < self->ready_len; i++) {
        Py_VISIT((PyObject *)self->ready[(self->ready_head + i) & (self->ready_cap - 1)]);
    }
    for (Py_ssize_t i = 0; i < self->heap_len; i++) {
        Py_VISIT((PyObject *)self->heap[i]);
    }
    return 0;
}

static int
loop_clear(fa_loop *self)
{
    ready_clear(self);
    heap_clear(self);
    Py_CLEAR(self->task_factory);
    Py_CLEAR(self->last_ctx);
    Py_CLEAR(self->sup_var);
    Py_CLEAR(self->sup_hook);
    Py_CLEAR(self->saved_hooks);
    Py_CLEAR(self->hook_first);
    Py_CLEAR(self->hook_fin);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->wakeup_old);
    /* watchers and module stay until dealloc: the uv handles need them. */
    return 0;
}

static void
loop_finalize(fa_loop *self)
{
    PyObject *exc, *r;
    if (self->closed || self->thread_id != 0) {
        return;
    }
    exc = fa_fetch_exception();
    if (!fa_loop_forked(self)) {
        if (PyErr_ResourceWarning((PyObject *)self, 1, "unclosed event loop %R", self) < 0) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        r = PyObject_CallMethod((PyObject *)self, "close", NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
    }
    fa_restore_exception(exc);
}

static void
loop_dealloc(fa_loop *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    run_hooks(layer_hooks->closing, self);
    (void)loop_clear(self);
    if (!self->closed && fa_loop_forked(self)) {
        /* Forked child: the uv loop and its epoll set belong to the parent;
         * drop the Python side only. */
        self->closed = 1;
        PyDict_Clear(self->watchers);
    }
    if (!self->closed) {
        self->closed = 1;
        run_hooks(layer_hooks->release, self);
        if (self->uv_ready && !fa_loop_forked(self)) {
            while (self->n_closing > 0) {
                uv_run(&self->uv, UV_RUN_NOWAIT);
            }
        }
    }
    loop_free_uv(self);
    PyMem_Free(self->ready);
    PyMem_Free(self->heap);
    PyMem_Free(self->recv_buf); /* transport.c's receive buffer */
    Py_CLEAR(self->watchers);
    Py_CLEAR(self->module);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
loop_get_closed(fa_loop *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_get_thread_id(fa_loop *self, void *Py_UNUSED(c))
{
    if (self->thread_id == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLong(self->thread_id);
}

static PyObject *
loop_get_stopping(fa_loop *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->stopping);
}

static PyObject *
loop_get_ready_count(fa_loop *self, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(self->ready_len);
}

static PyObject *
loop_get_timer_count(fa_loop *self, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(self->heap_len);
}

static PyObject *
loop_get_debug_attr(fa_loop *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->debug);
}

static int
loop_set_debug_attr(fa_loop *self, PyObject *value, void *Py_UNUSED(c))
{
    int v;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _debug");
        return -1;
    }
    v = PyObject_IsTrue(value);
    if (v < 0) {
        return -1;
    }
    self->debug = v;
    return 0;
}

static PyObject *
loop_get_current_handle(fa_loop *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->current != NULL ? (PyObject *)self->current : Py_None);
}

/* _fd_check_interval: seconds between the checks that find a watched fd
 * closed behind the loop's back (ioset.c); 0 turns them off. */
static PyObject *
loop_get_fd_check_interval(fa_loop *self, void *Py_UNUSED(c))
{
    return PyFloat_FromDouble(self->sweep_interval);
}

static int
loop_set_fd_check_interval(fa_loop *self, PyObject *value, void *Py_UNUSED(c))
{
    double v;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _fd_check_interval");
        return -1;
    }
    v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(v >= 0.0) || !isfinite(v)) {
        PyErr_SetString(PyExc_ValueError, "_fd_check_interval must be a finite number >= 0");
        return -1;
    }
    return fa_ioset_set_interval(self, v);
}

/* The finalizer as a method: flaskasync.Loop inherits asyncio's
 * BaseEventLoop, whose __del__ would otherwise replace it. */
static PyObject *
loop_del_method(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    loop_finalize(self);
    Py_RETURN_NONE;
}

static PyGetSetDef loop_getset[] = {
    {"_debug", (getter)loop_get_debug_attr, (setter)loop_set_debug_attr,
     "The debug mode flag (asyncio's BaseEventLoop attribute).", NULL},
    {"_current_handle", (getter)loop_get_current_handle, NULL,
     "The Handle whose callback is running, or None.", NULL},
    {"_closed", (getter)loop_get_closed, NULL, NULL, NULL},
    {"_thread_id", (getter)loop_get_thread_id, NULL, NULL, NULL},
    {"_stopping", (getter)loop_get_stopping, NULL, NULL, NULL},
    {"_ready_count", (getter)loop_get_ready_count, NULL,
     "Number of callbacks waiting in the ready queue.", NULL},
    {"_timer_count", (getter)loop_get_timer_count, NULL,
     "Number of scheduled timers.", NULL},
    {"_task_factory", (getter)loop_get_task_factory_attr, (setter)loop_set_task_factory_attr,
     "The task factory (None for asyncio.Task), as BaseEventLoop keeps it.", NULL},
    {"_fd_check_interval", (getter)loop_get_fd_check_interval,
     (setter)loop_set_fd_check_interval,
     "Seconds between the checks for watched fds closed behind the loop's back "
     "(default 1.0; 0: never).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
loop_watched_fds(fa_loop *self, PyObject *Py_UNUSED(ignored))
{
    return fa_ioset_watched(self);
}

/* The loop's own methods; module.c adds those of the concepts above it
 * (fa_loop_type_new). */
PyMethodDef fa_loop_methods[] = {
    {"_watched_fds", (PyCFunction)loop_watched_fds, METH_NOARGS,
     "The fds the loop watches for user code now (add_reader & co., sock_*, "
     "transports), sorted."},
    {"time", (PyCFunction)loop_time, METH_NOARGS,
     "Return the loop's time: time.monotonic()'s clock, in seconds."},
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None) -> Handle\n\n"
     "Run callback(*args) on the next iteration, after earlier callbacks."},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))loop_call_soon_threadsafe,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe(callback, *args, context=None) -> Handle\n\n"
     "Like call_soon(), callable from any thread; wakes the loop."},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later, METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None) -> TimerHandle\n\n"
     "Run callback(*args) after delay seconds (never earlier)."},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, METH_FASTCALL | METH_KEYWORDS,
     "call_at(when, callback, *args, context=None) -> TimerHandle\n\n"
     "Run callback(*args) once loop.time() >= when."},
    {"run_forever", (PyCFunction)loop_run_forever, METH_NOARGS,
     "Run the loop until stop() is called."},
    {"run_until_complete", (PyCFunction)loop_run_until_complete, METH_O,
     "Run until the future (or coroutine, wrapped in a Task) is done; return its result."},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS,
     "Stop the loop after the callbacks of the current iteration have run."},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS,
     "Return True if the loop is running."},
    {"is_closed", (PyCFunction)loop_is_closed, METH_NOARGS,
     "Return True if the loop was closed."},
    {"_close", (PyCFunction)loop_close_c, METH_NOARGS,
     "Close the C part of the loop (libuv handles, queues)."},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     "Return a new asyncio.Future attached to this loop."},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task, METH_FASTCALL | METH_KEYWORDS,
     "create_task(coro, **kwargs) -> asyncio.Task\n\n"
     "Schedule a coroutine (or start it, with eager_start): with no task factory\n"
     "and only name/context, asyncio.Task(coro, loop=self, ...); otherwise what\n"
     "this Python's asyncio.BaseEventLoop.create_task does."},
    {"_check_closed", (PyCFunction)loop_check_closed_py, METH_NOARGS,
     "Raise RuntimeError if the loop is closed (as BaseEventLoop._check_closed)."},
    {"set_task_factory", (PyCFunction)loop_set_task_factory, METH_O,
     "Set the factory create_task() uses: factory(loop, coro[, context=ctx]) or None."},
    {"get_task_factory", (PyCFunction)loop_get_task_factory, METH_NOARGS,
     "Return the task factory, or None."},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS, "Return the debug mode flag."},
    {"__del__", (PyCFunction)loop_del_method, METH_NOARGS,
     "Finalizer: warn about an unclosed loop and close it."},
    {"_signal_fd", (PyCFunction)loop_signal_fd, METH_NOARGS,
     "Write end of the loop's signal pipe (for signal.set_wakeup_fd)."},
    {"_set_signal_dispatch", (PyCFunction)loop_set_signal_dispatch, METH_O,
     "Turn dispatching of loop signal handlers on or off."},
    {NULL, NULL, 0, NULL},
};

/* The loop type of module, with methods as its method table: fa_loop_methods
 * and the other concepts' loop methods, assembled by module.c (loop.c
 * cannot name them: they are above it).  methods must outlive the type and
 * every method descriptor made from it. */
PyTypeObject *
fa_loop_type_new(PyObject *module, PyMethodDef *methods)
{
    PyType_Slot slots[] = {
        {Py_tp_doc, "The C core of flaskasync.Loop (use flaskasync.Loop or new_event_loop())."},
        {Py_tp_new, loop_new},
        {Py_tp_dealloc, loop_dealloc},
        {Py_tp_finalize, loop_finalize},
        {Py_tp_traverse, loop_traverse},
        {Py_tp_clear, loop_clear},
        {Py_tp_methods, methods},
        {Py_tp_getset, loop_getset},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = "flaskasync._core.CLoop",
        .basicsize = sizeof(fa_loop),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
        .slots = slots,
    };
    return (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
}
