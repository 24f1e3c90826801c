/* flaskasync internal: the event loop (loop.c), its functions for the
 * layers above it and the hooks through which it calls them, and the
 * inline functions that read its fields (its own, and the runner's entry
 * points into the runner's state in a loop). */
#ifndef FLASKASYNC_LOOP_H
#define FLASKASYNC_LOOP_H

#include "fa.h"
#include "runner.h"   /* fa_runner, embedded */
#include "util.h"     /* fa_forked */

#include <stdint.h>
#include <uv.h>

typedef struct fa_state fa_state;
typedef struct fa_handle fa_handle;
typedef struct fa_reg fa_reg;
typedef struct fa_op fa_op;
struct fa_transport;

struct fa_loop {
    PyObject_HEAD
    fa_state *st;
    PyObject *module;            /* keeps st alive */

    uv_loop_t uv;
    uv_async_t wakeup;           /* call_soon_threadsafe and pokes */
    uv_prepare_t prepare;        /* releases the GIL before a blocking poll */
    uv_check_t check;            /* re-takes it after the poll */
    uv_poll_t timer_poll;        /* watches timer_fd */
    int timer_fd;                /* timerfd for the earliest deadline */
    double armed_when;           /* deadline timer_fd is armed for, or -1 */
    PyThreadState *released;     /* non-NULL while the GIL is released */
    int blocking;                /* this uv_run may block */
    int uv_ready;                /* uv loop initialised */

    /* Ready queue: ring buffer of owned handle references. */
    fa_handle **ready;
    Py_ssize_t ready_head, ready_len, ready_cap;

    /* Timer heap ordered by (when, seq). Owned references. */
    fa_handle **heap;
    Py_ssize_t heap_len, heap_cap;
    uint64_t timer_seq;

    PyObject *watchers;          /* dict fd -> fa_watcher */
    Py_ssize_t n_io;             /* pending work only uv_run completes (DNS, signals) */
    Py_ssize_t n_closing;        /* uv handles waiting for their close callback */
    int io_dirty;                /* an internal uv handle changed since the last uv_run */

    /* The loop's own epoll set for user fds (ioset.c), itself watched by
     * libuv like the timerfd. */
    int ioset_fd;                /* -1 until first used */
    int ioset_poll_ready;
    uv_poll_t ioset_poll;
    int ioset_junk;              /* an event came for a registration we dropped */
    fa_reg **io_slot;            /* token slot -> registration (slot 0: the sweep) */
    uint32_t *io_gen;            /* token slot -> generation */
    uint32_t io_nslot, io_capslot;
    uint32_t *io_free;           /* free slots */
    uint32_t io_nfree;
    fa_reg **io_byfd;            /* fd number -> the registration in the set */
    int io_byfd_cap;
    Py_ssize_t n_watch;          /* registrations in the set */
    int sweep_fd;                /* timerfd in the set: the periodic liveness check */
    int sweep_armed;
    uint32_t sweep_cursor;
    double sweep_interval;       /* seconds between liveness checks */
    fa_handle *failed;           /* handle whose callback raised KeyboardInterrupt/SystemExit */
    fa_handle *current;          /* debug mode: the handle running now (borrowed) */

    /* Signals: a pipe set as Python's signal wakeup fd while the loop
     * blocks in the main thread, so a signal interrupts the poll. */
    int sig_rfd, sig_wfd;
    uv_poll_t sig_poll;
    int sig_poll_ready;
    int sig_dispatch;            /* loop-level signal handlers are installed */
    PyObject *wakeup_old;        /* wakeup fd to restore, or NULL */

    fa_op *requests;             /* libuv requests in flight (dns.c), cancelled by close */
    struct fa_transport *transports; /* transport.c: live transports (linked list) */
    char *recv_buf;              /* transport.c: receive buffer, lazily allocated */

    PyObject *task_factory;
    PyObject *sup_var;           /* supervise.c: the scope ContextVar, or NULL */
    PyObject *sup_hook;          /* supervise.c: record(task, scope, context) */
    PyObject *last_ctx;          /* pristine copy of the context the last one-shot
                                  * callback was scheduled in (see fa_handle) */
    PyObject *weakreflist;
    PyObject *dict;

    int closed;
    int stopping;
    int debug;
    unsigned long thread_id;     /* thread running the loop, 0 if none */
    PyObject *saved_hooks;       /* asyncgen hooks to restore after running */
    PyObject *hook_first;        /* cached bound _asyncgen_firstiter_hook */
    PyObject *hook_fin;          /* cached bound _asyncgen_finalizer_hook */

    unsigned long fork_gen;      /* fork generation the loop was created in */

    fa_runner runner;            /* runner.c's state (runner.h): read it through the
                                  * inline functions below, write it only in runner.c */
};

/* The loop's functions that only read its fields, inline: the fd set
 * (ioset.c), below the loop's own file, calls them without naming it. */

/* Was the loop made before a fork() that led to this process?  Then its
 * epoll sets, eventfd and timerfd belong to the parent: never touch them. */
static inline int
fa_loop_forked(fa_loop *self)
{
    return fa_forked(self->fork_gen);
}

/* Take the GIL back if the loop gave it up before a blocking poll (the GIL
 * protocol is written in loop.c, "GIL handling"). */
static inline void
fa_loop_gil_ensure(fa_loop *self)
{
    if (self->released != NULL) {
        PyThreadState *ts = self->released;
        self->released = NULL;
        PyEval_RestoreThread(ts);
    }
}

/* Wake whoever services an app loop that nobody is driving. */
static inline void
fa_loop_poke(fa_loop *self)
{
    if (self->uv_ready && !fa_loop_forked(self)) {
        uv_async_send(&self->wakeup);
    }
}

/* loop.c */
extern PyMethodDef fa_loop_methods[];   /* the loop's own, null-terminated */
PyTypeObject *fa_loop_type_new(PyObject *module, PyMethodDef *methods);

/* What the layers above the loop do when it closes or creates a task:
 * loop.c calls them through this table, which module.c fills at exec
 * (fa_loop_set_hooks, before it makes the loop type), since loop.c cannot
 * name them.  Each list runs in its order, up to its first NULL:
 *   close():  closing, then `closed` is set and the ready queue and timers
 *             are dropped, then release, then cancel (loop.c then waits
 *             for the libuv requests still in flight);
 *   deallocation: closing, then, for a loop not closed yet (and not
 *             forked), `closed` is set and release runs; not cancel (a
 *             request in flight holds a reference to its loop). */
#define FA_LOOP_HOOKS_MAX 4
typedef void (*fa_loop_hook)(fa_loop *self);
typedef struct fa_loop_hooks {
    fa_loop_hook closing[FA_LOOP_HOOKS_MAX];  /* before the loop is marked closed */
    fa_loop_hook release[FA_LOOP_HOOKS_MAX];  /* let go of the fds and their callbacks */
    fa_loop_hook cancel[FA_LOOP_HOOKS_MAX];   /* close() only: cancel libuv requests */
    /* create_task() with supervision on (loop->sup_var set): record the
     * task; -1 with an exception. */
    int (*supervise)(fa_loop *self, PyObject *task, PyObject *context);
} fa_loop_hooks;
void fa_loop_set_hooks(const fa_loop_hooks *hooks);

int fa_loop_push_ready(fa_loop *self, fa_handle *h);
fa_handle *fa_loop_call_soon(fa_loop *self, PyObject *callback, PyObject *args,
                             PyObject *context);
int fa_loop_run_ready(fa_loop *self);
int fa_loop_collect(fa_loop *self, int may_block);
int fa_loop_enter(fa_loop *self);
void fa_loop_leave(fa_loop *self);
void fa_loop_arm_timer(fa_loop *self);
PyObject *fa_loop_create_task(fa_loop *self, PyObject *coro, PyObject *name,
                              PyObject *context);
PyObject *fa_loop_create_own_task(fa_loop *self, PyObject *coro, PyObject *name,
                                  PyObject *context);
double fa_now(void);
void fa_timer_remove(fa_loop *self, fa_handle *h);
int fa_loop_check_closed(fa_loop *self);
int fa_loop_failure_is_task_outcome(fa_loop *self);

/* runner.h: the inline entry points into the runner's state in a loop.
 * They read fa_loop, so they are here rather than in runner.h. */

/* Is L the app loop with nobody driving it (the baton free)?  Then only its
 * home thread (runner.c) will service it, and something that gives it work
 * from outside a driver (a callback, a timer, an fd to register) must wake
 * that thread.  seq_cst like every atomic of the runner.  GIL held.
 * Inline: call_soon pays for it on every call. */
static inline int
fa_app_idle(fa_loop *L)
{
    return L->runner.is_app && atomic_load(&L->runner.baton) == 0;
}

/* Is L the app loop of flaskasync.run()?  It is never run with
 * run_forever(), and the threads that drive it keep its asyncgen hooks. */
static inline int
fa_app_is(fa_loop *L)
{
    return L->runner.is_app;
}

/* Is L a server's running loop adopted as the app loop (ASGI mode)? */
static inline int
fa_app_adopted(fa_loop *L)
{
    return L->runner.adopted;
}

/* The one "work was added to the app loop: if it is idle, poke its home
 * thread" entry point.  No-op for other loops and while a driver holds the
 * baton (the runner's baton release pokes for what it leaves behind). */
static inline void
fa_app_wake(fa_loop *L)
{
    if (fa_app_idle(L)) {
        fa_loop_poke(L);
    }
}

#endif /* FLASKASYNC_LOOP_H */
