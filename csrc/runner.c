/* flaskasync.run(): run a coroutine on the process's app loop from
 * synchronous code in any thread.
 *
 * The baton: whoever holds it runs the app loop's callbacks.  A caller that
 * finds it free takes it and drives the loop inline in its own thread (no
 * thread switch), until its task is done or nothing is runnable.  It never
 * blocks while holding the baton: when its task waits for a timer or I/O it
 * hands the loop back and sleeps on its job's semaphore with the GIL
 * released.  The baton is therefore free whenever nobody is executing
 * callbacks, and the next request can drive inline too.
 *
 * The home thread services the loop when nobody drives it: it sleeps in
 * poll() on libuv's backend fd (epoll), without the baton and without the
 * GIL.  Timers reach it through the loop's timerfd, which is in that epoll
 * set, and ready callbacks left behind by a driver through the wake-up
 * async handle.  When it wakes it takes the baton (if a driver has it, it
 * waits for that driver to leave) and runs the loop without blocking.
 *
 * Ordering (all atomics seq_cst): the home thread stores home_missed = 1
 * and then tries the baton; a driver stores baton = 0 and then exchanges
 * home_missed.  Either the home thread gets the baton or the driver sees
 * home_missed and posts home_sem, so no wake-up is lost.
 *
 * Who holds the GIL when, the baton's and the home thread's part
 * included, is written once, in loop.c ("GIL handling").
 *
 * The runner's state in a loop (fa_runner, runner.h) is written only
 * here; the loop calls in once, when it closes (fa_runner_loop_closing). */
#include "runner.h"
#include "handle.h"
#include "loop.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <poll.h>

typedef struct fa_job {
    PyObject_HEAD
    fa_loop *loop;
    PyObject *coro;
    PyObject *ctx;
    PyObject *name;         /* run(name=): the task's name, or NULL */
    PyObject *task;
    PyObject *timeout_handle;
    PyObject *error;        /* exception raised while starting the task */
    double timeout;
    int has_timeout;
    int timed_out;
    int abandoned;          /* the caller left (KeyboardInterrupt) before start */
    int copy_back;          /* ctx is a copy of the caller's: copy changes back */
    PyObject *scope;        /* the task scope set in ctx (the Flask fast path), closed
                             * with scope_finish when the task is done, or NULL */
    fa_scope_finish_fn scope_finish;
    PyObject *ctx_vars;     /* ctx's variable mapping when the task was made, to skip
                             * copying back when the task set nothing; or NULL */
    atomic_int posted;
    sem_t sem;
    /* Jobs whose caller waits, linked from the loop (GIL-protected), so
     * that closing the loop can fail them instead of leaving them hanging. */
    struct fa_job *prev, *next;
    int linked;
} fa_job;

static void job_unlink(fa_job *j);

/* ------------------------------------------------------------ the job */

static int
job_traverse(fa_job *j, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(j));
    Py_VISIT((PyObject *)j->loop);
    Py_VISIT(j->coro);
    Py_VISIT(j->ctx);
    Py_VISIT(j->name);
    Py_VISIT(j->task);
    Py_VISIT(j->timeout_handle);
    Py_VISIT(j->error);
    Py_VISIT(j->scope);
    Py_VISIT(j->ctx_vars);
    return 0;
}

static int
job_clear(fa_job *j)
{
    Py_CLEAR(j->loop);
    Py_CLEAR(j->coro);
    Py_CLEAR(j->ctx);
    Py_CLEAR(j->name);
    Py_CLEAR(j->task);
    Py_CLEAR(j->timeout_handle);
    Py_CLEAR(j->error);
    Py_CLEAR(j->scope);
    Py_CLEAR(j->ctx_vars);
    return 0;
}

static void
job_dealloc(fa_job *j)
{
    PyTypeObject *tp = Py_TYPE(j);
    PyObject_GC_UnTrack(j);
    if (j->loop != NULL) {
        job_unlink(j);
    }
    job_clear(j);
    sem_destroy(&j->sem);
    tp->tp_free(j);
    Py_DECREF(tp);
}

static PyType_Slot job_slots[] = {
    {Py_tp_dealloc, job_dealloc},
    {Py_tp_traverse, job_traverse},
    {Py_tp_clear, job_clear},
    {0, NULL},
};

PyType_Spec fa_waiter_spec = {
    .name = "flaskasync._core._Job",
    .basicsize = sizeof(fa_job),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = job_slots,
};

static void
job_post(fa_job *j)
{
    if (atomic_exchange(&j->posted, 1) == 0) {
        sem_post(&j->sem);
    }
}

static void
job_link(fa_job *j)
{
    fa_loop *L = j->loop;
    FA_ASSERT(!j->linked);
    j->prev = NULL;
    j->next = L->runner.jobs;
    if (j->next != NULL) {
        j->next->prev = j;
    }
    L->runner.jobs = j;
    j->linked = 1;
}

static void
job_unlink(fa_job *j)
{
    if (!j->linked) {
        return;
    }
    if (j->prev != NULL) {
        j->prev->next = j->next;
    }
    else {
        j->loop->runner.jobs = j->next;
    }
    if (j->next != NULL) {
        j->next->prev = j->prev;
    }
    j->prev = j->next = NULL;
    j->linked = 0;
}

/* The loop is closing: every caller still waiting gets a RuntimeError
 * instead of waiting forever for a task that will never run again. */
static void
jobs_fail_all(fa_loop *L)
{
    while (L->runner.jobs != NULL) {
        fa_job *j = L->runner.jobs;
        job_unlink(j);
        if (j->error == NULL && atomic_load(&j->posted) == 0) {
            j->error = PyObject_CallFunction(
                PyExc_RuntimeError, "s",
                "the flaskasync app loop was closed while this coroutine was running");
            if (j->error == NULL) {
                PyErr_Clear();
            }
        }
        job_post(j);
    }
}

static PyObject *
job_on_timeout(PyObject *self, PyObject *Py_UNUSED(arg))
{
    fa_job *j = (fa_job *)self;
    PyObject *r;
    if (j->task == NULL) {
        Py_RETURN_NONE;
    }
    r = PyObject_CallMethodNoArgs(j->task, j->loop->st->s_done);
    if (r == NULL) {
        return NULL;
    }
    if (r == Py_False) {
        j->timed_out = 1;
        Py_DECREF(r);
        r = PyObject_CallMethodNoArgs(j->task, j->loop->st->s_cancel);
        if (r == NULL) {
            return NULL;
        }
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static void
job_cancel_timeout(fa_job *j)
{
    if (j->timeout_handle != NULL) {
        PyObject *h = j->timeout_handle;
        j->timeout_handle = NULL;
        PyObject *r = PyObject_CallMethodNoArgs(h, j->loop->st->s_cancel);
        if (r == NULL) {
            PyErr_WriteUnraisable(h);
        }
        Py_XDECREF(r);
        Py_DECREF(h);
    }
}

/* The task is done (on the loop): close its scope. */
static void
job_close_scope(fa_job *j)
{
    PyObject *scope = j->scope;
    if (scope != NULL) {
        j->scope = NULL;
        j->scope_finish(scope, j->loop->st);
        Py_DECREF(scope);
    }
}

static PyObject *
job_on_done(PyObject *self, PyObject *Py_UNUSED(fut))
{
    fa_job *j = (fa_job *)self;
    job_cancel_timeout(j);
    job_close_scope(j);
    job_post(j);
    Py_RETURN_NONE;
}

static PyMethodDef job_timeout_def = {"_flaskasync_timeout", job_on_timeout, METH_NOARGS, NULL};
static PyMethodDef job_done_def = {"_flaskasync_done", job_on_done, METH_O, NULL};

static int
job_add_done_callback(fa_job *j)
{
    PyObject *cb = PyCFunction_New(&job_done_def, (PyObject *)j);
    PyObject *r;
    if (cb == NULL) {
        return -1;
    }
    r = PyObject_CallMethodOneArg(j->task, j->loop->st->s_add_done_callback, cb);
    Py_DECREF(cb);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Create the task on the loop (called by the thread driving the loop). */
static int
job_start_task(fa_job *j)
{
    fa_loop *loop = j->loop;
    PyObject *name = Py_XNewRef(j->name);
    if (name == NULL) {
        /* Without run(name=), name the task after the coroutine ("notify",
         * "Index.get"): more useful in logs than "Task-N", and it spares
         * 3.11's eager name formatting. */
        name = PyObject_GetAttr(j->coro, loop->st->s_qualname);
        if (name == NULL || !PyUnicode_Check(name)) {
            PyErr_Clear();
            Py_CLEAR(name);
        }
    }
    j->task = fa_loop_create_own_task(loop, j->coro, name, j->ctx);
    Py_XDECREF(name);
    if (j->task == NULL) {
        return -1;
    }
    Py_CLEAR(j->coro);
    if (j->has_timeout) {
        PyObject *cb = PyCFunction_New(&job_timeout_def, (PyObject *)j);
        if (cb == NULL) {
            return -1;
        }
        PyObject *delay = PyFloat_FromDouble(j->timeout);
        if (delay == NULL) {
            Py_DECREF(cb);
            return -1;
        }
        j->timeout_handle = PyObject_CallMethod((PyObject *)loop, "call_later", "OO", delay, cb);
        Py_DECREF(delay);
        Py_DECREF(cb);
        if (j->timeout_handle == NULL) {
            return -1;
        }
    }
    return 0;
}

/* Start callback for a job submitted by a thread that found the baton taken. */
static PyObject *
job_start_cb(PyObject *self, PyObject *Py_UNUSED(arg))
{
    fa_job *j = (fa_job *)self;
    if (j->abandoned) {
        PyObject *r = PyObject_CallMethod(j->coro, "close", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        Py_CLEAR(j->coro);
        Py_RETURN_NONE;
    }
    if (job_start_task(j) < 0 || job_add_done_callback(j) < 0) {
        /* Even KeyboardInterrupt/SystemExit goes to the waiting caller: it
         * is that caller's exception, not the driving thread's. */
        j->error = fa_fetch_exception();
        job_post(j);
    }
    Py_RETURN_NONE;
}

static PyMethodDef job_start_def = {"_flaskasync_start", job_start_cb, METH_NOARGS, NULL};

/* ------------------------------------------------------------- baton */

static inline int
baton_try(fa_loop *L)
{
    int expected = 0;
    return atomic_compare_exchange_strong(&L->runner.baton, &expected, 1);
}

/* Give the loop back.  Called with the GIL held by the thread that has the
 * baton, after fa_loop_leave. */
static void
baton_release(fa_loop *L)
{
    FA_ASSERT(atomic_load(&L->runner.baton) == 1);
    PyObject *exc = fa_fetch_exception();
    int pending = L->ready_len > 0 || L->n_closing > 0 ||
                  (L->heap_len > 0 && L->heap[0]->when <= fa_now());
    if (L->io_dirty && L->uv_ready) {
        L->io_dirty = 0;
        /* Register changed fd watchers with epoll before the home thread
         * polls it (libuv does that inside uv_run). */
        uv_run(&L->uv, UV_RUN_NOWAIT);
        pending |= L->ready_len > 0;
    }
    fa_loop_arm_timer(L);
    atomic_store(&L->runner.baton, 0);
    if (pending) {
        fa_loop_poke(L);
    }
    if (atomic_exchange(&L->runner.home_missed, 0)) {
        sem_post(&L->runner.home_sem);
    }
    fa_restore_exception(exc);
}

/* Run everything runnable now without blocking.  Errors other than
 * KeyboardInterrupt/SystemExit were already routed to the exception
 * handler; those two are logged here because no caller can receive them. */
static void
home_drive(fa_loop *L)
{
    if (fa_loop_enter(L) < 0) {
        PyErr_WriteUnraisable((PyObject *)L);
        return;
    }
    if (L->uv_ready) {
        /* Drain the wake-up eventfd and the timerfd. */
        uv_run(&L->uv, UV_RUN_NOWAIT);
    }
    for (;;) {
        if (atomic_load(&L->runner.home_stop)) {
            break;
        }
        if (fa_loop_collect(L, 0) < 0) {
            PyErr_WriteUnraisable((PyObject *)L);
        }
        if (L->ready_len == 0) {
            break;
        }
        if (fa_loop_run_ready(L) < 0 && !fa_loop_failure_is_task_outcome(L)) {
            /* A plain callback raised KeyboardInterrupt/SystemExit on the
             * home thread: no caller can receive it, so log it. */
            PyErr_WriteUnraisable((PyObject *)L);
        }
    }
    fa_loop_leave(L);
}

static void *
home_main(void *arg)
{
    fa_loop *L = (fa_loop *)arg;
    PyGILState_STATE gs = PyGILState_Ensure();
    PyThreadState *ts = PyEval_SaveThread();
    struct pollfd pfd;

    pfd.fd = uv_backend_fd(&L->uv);
    pfd.events = POLLIN;
    while (!atomic_load(&L->runner.home_stop)) {
        int r = poll(&pfd, 1, -1);
        if (r < 0 && errno != EINTR) {
            break;
        }
        if (atomic_load(&L->runner.home_stop)) {
            break;
        }
        atomic_store(&L->runner.home_missed, 1);
        if (!baton_try(L)) {
            /* A driver is running the loop; it posts when it leaves. */
            while (sem_wait(&L->runner.home_sem) < 0 && errno == EINTR) {
            }
            continue;
        }
        atomic_store(&L->runner.home_missed, 0);
        PyEval_RestoreThread(ts);
        if (!atomic_load(&L->runner.home_stop)) {
            home_drive(L);
        }
        baton_release(L);
        ts = PyEval_SaveThread();
    }
    PyEval_RestoreThread(ts);
    PyGILState_Release(gs);
    return NULL;
}

static int
home_start(fa_loop *L)
{
    pthread_attr_t attr;
    int r;
    FA_ASSERT(L->runner.is_app && !L->runner.home_started);
    if (sem_init(&L->runner.home_sem, 0, 0) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* Request coroutines resume on this thread after their first real
     * await, so it gets the default stack size (as the WSGI threads do). */
    pthread_attr_init(&attr);
    r = pthread_create(&L->runner.home_thread, &attr, home_main, L);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        sem_destroy(&L->runner.home_sem);
        errno = r;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    L->runner.home_started = 1;
    return 0;
}

/* Stop and join the home thread.  Called with the GIL held; releases it
 * while joining because the home thread may be waiting for it. */
static void
home_stop(fa_loop *L)
{
    if (!L->runner.home_started) {
        return;
    }
    L->runner.home_started = 0;
    if (fa_loop_forked(L)) {
        return; /* forked child: the thread does not exist here */
    }
    atomic_store(&L->runner.home_stop, 1);
    fa_loop_poke(L);
    sem_post(&L->runner.home_sem);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(L->runner.home_thread, NULL);
    Py_END_ALLOW_THREADS
    sem_destroy(&L->runner.home_sem);
}

/* ------------------------------------------------- the loop's close hook */

/* The one call the loop makes into the runner: L is closing (close(), or
 * its deallocation), before it is marked closed.  The home thread of an
 * app loop is stopped and joined (releasing the GIL meanwhile; a no-op in
 * a forked child, where the thread does not exist), then every caller
 * still waiting for a job on L gets a RuntimeError.  (At deallocation no
 * job can be waiting: a job holds a reference to its loop.) */
void
fa_runner_loop_closing(fa_loop *L)
{
    if (L->runner.is_app) {
        home_stop(L);
    }
    jobs_fail_all(L);
}

/* ----------------------------------------------- module shutdown and clear */

/* flaskasync._core._shutdown(), from the shim's atexit handler: stop the
 * app loop's home thread before the interpreter finalizes.  An idle app
 * loop is closed here; one still running a callback (thread_id set) only
 * loses its home thread, and the shim closes it after its grace period.
 * An adopted loop belongs to its server, which closes it.  0, or -1 with
 * an exception from close(). */
int
fa_runner_shutdown(fa_state *st)
{
    fa_loop *L = (fa_loop *)st->runner.app_loop;
    if (L == NULL || L->runner.adopted) {
        return 0;
    }
    if (!fa_loop_forked(L) && !L->closed && L->thread_id == 0) {
        PyObject *r = PyObject_CallMethod(st->runner.app_loop, "close", NULL);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    else if (!fa_loop_forked(L)) {
        home_stop(L);
    }
    return 0;
}

int
fa_runner_traverse(fa_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->runner.loop_class);
    Py_VISIT(st->runner.app_loop);
    Py_VISIT(st->runner.reenter);
    return 0;
}

/* The module is cleared: stop the app loop's home thread (its waiting
 * callers, if any, are daemon threads at this point and are left alone)
 * and drop the app loop. */
void
fa_runner_clear(fa_state *st)
{
    if (st->runner.app_loop != NULL) {
        fa_loop *L = (fa_loop *)st->runner.app_loop;
        if (!fa_loop_forked(L)) {
            home_stop(L);
        }
    }
    Py_CLEAR(st->runner.app_loop);
    Py_CLEAR(st->runner.reenter);
    Py_CLEAR(st->runner.loop_class);
}

/* ----------------------------------------------------------- app loop */

PyObject *
fa_app_loop(fa_state *st)
{
    unsigned long gen = fa_fork_gen();
    PyObject *cls, *loop;
    fa_loop *L;

    if (st->runner.app_loop != NULL) {
        L = (fa_loop *)st->runner.app_loop;
        if (st->runner.app_fork_gen == gen && !L->closed) {
            return st->runner.app_loop;
        }
        /* Forked child or closed: drop it.  A forked child's copy is
         * abandoned without touching the parent's epoll instance. */
        L->runner.adopted = 0;
        Py_CLEAR(st->runner.reenter);
        Py_CLEAR(st->runner.app_loop);
    }
    cls = st->runner.loop_class ? st->runner.loop_class : (PyObject *)st->LoopType;
    loop = PyObject_CallNoArgs(cls);
    if (loop == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(loop, st->LoopType)) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_TypeError, "the app loop class must derive from CLoop");
        return NULL;
    }
    if (st->runner.app_loop != NULL) {
        /* Loop.__init__ ran Python code, so another thread may have created
         * the app loop meanwhile: use that one, discard ours. */
        PyObject *r = PyObject_CallMethod(loop, "close", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        Py_DECREF(loop);
        return st->runner.app_loop;
    }
    L = (fa_loop *)loop;
    L->runner.is_app = 1;
    if (home_start(L) < 0) {
        L->runner.is_app = 0;
        Py_DECREF(loop);
        return NULL;
    }
    st->runner.app_loop = loop;
    st->runner.app_fork_gen = gen;
    return loop;
}

PyObject *
fa_get_loop(PyObject *module, PyObject *Py_UNUSED(unused))
{
    PyObject *loop = fa_app_loop(fa_get_state(module));
    return Py_XNewRef(loop);
}

/* _set_loop_class(cls): the class of the app loops made from now on (the
 * shim's flaskasync.Loop). */
PyObject *
fa_set_loop_class(PyObject *module, PyObject *cls)
{
    fa_state *st = fa_get_state(module);
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "the loop class must be a subclass of CLoop");
        return NULL;
    }
    Py_XSETREF(st->runner.loop_class, Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* _has_app_loop(): whether this process has an app loop that is not closed
 * (one made before a fork belongs to the parent). */
PyObject *
fa_has_app_loop(PyObject *module, PyObject *Py_UNUSED(unused))
{
    fa_runner_state *rs = &fa_get_state(module)->runner;
    int alive = rs->app_loop != NULL && !fa_forked(rs->app_fork_gen) &&
                !((fa_loop *)rs->app_loop)->closed;
    return PyBool_FromLong(alive);
}

/* ------------------------------------------------ adopted app loop
 *
 * ASGI serving (flaskasync._asgi): the server runs its own loop with
 * run_forever in its thread, and that loop becomes the process's app loop
 * for as long as the server runs (lifespan startup to shutdown).  It is
 * not driven by the baton and has no home thread: its own thread runs it.
 * run() from any other thread submits a start callback (the "baton taken"
 * path below) and waits with the GIL released.  run() from the loop's own
 * thread with no loop running in it can only come from sync code that a
 * request's greenlet runs between two switches: it goes to the `reenter`
 * callable given at adoption (the greenlet bridge), with run()'s own
 * arguments. */

/* 1: the caller is the loop's thread (reenter), 0: another thread
 * (submit and wait), -1: error. */
static int
adopted_check(fa_loop *L)
{
    if (L->thread_id == PyThread_get_thread_ident()) {
        if (L->st->runner.reenter == NULL) {
            PyErr_SetString(PyExc_RuntimeError,
                            "flaskasync.run() cannot be called from the thread running "
                            "the app loop");
            return -1;
        }
        return 1;
    }
    if (L->thread_id == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "flaskasync.run(): the app loop is the server's event loop, "
                        "and it is not running");
        return -1;
    }
    return 0;
}

PyObject *
fa_adopt_app_loop(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    fa_state *st = fa_get_state(module);
    unsigned long gen = fa_fork_gen();
    fa_loop *L;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_adopt_app_loop(loop, reenter) takes 2 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->LoopType)) {
        PyErr_Format(PyExc_TypeError, "_adopt_app_loop(): expected a flaskasync.Loop, got %R",
                     args[0]);
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "_adopt_app_loop(): reenter must be callable, got %R",
                     args[1]);
        return NULL;
    }
    L = (fa_loop *)args[0];
    if (fa_loop_check_closed(L) < 0) {
        return NULL;
    }
    if (L->runner.is_app || L->thread_id != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_adopt_app_loop(): the loop must be running in this thread");
        return NULL;
    }
    if (st->runner.app_loop != NULL && st->runner.app_loop != args[0]) {
        fa_loop *old = (fa_loop *)st->runner.app_loop;
        if (st->runner.app_fork_gen == gen && !old->closed) {
            PyErr_SetString(PyExc_RuntimeError,
                            "this process already has a flaskasync app loop (created by "
                            "flaskasync.run() or get_loop() before the server started); "
                            "the server's loop cannot become the app loop");
            return NULL;
        }
        old->runner.adopted = 0;
        Py_CLEAR(st->runner.app_loop);
    }
    Py_XSETREF(st->runner.reenter, Py_NewRef(args[1]));
    if (st->runner.app_loop == NULL) {
        st->runner.app_loop = Py_NewRef(args[0]);
    }
    st->runner.app_fork_gen = gen;
    L->runner.adopted = 1;
    Py_RETURN_NONE;
}

PyObject *
fa_release_app_loop(PyObject *module, PyObject *loop)
{
    fa_state *st = fa_get_state(module);
    if (st->runner.app_loop == loop && ((fa_loop *)loop)->runner.adopted) {
        ((fa_loop *)loop)->runner.adopted = 0;
        Py_CLEAR(st->runner.reenter);
        Py_CLEAR(st->runner.app_loop);
    }
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------- run */

/* Copy the values set inside the task's context back into the caller's,
 * as asgiref's async_to_sync does.  skip: a variable not to copy (the
 * task scope's), or NULL. */
static int
copy_context_back(PyObject *ctx, PyObject *skip)
{
    PyObject *it = PyObject_GetIter(ctx);
    PyObject *var;
    if (it == NULL) {
        return -1;
    }
    while ((var = PyIter_Next(it)) != NULL) {
        PyObject *val, *cur = NULL;
        if (var == skip) {
            Py_DECREF(var);
            continue;
        }
        val = PyObject_GetItem(ctx, var);
        if (val == NULL) {
            Py_DECREF(var);
            goto error;
        }
        if (PyContextVar_Get(var, NULL, &cur) < 0) {
            Py_DECREF(val);
            Py_DECREF(var);
            goto error;
        }
        if (cur != val) {
            PyObject *tok = PyContextVar_Set(var, val);
            if (tok == NULL) {
                Py_XDECREF(cur);
                Py_DECREF(val);
                Py_DECREF(var);
                goto error;
            }
            Py_DECREF(tok);
        }
        Py_XDECREF(cur);
        Py_DECREF(val);
        Py_DECREF(var);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
error:
    Py_DECREF(it);
    return -1;
}

/* Wait for the job with the GIL released.  A signal (Ctrl-C) interrupts
 * the wait: the task is cancelled and the exception propagates. */
static int
job_wait(fa_job *j)
{
    for (;;) {
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = sem_wait(&j->sem);
        Py_END_ALLOW_THREADS
        if (r == 0) {
            return 0;
        }
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* The caller is leaving early (KeyboardInterrupt while waiting or driving):
 * make sure the coroutine does not run on unattended. */
static void
job_abandon(fa_job *j)
{
    PyObject *exc = fa_fetch_exception();
    j->abandoned = 1;
    if (j->task != NULL && !j->loop->closed) {
        PyObject *cancel = PyObject_GetAttr(j->task, j->loop->st->s_cancel);
        if (cancel != NULL) {
            fa_handle *h = fa_handle_new(j->loop, j->loop->st->HandleType, cancel, NULL, NULL);
            if (h != NULL) {
                if (fa_loop_push_ready(j->loop, h) == 0) {
                    fa_loop_poke(j->loop);
                }
                Py_DECREF(h);
            }
            Py_DECREF(cancel);
        }
        PyErr_Clear();
    }
    fa_restore_exception(exc);
}

static PyObject *
job_result(fa_job *j)
{
    fa_state *st = j->loop->st;
    PyObject *res;
    if (j->error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(j->error), j->error);
        return NULL;
    }
    if (j->task == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "flaskasync.run(): the coroutine was never started");
        return NULL;
    }
    res = PyObject_CallMethodNoArgs(j->task, st->s_result);
    if (res == NULL && j->timed_out && PyErr_ExceptionMatches(st->CancelledError)) {
        /* raise TimeoutError(...) from the CancelledError.  The seconds as
         * repr(float(timeout)) writes them ("0.05", "30.0"):
         * PyUnicode_FromFormat knows no float conversion. */
        PyObject *cancelled = fa_fetch_exception(), *msg = NULL, *timeout_exc = NULL;
        char *secs = PyOS_double_to_string(j->timeout, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (secs != NULL) {
            msg = PyUnicode_FromFormat("flaskasync.run() timed out after %s seconds", secs);
            PyMem_Free(secs);
        }
        if (msg != NULL) {
            timeout_exc = PyObject_CallOneArg(PyExc_TimeoutError, msg);
            Py_DECREF(msg);
        }
        if (timeout_exc == NULL) {
            Py_XDECREF(cancelled);
            return NULL;
        }
        PyException_SetCause(timeout_exc, Py_XNewRef(cancelled));
        PyException_SetContext(timeout_exc, cancelled);
        fa_restore_exception(timeout_exc);
    }
    return res;
}

/* Drive the app loop in this thread until the job's task is done or
 * nothing is runnable.  Returns 1 if done, 0 if the caller must wait,
 * -1 on KeyboardInterrupt/SystemExit or a failure to start. */
static int
drive_inline(fa_loop *L, fa_job *j)
{
    fa_state *st = L->st;
    int done = 0;

    if (fa_loop_enter(L) < 0) {
        baton_release(L);
        return -1;
    }
    if (job_start_task(j) < 0) {
        fa_loop_leave(L);
        baton_release(L);
        return -1;
    }
    for (;;) {
        PyObject *d = PyObject_CallMethodNoArgs(j->task, st->s_done);
        if (d == NULL) {
            goto error;
        }
        done = (d == Py_True);
        Py_DECREF(d);
        if (done) {
            break;
        }
        if (fa_loop_collect(L, 0) < 0) {
            goto error;
        }
        if (L->ready_len == 0) {
            break;
        }
        if (fa_loop_run_ready(L) < 0 && !fa_loop_failure_is_task_outcome(L)) {
            goto error;
        }
    }
    if (done) {
        job_close_scope(j);
        fa_loop_leave(L);
        job_cancel_timeout(j);
    }
    else {
        int r = job_add_done_callback(j);
        fa_loop_leave(L);
        if (r < 0) {
            baton_release(L);
            return -1;
        }
    }
    baton_release(L);
    return done;

error:
    /* The task may run on (the caller cancels it): its scope still closes
     * when it is done. */
    if (j->scope != NULL) {
        PyObject *exc = fa_fetch_exception();
        PyObject *d = PyObject_CallMethodNoArgs(j->task, st->s_done);
        if (d == Py_True) {
            job_close_scope(j);
        }
        else if (d != NULL && job_add_done_callback(j) < 0) {
            PyErr_WriteUnraisable((PyObject *)L);
        }
        Py_XDECREF(d);
        PyErr_Clear();
        fa_restore_exception(exc);
    }
    fa_loop_leave(L);
    baton_release(L);
    return -1;
}

/* Make ctx (the task's context) start with scope in the supervision
 * variable var.  0, or -1 with an exception. */
static int
ctx_set_scope(PyObject *ctx, PyObject *var, PyObject *scope)
{
    PyObject *tok;
    if (PyContext_Enter(ctx) < 0) {
        return -1;
    }
    tok = PyContextVar_Set(var, scope);
    if (PyContext_Exit(ctx) < 0) {
        Py_XDECREF(tok);
        return -1;
    }
    if (tok == NULL) {
        return -1;
    }
    Py_DECREF(tok);
    return 0;
}

/* Run coro on the app loop L from this thread: the job, the baton, the
 * wait, the result.  timeout: seconds or NULL; name: str or NULL; context:
 * a Context to run in (nothing copied back) or NULL for a copy of the
 * caller's; scope: a task scope to run the call in (set in the task's
 * context, closed with finish when the task is done) or NULL. */
static PyObject *
run_job(fa_state *st, fa_loop *L, PyObject *coro, PyObject *timeout, PyObject *name,
        PyObject *context, PyObject *scope, fa_scope_finish_fn finish)
{
    PyObject *res = NULL, *skip = NULL;
    fa_job *j;
    int r;

    j = PyObject_GC_New(fa_job, st->WaiterType);
    if (j == NULL) {
        return NULL;
    }
    j->loop = (fa_loop *)Py_NewRef(L);
    j->coro = Py_NewRef(coro);
    j->ctx = NULL;
    j->name = Py_XNewRef(name);
    j->task = NULL;
    j->timeout_handle = NULL;
    j->error = NULL;
    j->timed_out = 0;
    j->abandoned = 0;
    j->copy_back = context == NULL;
    j->scope = NULL;
    j->scope_finish = finish;
    j->ctx_vars = NULL;
    j->has_timeout = 0;
    j->timeout = 0.0;
    j->prev = j->next = NULL;
    j->linked = 0;
    atomic_init(&j->posted, 0);
    sem_init(&j->sem, 0, 0);
    PyObject_GC_Track(j);
    if (timeout != NULL) {
        j->timeout = PyFloat_AsDouble(timeout);
        if (j->timeout == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "run(): timeout must be a number or None, got %R",
                         timeout);
            goto done;
        }
        if (!(j->timeout >= 0.0)) {
            PyErr_Format(PyExc_ValueError, "run(): timeout must be >= 0, got %R", timeout);
            goto done;
        }
        j->has_timeout = 1;
    }
    /* run(context=) runs the task in that Context, as asyncio.Runner.run
     * does, and copies nothing back; otherwise in a copy of the caller's,
     * whose changes are copied back when the task is done. */
    j->ctx = j->copy_back ? PyContext_CopyCurrent() : Py_NewRef(context);
    if (j->ctx == NULL) {
        goto done;
    }
    if (scope != NULL) {
        if (L->sup_var == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "the app loop has no task supervision");
            goto done;
        }
        if (ctx_set_scope(j->ctx, L->sup_var, scope) < 0) {
            goto done;
        }
        j->scope = Py_NewRef(scope);
        skip = Py_NewRef(L->sup_var); /* never copied back */
    }
    if (j->copy_back) {
        /* Kept (and referenced) to see whether the task set anything. */
        j->ctx_vars = Py_XNewRef(fa_context_vars(j->ctx));
    }

    if (!L->runner.adopted && baton_try(L)) {
        r = drive_inline(L, j);
        if (r < 0) {
            job_abandon(j);
            goto copy_back;
        }
        if (r == 0) {
            job_link(j);
            r = job_wait(j);
            job_unlink(j);
            if (r < 0) {
                job_abandon(j);
                goto copy_back;
            }
        }
    }
    else {
        /* Someone is running the loop's callbacks right now (we only got
         * here because the GIL switched threads mid-callback), or the app
         * loop is a server's loop running in its own thread: let that
         * thread start our task, and wait for it. */
        PyObject *start = PyCFunction_New(&job_start_def, (PyObject *)j);
        fa_handle *h;
        if (start == NULL) {
            goto done;
        }
        h = fa_handle_new(L, st->HandleType, start, NULL, NULL);
        Py_DECREF(start);
        if (h == NULL) {
            goto done;
        }
        r = fa_loop_push_ready(L, h);
        Py_DECREF(h);
        if (r < 0) {
            goto done;
        }
        fa_loop_poke(L);
        job_link(j);
        r = job_wait(j);
        job_unlink(j);
        if (r < 0) {
            job_abandon(j);
            goto copy_back;
        }
    }
    res = job_result(j);

copy_back:
    if (j->task != NULL && j->copy_back &&
        (j->ctx_vars == NULL || fa_context_vars(j->ctx) != j->ctx_vars)) {
        PyObject *exc = fa_fetch_exception();
        if (copy_context_back(j->ctx, skip) < 0) {
            if (exc == NULL) {
                Py_CLEAR(res);
                goto done;
            }
            PyErr_WriteUnraisable((PyObject *)L);
        }
        fa_restore_exception(exc);
    }
done:
    Py_XDECREF(skip);
    Py_XDECREF(j);
    return res;
}

/* The Flask integration's fast path (supervise.c): coro, a coroutine
 * object, run as run(coro, name=name) would, in scope. */
PyObject *
fa_run_coro(fa_state *st, PyObject *coro, PyObject *name, PyObject *scope,
            fa_scope_finish_fn finish)
{
    fa_loop *L = (fa_loop *)fa_app_loop(st);
    if (L == NULL) {
        return NULL;
    }
    return run_job(st, L, coro, NULL, name, NULL, scope, finish);
}

PyObject *
fa_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    fa_state *st = fa_get_state(module);
    PyObject *coro, *timeout = Py_None, *name = Py_None, *context = Py_None;
    PyObject *running;
    fa_loop *L;

    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "run() takes exactly one positional argument (a coroutine), got %zd",
                     nargs);
        return NULL;
    }
    coro = args[0];
    if (kwnames != NULL) {
        static const char *const names[] = {"timeout", "name", "context"};
        PyObject *kw[3] = {NULL, NULL, NULL};
        if (fa_parse_keywords("run", args, nargs, kwnames, names, kw, 3) < 0) {
            return NULL;
        }
        timeout = kw[0] != NULL ? kw[0] : Py_None;
        name = kw[1] != NULL ? kw[1] : Py_None;
        context = kw[2] != NULL ? kw[2] : Py_None;
    }
    /* Checked before the coroutine: a bad argument leaves it unstarted, as
     * a bad timeout does (the caller still owns it). */
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "run(): name must be a str or None, got %R", name);
        return NULL;
    }
    if (context != Py_None && !PyContext_CheckExact(context)) {
        PyErr_Format(PyExc_TypeError,
                     "run(): context must be a contextvars.Context or None, got %R", context);
        return NULL;
    }
    if (!PyCoro_CheckExact(coro)) {
        PyObject *ok = PyObject_CallOneArg(st->iscoroutine, coro);
        if (ok == NULL) {
            return NULL;
        }
        int isco = PyObject_IsTrue(ok);
        Py_DECREF(ok);
        if (!isco) {
            PyErr_Format(PyExc_TypeError,
                         "flaskasync.run() expects a coroutine object, got %R "
                         "(did you forget to call the async function?)", coro);
            return NULL;
        }
    }
    running = PyObject_CallNoArgs(st->get_running_loop);
    if (running == NULL) {
        return NULL;
    }
    if (running != Py_None) {
        Py_DECREF(running);
        PyErr_SetString(PyExc_RuntimeError,
                        "flaskasync.run() cannot be called from a running event loop; "
                        "await the coroutine instead");
        return NULL;
    }
    Py_DECREF(running);

    L = (fa_loop *)fa_app_loop(st);
    if (L == NULL) {
        return NULL;
    }
    if (L->runner.adopted) {
        int r2 = adopted_check(L);
        if (r2 < 0) {
            return NULL;
        }
        if (r2 == 1) {
            /* This thread runs the server's loop, outside any callback: a
             * request's greenlet (flaskasync._bridge) switches to the
             * loop's side, which awaits the coroutine. */
            return PyObject_Vectorcall(st->runner.reenter, args, nargs, kwnames);
        }
    }
    return run_job(st, L, coro, timeout == Py_None ? NULL : timeout,
                   name == Py_None ? NULL : name, context == Py_None ? NULL : context, NULL,
                   NULL);
}
