/* flaskasync internal: the module state (module.c makes and clears it),
 * which embeds the state of the runner, the network methods and the ASGI
 * conversions, and how code finds it. */
#ifndef FLASKASYNC_STATE_H
#define FLASKASYNC_STATE_H

#include "fa.h"
#include "asgi.h"     /* fa_asgi_state, embedded */
#include "net.h"      /* fa_net_state, embedded */
#include "runner.h"   /* fa_runner_state, embedded */
#include "util.h"     /* fa_module_def_get */

typedef struct fa_handle fa_handle;

/* Per-module state.  Every type is a heap type owned by the module; every
 * asyncio object we call into is looked up once at import time. */
struct fa_state {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyTypeObject *WatcherType;
    PyTypeObject *GatherType;
    struct fa_gather_meths *gather_meths; /* gather.c: owned here, freed by module_free */
    PyTypeObject *WaiterType;
    PyTypeObject *ScopeType;       /* supervise.c: _Scope */
    PyTypeObject *AsyncToSyncType; /* supervise.c: _AsyncToSync */
    PyTypeObject *SyncCallType;    /* supervise.c: _SyncCall */

    PyObject *FutureType;          /* asyncio.Future (C) */
    PyObject *TaskType;            /* asyncio.Task (C) */
    PyObject *CancelledError;
    PyObject *set_running_loop;    /* _asyncio._set_running_loop */
    PyObject *get_running_loop;    /* _asyncio._get_running_loop */
    PyObject *get_event_loop;      /* asyncio.get_event_loop */
    PyObject *ensure_future;       /* asyncio.ensure_future */
    PyObject *iscoroutine;         /* asyncio.iscoroutine */
    PyObject *get_asyncgen_hooks;  /* sys.get_asyncgen_hooks */
    PyObject *set_asyncgen_hooks;  /* sys.set_asyncgen_hooks */
    PyObject *format_cb_source;    /* asyncio.format_helpers._format_callback_source */
    PyObject *kw_debug;            /* ("debug",) when format_cb_source takes debug=
                                    * (3.13: a callback's arguments are shown only in
                                    * debug mode), else NULL */
    PyObject *extract_stack;       /* asyncio.format_helpers.extract_stack */
    PyObject *isawaitable;         /* inspect.isawaitable */
    PyObject *set_wakeup_fd;       /* signal.set_wakeup_fd */
    PyObject *base_create_task;    /* asyncio.BaseEventLoop.create_task (a function) */
    PyObject *current_task;        /* asyncio.current_task */
    /* asyncio.futures.future_add_to_awaited_by / future_discard_from_awaited_by,
     * the call-graph bookkeeping of 3.14's asyncio; NULL before 3.14. */
    PyObject *add_awaited_by, *discard_awaited_by;
    /* Keyword names of Task(coro, loop=, name=, context=) and of
     * create_task(coro, name=, context=). */
    PyObject *kw_loop, *kw_loop_name, *kw_loop_context, *kw_loop_name_context;
    PyObject *kw_name, *kw_context, *kw_name_context;
    unsigned long main_ident;      /* thread id of the main thread */

    fa_runner_state runner;        /* runner.c's: the process's app loop */

    /* Interned method and keyword names. */
    PyObject *s_done, *s_result, *s_exception, *s_cancel,
        *s_cancelled, *s_add_done_callback, *s_remove_done_callback,
        *s_set_result, *s_set_exception, *s_make_cancelled_error,
        *s_get_loop, *s_create_task,
        *s_log_destroy_pending, *s_loop,
        *s_asyncgen_firstiter_hook, *s_asyncgen_finalizer_hook,
        *s_log_slow_callback, *s_slow_callback_duration,
        *s_msg, *s_qualname, *s_get, *s_config, *s_log_traceback;

    fa_net_state net;
    fa_asgi_state asgi;

    /* handle.c: deallocated Handles and TimerHandles kept for reuse (they
     * have the same size), linked through next_free; untracked, holding
     * no references. */
    fa_handle *free_handles;
    int n_free_handles;
    int handles_closed;          /* module cleared: free instead of keeping */
    Py_ssize_t live_handles;     /* Handles alive, for the leak tests (GIL-protected) */
};

/* Finding the module state: one rule for each situation, one helper each.
 *
 * - A module function (it is given the module object): fa_get_state(module).
 * - A loop's code, and the code of an object that holds a loop (handle,
 *   watcher, transport, network op, run() job): the loop's L->st, which
 *   the loop took from its type when it was made.  No lookup at all: this
 *   is the hot paths' way.
 * - A slot or method of one of our types that Python cannot subclass
 *   (Handle, TimerHandle, _GatheringFuture): the object's type is the type
 *   that defines them, whose module is ours: fa_state_of_own_type(Py_TYPE(self)).
 * - Code given a type that Python code may have subclassed (the tp_new of
 *   CLoop, StreamTransport, DatagramTransport; a subclass made by a class
 *   statement has no module of its own): fa_module_of_type(type), which
 *   looks through the type's MRO for the class our module defined.  An
 *   object that needs the state later keeps the module (a strong
 *   reference, which keeps the state alive) and the state pointer. */
static inline fa_state *
fa_get_state(PyObject *module)
{
    return (fa_state *)PyModule_GetState(module);
}

static inline fa_state *
fa_state_of_own_type(PyTypeObject *tp)
{
    return (fa_state *)PyType_GetModuleState(tp);
}

/* Borrowed reference, or NULL with TypeError. */
static inline PyObject *
fa_module_of_type(PyTypeObject *tp)
{
    return PyType_GetModuleByDef(tp, fa_module_def_get());
}

#endif /* FLASKASYNC_STATE_H */
