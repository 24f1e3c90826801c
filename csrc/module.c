/* flaskasync._core: module definition, state and init (multi-phase). */
#include "asgi.h"
#include "gather.h"
#include "handle.h"
#include "ioset.h"
#include "loop.h"
#include "net.h"
#include "runner.h"
#include "state.h"
#include "supervise.h"
#include "transport.h"
#include "util.h"
#include "watcher.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static PyObject *
mod_live_handles(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(fa_get_state(module)->live_handles);
}

static PyObject *
mod_shutdown(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    /* Stop the app loop's home thread before the interpreter finalizes; the
     * loop itself is closed by the shim after its grace period. */
    if (fa_runner_shutdown(fa_get_state(module)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"run", (PyCFunction)(void (*)(void))fa_run, METH_FASTCALL | METH_KEYWORDS,
     "run(coro, *, timeout=None, name=None, context=None)\n--\n\n"
     "Run a coroutine on the process's app loop from synchronous code and\n"
     "return its result (or raise its exception).  With timeout, the task is\n"
     "cancelled after that many seconds and TimeoutError is raised.\n\n"
     "name (a str) names the task; by default it is the coroutine's\n"
     "__qualname__.\n\n"
     "By default the task runs in a copy of the caller's contextvars.Context\n"
     "and the context variables it sets are copied back into the caller's\n"
     "context when it is done.  With context (a contextvars.Context), the\n"
     "task runs in that Context, as asyncio.Runner.run(context=) does: what\n"
     "it sets stays in that Context and nothing is copied back to the caller.\n"
     "That Context must not be entered elsewhere while the task runs."},
    {"gather", (PyCFunction)(void (*)(void))fa_gather, METH_FASTCALL | METH_KEYWORDS,
     "gather(*aws, return_exceptions=False)\n--\n\n"
     "Run awaitables concurrently; asyncio.gather semantics."},
    {"get_loop", fa_get_loop, METH_NOARGS,
     "get_loop()\n--\n\nReturn the process's app loop, creating it if needed."},
    {"_set_loop_class", fa_set_loop_class, METH_O, NULL},
    {"_live_handles", mod_live_handles, METH_NOARGS,
     "Number of Handle/TimerHandle objects alive (for leak tests)."},
    {"_shutdown", mod_shutdown, METH_NOARGS, NULL},
    {"_has_app_loop", fa_has_app_loop, METH_NOARGS, NULL},
    {"_adopt_app_loop", (PyCFunction)(void (*)(void))fa_adopt_app_loop, METH_FASTCALL,
     "_adopt_app_loop(loop, reenter)\n--\n\n"
     "Make loop, running in this thread, the process's app loop (ASGI serving)."},
    {"_asgi_environ", (PyCFunction)(void (*)(void))fa_asgi_environ, METH_FASTCALL,
     "_asgi_environ(scope, body, errors, header_cache)\n--\n\n"
     "The WSGI environ of an ASGI http scope, and (has_body, chunked)."},
    {"_asgi_start", (PyCFunction)(void (*)(void))fa_asgi_start, METH_FASTCALL,
     "_asgi_start(status, headers)\n--\n\n"
     "WSGI status and headers as an http.response.start message, and Content-Length."},
    {"_release_app_loop", fa_release_app_loop, METH_O,
     "_release_app_loop(loop)\n--\n\nUndo _adopt_app_loop(loop)."},
    {NULL, NULL, 0, NULL},
};

static int
intern(PyObject **out, const char *s)
{
    *out = PyUnicode_InternFromString(s);
    return *out == NULL ? -1 : 0;
}

static PyTypeObject *
make_type(PyObject *module, PyType_Spec *spec, PyObject *base, const char *export)
{
    PyObject *t = PyType_FromModuleAndSpec(module, spec, base);
    if (t == NULL) {
        return NULL;
    }
    if (export != NULL && PyModule_AddObjectRef(module, export, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyTypeObject *)t;
}

/* What the layers above the loop do when it closes or creates a task, in
 * the order loop.h's fa_loop_hooks gives: the runner lets go of the loop
 * first; then the fd watchers, then the transports; close() then cancels
 * the DNS requests in flight. */
static const fa_loop_hooks loop_hooks = {
    .closing = {fa_runner_loop_closing},
    .release = {fa_loop_close_watchers, fa_transport_close_all},
    .cancel = {fa_dns_cancel_all},
    .supervise = fa_loop_supervise,
};

/* The loop type's method table: loop.c's own methods and those of the
 * concepts above the loop (fd watching, supervision, the network methods).
 * One table for the process, assembled at the first exec and never freed:
 * it holds no Python object and is the same for every module instance (a
 * subinterpreter, a second import), and each loop type and every method
 * descriptor and bound method made from one points into it, so it must
 * outlive all of them, whatever order they go in.  Built with the GIL
 * held (the module runs under the one GIL: see docs/architecture.md). */
static PyMethodDef *
loop_method_table(void)
{
    static PyMethodDef *table;
    const PyMethodDef *parts[] = {fa_loop_methods, fa_watcher_loop_methods,
                                  fa_supervise_loop_methods, fa_dns_loop_methods,
                                  fa_sock_loop_methods};
    size_t n = 0;
    PyMethodDef *t;
    if (table != NULL) {
        return table;
    }
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (const PyMethodDef *m = parts[i]; m->ml_name != NULL; m++) {
            n++;
        }
    }
    t = PyMem_RawCalloc(n + 1, sizeof(PyMethodDef)); /* + the terminating entry */
    if (t == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    n = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (const PyMethodDef *m = parts[i]; m->ml_name != NULL; m++) {
            t[n++] = *m;
        }
    }
    table = t;
    return table;
}

/* libuv runs getaddrinfo/getnameinfo as "slow I/O" and lets only half its
 * threadpool (default 4 threads, so 2 lookups) do that at once, shared by
 * every request of the process.  Give it room for as many lookups as
 * asyncio's default executor runs (min(32, cpus + 4)), unless the user set
 * UV_THREADPOOL_SIZE.  It must be set before libuv's first threadpool use;
 * the threads start lazily, on the first lookup. */
static void
set_threadpool_size(void)
{
    char buf[16];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long workers;
    if (getenv("UV_THREADPOOL_SIZE") != NULL) {
        return;
    }
    if (cpus < 1) {
        cpus = 1;
    }
    workers = cpus + 4 < 32 ? cpus + 4 : 32;
    snprintf(buf, sizeof(buf), "%ld", 2 * workers);
    setenv("UV_THREADPOOL_SIZE", buf, 0);
}

static int
module_exec(PyObject *module)
{
    fa_state *st = fa_get_state(module);
    PyObject *asyncio_mod;

    /* asyncio before _asyncio.  In a process that imports _asyncio first
     * (CPython 3.11 to 3.13 alike), asyncio.tasks ends up with
     * _current_tasks and _all_tasks other than the ones the C Task
     * registers in: asyncio.current_task() is None in every task,
     * asyncio.all_tasks() is empty and asyncio.timeout() refuses to run
     * ("Timeout should be used inside a task").  `import flaskasync` as a
     * process's first import of asyncio did exactly that. */
    asyncio_mod = PyImport_ImportModule("asyncio");
    if (asyncio_mod == NULL) {
        return -1;
    }
    Py_DECREF(asyncio_mod);
    if (fa_import_attr(&st->FutureType, "_asyncio", "Future") < 0 ||
        fa_import_attr(&st->TaskType, "_asyncio", "Task") < 0 ||
        fa_import_attr(&st->CancelledError, "asyncio", "CancelledError") < 0 ||
        fa_import_attr(&st->set_running_loop, "_asyncio", "_set_running_loop") < 0 ||
        fa_import_attr(&st->get_running_loop, "_asyncio", "_get_running_loop") < 0 ||
        fa_import_attr(&st->get_event_loop, "asyncio", "get_event_loop") < 0 ||
        fa_import_attr(&st->ensure_future, "asyncio", "ensure_future") < 0 ||
        fa_import_attr(&st->iscoroutine, "asyncio", "iscoroutine") < 0 ||
        fa_import_attr(&st->get_asyncgen_hooks, "sys", "get_asyncgen_hooks") < 0 ||
        fa_import_attr(&st->set_asyncgen_hooks, "sys", "set_asyncgen_hooks") < 0 ||
        fa_import_attr(&st->format_cb_source, "asyncio.format_helpers",
                       "_format_callback_source") < 0 ||
        fa_import_attr(&st->extract_stack, "asyncio.format_helpers", "extract_stack") < 0 ||
        fa_import_attr(&st->isawaitable, "inspect", "isawaitable") < 0 ||
        fa_import_attr(&st->set_wakeup_fd, "signal", "set_wakeup_fd") < 0) {
        return -1;
    }
    {
        PyObject *base = NULL;
        if (fa_import_attr(&base, "asyncio", "BaseEventLoop") < 0) {
            return -1;
        }
        st->base_create_task = PyObject_GetAttrString(base, "create_task");
        Py_DECREF(base);
        if (st->base_create_task == NULL) {
            return -1;
        }
    }
    {
        /* 3.13 formats a callback's arguments only in debug mode, and
         * _format_callback_source grew a debug= keyword for it: asked of
         * the function itself, since security releases may have it too. */
        PyObject *sig = NULL, *params = NULL;
        int has = -1;
        st->kw_debug = Py_BuildValue("(s)", "debug");
        if (st->kw_debug != NULL && fa_import_attr(&sig, "inspect", "signature") == 0) {
            Py_SETREF(sig, PyObject_CallOneArg(sig, st->format_cb_source));
            params = sig != NULL ? PyObject_GetAttrString(sig, "parameters") : NULL;
            has = params != NULL ? PySequence_Contains(params, PyTuple_GET_ITEM(st->kw_debug, 0))
                                 : -1;
        }
        Py_XDECREF(params);
        Py_XDECREF(sig);
        if (has < 0) {
            return -1;
        }
        if (!has) {
            Py_CLEAR(st->kw_debug);
        }
    }
    if (fa_import_attr(&st->current_task, "asyncio", "current_task") < 0) {
        return -1;
    }
    /* Present from 3.14 on: looked up by name, not by version number. */
    if (fa_import_attr(&st->add_awaited_by, "asyncio.futures", "future_add_to_awaited_by") < 0 ||
        fa_import_attr(&st->discard_awaited_by, "asyncio.futures", "future_discard_from_awaited_by") < 0) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        Py_CLEAR(st->add_awaited_by);
        Py_CLEAR(st->discard_awaited_by);
    }
    st->kw_loop = Py_BuildValue("(s)", "loop");
    st->kw_loop_name = Py_BuildValue("(ss)", "loop", "name");
    st->kw_loop_context = Py_BuildValue("(ss)", "loop", "context");
    st->kw_loop_name_context = Py_BuildValue("(sss)", "loop", "name", "context");
    st->kw_name = Py_BuildValue("(s)", "name");
    st->kw_context = Py_BuildValue("(s)", "context");
    st->kw_name_context = Py_BuildValue("(ss)", "name", "context");
    if (st->kw_loop == NULL || st->kw_loop_name == NULL || st->kw_loop_context == NULL ||
        st->kw_loop_name_context == NULL || st->kw_name == NULL || st->kw_context == NULL ||
        st->kw_name_context == NULL) {
        return -1;
    }
    {
        PyObject *mt = NULL, *ident = NULL;
        if (fa_import_attr(&mt, "threading", "main_thread") < 0) {
            return -1;
        }
        Py_SETREF(mt, PyObject_CallNoArgs(mt));
        if (mt != NULL) {
            ident = PyObject_GetAttrString(mt, "ident");
        }
        Py_XDECREF(mt);
        if (ident == NULL) {
            return -1;
        }
        st->main_ident = PyLong_AsUnsignedLong(ident);
        Py_DECREF(ident);
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (intern(&st->s_done, "done") < 0 ||
        intern(&st->s_result, "result") < 0 || intern(&st->s_exception, "exception") < 0 ||
        intern(&st->s_cancel, "cancel") < 0 || intern(&st->s_cancelled, "cancelled") < 0 ||
        intern(&st->s_add_done_callback, "add_done_callback") < 0 ||
        intern(&st->s_remove_done_callback, "remove_done_callback") < 0 ||
        intern(&st->s_set_result, "set_result") < 0 ||
        intern(&st->s_set_exception, "set_exception") < 0 ||
        intern(&st->s_make_cancelled_error, "_make_cancelled_error") < 0 ||
        intern(&st->s_get_loop, "get_loop") < 0 ||
        intern(&st->s_create_task, "create_task") < 0 ||
        intern(&st->s_log_destroy_pending, "_log_destroy_pending") < 0 ||
        intern(&st->s_loop, "loop") < 0 ||
        intern(&st->s_asyncgen_firstiter_hook, "_asyncgen_firstiter_hook") < 0 ||
        intern(&st->s_asyncgen_finalizer_hook, "_asyncgen_finalizer_hook") < 0 ||
        intern(&st->s_log_slow_callback, "_log_slow_callback") < 0 ||
        intern(&st->s_slow_callback_duration, "slow_callback_duration") < 0 ||
        intern(&st->s_msg, "msg") < 0 ||
        intern(&st->s_qualname, "__qualname__") < 0 || intern(&st->s_get, "get") < 0 ||
        intern(&st->s_config, "config") < 0 ||
        intern(&st->s_log_traceback, "_log_traceback") < 0) {
        return -1;
    }
    {
        PyMethodDef *methods = loop_method_table();
        fa_loop_set_hooks(&loop_hooks);
        fa_ioset_set_sweeper(&fa_transport_sweeper);
        fa_set_module_def(PyModule_GetDef(module));
        st->LoopType = methods != NULL ? fa_loop_type_new(module, methods) : NULL;
        if (st->LoopType == NULL ||
            PyModule_AddObjectRef(module, "CLoop", (PyObject *)st->LoopType) < 0) {
            return -1;
        }
    }
    if (fa_handle_init_types(module, st) < 0) {
        return -1;
    }
    st->WatcherType = make_type(module, &fa_watcher_spec, NULL, NULL);
    if (st->WatcherType == NULL) {
        return -1;
    }
    st->WaiterType = make_type(module, &fa_waiter_spec, NULL, NULL);
    if (st->WaiterType == NULL) {
        return -1;
    }
    if (fa_gather_init_type(module, st) < 0 || fa_supervise_init_types(module, st) < 0) {
        return -1;
    }
    if (fa_net_init(module, st) < 0 || fa_stream_init(module, st) < 0 ||
        fa_udp_init(module, st) < 0 || fa_asgi_init(st) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "_GatheringFuture", (PyObject *)st->GatherType) < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "libuv_version", uv_version_string()) < 0) {
        return -1;
    }
    fa_register_atfork();
    set_threadpool_size();
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    fa_state *st = fa_get_state(module);
    Py_VISIT(st->LoopType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->TimerHandleType);
    Py_VISIT(st->WatcherType);
    Py_VISIT(st->GatherType);
    Py_VISIT(st->WaiterType);
    Py_VISIT(st->ScopeType);
    Py_VISIT(st->AsyncToSyncType);
    Py_VISIT(st->SyncCallType);
    Py_VISIT(st->FutureType);
    Py_VISIT(st->TaskType);
    int r = fa_runner_traverse(st, visit, arg);
    if (r == 0) {
        r = fa_net_traverse(st, visit, arg);
    }
    if (r == 0) {
        r = fa_stream_traverse(st, visit, arg);
    }
    return r != 0 ? r : fa_udp_traverse(st, visit, arg);
}

static int
module_clear(PyObject *module)
{
    fa_state *st = fa_get_state(module);
    fa_runner_clear(st);
    fa_handle_clear_free_list(st);
    Py_CLEAR(st->LoopType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->TimerHandleType);
    Py_CLEAR(st->WatcherType);
    Py_CLEAR(st->GatherType);
    Py_CLEAR(st->WaiterType);
    Py_CLEAR(st->ScopeType);
    Py_CLEAR(st->AsyncToSyncType);
    Py_CLEAR(st->SyncCallType);
    Py_CLEAR(st->FutureType);
    Py_CLEAR(st->TaskType);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->set_running_loop);
    Py_CLEAR(st->get_running_loop);
    Py_CLEAR(st->get_event_loop);
    Py_CLEAR(st->ensure_future);
    Py_CLEAR(st->iscoroutine);
    Py_CLEAR(st->get_asyncgen_hooks);
    Py_CLEAR(st->set_asyncgen_hooks);
    Py_CLEAR(st->format_cb_source);
    Py_CLEAR(st->kw_debug);
    Py_CLEAR(st->extract_stack);
    Py_CLEAR(st->isawaitable);
    Py_CLEAR(st->set_wakeup_fd);
    Py_CLEAR(st->base_create_task);
    Py_CLEAR(st->current_task);
    Py_CLEAR(st->add_awaited_by);
    Py_CLEAR(st->discard_awaited_by);
    Py_CLEAR(st->kw_loop);
    Py_CLEAR(st->kw_loop_name);
    Py_CLEAR(st->kw_loop_context);
    Py_CLEAR(st->kw_loop_name_context);
    Py_CLEAR(st->kw_name);
    Py_CLEAR(st->kw_context);
    Py_CLEAR(st->kw_name_context);
    fa_net_clear(st);
    fa_stream_clear(st);
    fa_udp_clear(st);
    fa_asgi_clear(st);
    PyObject **names[] = {
        &st->s_done, &st->s_result, &st->s_exception, &st->s_cancel,
        &st->s_cancelled, &st->s_add_done_callback, &st->s_remove_done_callback,
        &st->s_set_result, &st->s_set_exception, &st->s_make_cancelled_error,
        &st->s_get_loop, &st->s_create_task,
        &st->s_log_destroy_pending, &st->s_loop,
        &st->s_asyncgen_firstiter_hook, &st->s_asyncgen_finalizer_hook,
        &st->s_log_slow_callback, &st->s_slow_callback_duration,
        &st->s_msg, &st->s_qualname, &st->s_get,
        &st->s_config, &st->s_log_traceback,
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        Py_CLEAR(*names[i]);
    }
    return 0;
}

static void
module_free(void *module)
{
    (void)module_clear((PyObject *)module);
    fa_gather_free_meths(fa_get_state((PyObject *)module));
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static PyModuleDef fa_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "flaskasync._core",
    .m_doc = "C core of flaskasync: an asyncio event loop on libuv, the runner and gather.",
    .m_size = sizeof(fa_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&fa_module_def);
}
