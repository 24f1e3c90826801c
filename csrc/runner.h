/* flaskasync internal: the runner (runner.c), flaskasync.run() on the
 * process's app loop.  struct fa_state (state.h) and struct fa_loop
 * (loop.h) embed the runner's state, so those headers include this one.
 *
 * What the runner keeps in the module and in each loop is here; only
 * runner.c reads or writes it, except through the inline entry points that
 * follow struct fa_loop in loop.h (fa_app_wake() and its friends), which
 * read the fields the loop's hot paths need.  Nothing here is public API. */
#ifndef FLASKASYNC_RUNNER_H
#define FLASKASYNC_RUNNER_H

#include "fa.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

typedef struct fa_state fa_state;
typedef struct fa_loop fa_loop;
struct fa_job;

/* The runner's state in the module, embedded in fa_state as `runner`:
 * the process's app loop. */
typedef struct {
    PyObject *loop_class;          /* the Python flaskasync.Loop, set by the shim */
    PyObject *app_loop;            /* the process's app loop, or NULL */
    PyObject *reenter;             /* adopted app loop: run() from its own thread */
    unsigned long app_fork_gen;    /* fork generation the app loop belongs to */
} fa_runner_state;

/* The runner's state in a loop, embedded in fa_loop as `runner`.  All
 * zero for a loop the runner never used.  The baton protocol is described
 * at the top of runner.c, the GIL protocol in loop.c (fa_loop_gil_ensure). */
typedef struct fa_runner {
    /* Read by fa_app_idle() on every call_soon: the first two fields, next
     * to each other. */
    int is_app;                  /* the app loop of flaskasync.run() */
    atomic_int baton;            /* 1 while some thread drives the loop */
    int adopted;                 /* a running loop adopted as the app loop (ASGI) */
    atomic_int home_missed;      /* home thread found the baton taken */
    atomic_int home_stop;        /* the home thread must exit */
    int home_started;            /* home_thread and home_sem exist */
    sem_t home_sem;              /* posted by a driver that saw home_missed */
    pthread_t home_thread;
    struct fa_job *jobs;         /* jobs whose caller waits (GIL-protected) */
} fa_runner;

/* The loop's closing hook (fa_loop_hooks, registered by module.c): L is
 * closing (close(), or its deallocation), before it is marked closed.  Stops and joins the home
 * thread of an app loop, then fails the callers still waiting on L. */
void fa_runner_loop_closing(fa_loop *L);

/* module.c: _shutdown() (the shim's atexit handler; 0, or -1 with an
 * exception), and the module's traverse and clear. */
int fa_runner_shutdown(fa_state *st);
int fa_runner_traverse(fa_state *st, visitproc visit, void *arg);
void fa_runner_clear(fa_state *st);

/* The module's functions: run(), get_loop(), the shim's loop class and
 * app loop check, and the ASGI mode's adoption of a server's loop. */
extern PyType_Spec fa_waiter_spec;   /* _Job, the state of one run() call */
PyObject *fa_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames);
PyObject *fa_get_loop(PyObject *module, PyObject *unused);
PyObject *fa_set_loop_class(PyObject *module, PyObject *cls);
PyObject *fa_has_app_loop(PyObject *module, PyObject *unused);
PyObject *fa_adopt_app_loop(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fa_release_app_loop(PyObject *module, PyObject *loop);

/* supervise.c: the Flask integration's fast path. */
/* The app loop, created on first use: a borrowed reference (st holds it),
 * or NULL with an exception. */
PyObject *fa_app_loop(fa_state *st);
/* Close a task scope once its call is over (on the loop): never raises. */
typedef void (*fa_scope_finish_fn)(PyObject *scope, fa_state *st);
/* run(coro, name=name) in scope (a task scope, or NULL), closed with
 * finish when the task is done: a new reference, or NULL with an
 * exception. */
PyObject *fa_run_coro(fa_state *st, PyObject *coro, PyObject *name, PyObject *scope,
                      fa_scope_finish_fn finish);

#endif
