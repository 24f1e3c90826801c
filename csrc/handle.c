/* Handle and TimerHandle: the callbacks the loop runs.  They mirror
 * asyncio.Handle / asyncio.TimerHandle: cancel(), cancelled(), get_context(),
 * when(), and an exception in the callback goes to the loop's exception
 * handler instead of stopping the loop. */
#include "handle.h"
#include "loop.h"
#include "state.h"
#include "util.h"

/* Deallocated handles kept for reuse.  A handle taken from the list is not
 * a new allocation to the cyclic GC (its count of young objects does not
 * grow), as CPython's own free lists (of contexts, for example) are not. */
#define FA_HANDLE_FREE_MAX 256

/* ------------------------------------------------------------ contexts */

/* The layout of a contextvars.Context (CPython's PyContext, unchanged from
 * 3.7 to 3.14), read for one thing only: the immutable mapping (HAMT) that
 * holds its variables.  Two contexts holding the same mapping object hold
 * the same values.  fa_handle_init_types checks the layout on the running
 * interpreter; if it does not hold, every handle copies its context, as
 * asyncio.Handle does. */
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars;
    PyObject *ctx_weakreflist;
    int ctx_entered;
} fa_context_view;

static int ctx_view_ok = 0;

static inline PyObject *
ctx_vars(PyObject *ctx)
{
    return ((fa_context_view *)ctx)->ctx_vars;
}

/* Does fa_context_view match this interpreter's contexts?  Copies share
 * their mapping; setting a variable in one replaces its mapping only; the
 * thread state's current context is the one entered.  1 if so, 0 if not
 * (or on an error, cleared: the check only enables a shortcut). */
static int
ctx_view_check(void)
{
    PyObject *a = NULL, *b = NULL, *var = NULL, *tok = NULL;
    PyObject *a_vars;
    int ok = 0, entered = 0;

    if (PyContext_Type.tp_basicsize != (Py_ssize_t)sizeof(fa_context_view)) {
        return 0;
    }
    a = PyContext_New();
    b = a != NULL ? PyContext_Copy(a) : NULL;
    var = PyContextVar_New("flaskasync_probe", NULL);
    if (b == NULL || var == NULL) {
        goto done;
    }
    a_vars = ctx_vars(a);
    if (a_vars == NULL || ctx_vars(b) != a_vars || strcmp(Py_TYPE(a_vars)->tp_name, "hamt") != 0) {
        goto done;
    }
    if (PyContext_Enter(b) < 0) {
        goto done;
    }
    entered = 1;
    if (PyThreadState_Get()->context != b) {
        goto done;
    }
    tok = PyContextVar_Set(var, Py_None);
    if (tok == NULL) {
        goto done;
    }
    ok = ctx_vars(a) == a_vars && ctx_vars(b) != a_vars && ctx_vars(b) != NULL &&
         Py_TYPE(ctx_vars(b)) == Py_TYPE(a_vars);
done:
    if (entered && PyContext_Exit(b) < 0) {
        ok = 0;
    }
    Py_XDECREF(tok);
    Py_XDECREF(var);
    Py_XDECREF(b);
    Py_XDECREF(a);
    PyErr_Clear();
    return ok;
}

/* The variable mapping a context holds (borrowed), to tell whether it
 * changed; NULL if this interpreter's contexts cannot be read so. */
PyObject *
fa_context_vars(PyObject *ctx)
{
    return ctx_view_ok ? ctx_vars(ctx) : NULL;
}

/* The context for a one-shot callback scheduled now without context=: a
 * pristine copy of the current context, the loop's last one if the
 * current context has not changed since (same mapping), so that callbacks
 * scheduled in a row share one.  New reference. */
static PyObject *
shared_context(fa_loop *loop)
{
    PyObject *cur = PyThreadState_Get()->context;
    PyObject *copy;
    if (cur != NULL && loop->last_ctx != NULL && ctx_vars(cur) == ctx_vars(loop->last_ctx)) {
        return Py_NewRef(loop->last_ctx);
    }
    copy = PyContext_CopyCurrent();
    if (copy == NULL) {
        return NULL;
    }
    Py_XSETREF(loop->last_ctx, Py_NewRef(copy));
    return copy;
}

/* The Context the callback runs in (borrowed), made from the shared one
 * the first time it is needed: a copy of it, never the shared object,
 * which other callbacks copy too.  NULL with an exception on failure. */
static PyObject *
handle_context(fa_handle *h)
{
    if (h->context == NULL) {
        PyObject *shared = h->ctx_shared;
        if (shared == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "handle has no context");
            return NULL;
        }
        h->context = PyContext_Copy(shared);
        if (h->context == NULL) {
            return NULL;
        }
        h->ctx_shared = NULL;
        Py_DECREF(shared);
    }
    return h->context;
}

/* ------------------------------------------------------------ life */

static fa_handle *
handle_alloc(fa_loop *loop, PyTypeObject *tp, PyObject *callback, PyObject *args)
{
    fa_state *st = loop->st;
    fa_handle *h = st->free_handles;
    if (h != NULL) {
        st->free_handles = h->next_free;
        st->n_free_handles--;
        (void)PyObject_Init((PyObject *)h, tp);
    }
    else {
        h = PyObject_GC_New(fa_handle, tp);
        if (h == NULL) {
            return NULL;
        }
    }
    st->live_handles++;
    h->args = (args != NULL && PyTuple_GET_SIZE(args) > 0) ? Py_NewRef(args) : NULL;
    h->callback = Py_NewRef(callback);
    h->cancelled_slot = NULL;
    h->context = NULL;
    h->loop = (fa_loop *)Py_NewRef(loop);
    h->repr = NULL;
    h->source_traceback = NULL;
#if !FA_MANAGED_WEAKREF
    h->weakreflist = NULL;
#endif
    h->timer_slots[0] = h->timer_slots[1] = NULL;
    h->ctx_shared = NULL;
    h->when = 0.0;
    h->seq = 0;
    h->heap_index = -1;
    h->cancelled = 0;
    h->queued = 0;
    h->is_timer = 0;
    h->scheduled = 0;
    h->fd_wait = 0;
    h->next_free = NULL;
    PyObject_GC_Track(h);
    return h;
}

static int
handle_finish(fa_handle *h)
{
    if (h->loop->debug) {
        h->source_traceback = PyObject_CallNoArgs(h->loop->st->extract_stack);
        if (h->source_traceback == NULL) {
            return -1;
        }
    }
    return 0;
}

/* A handle with a context of its own: context, or a copy of the current
 * one.  For callbacks that may run more than once (fd watchers, transport
 * read/write handles): what a run sets stays for the next, as in asyncio. */
fa_handle *
fa_handle_new(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
              PyObject *args, PyObject *context)
{
    fa_handle *h = handle_alloc(loop, tp, callback, args);
    if (h == NULL) {
        return NULL;
    }
    if (context == NULL || context == Py_None) {
        /* asyncio.Handle copies the current context when none is given. */
        h->context = PyContext_CopyCurrent();
        if (h->context == NULL) {
            Py_DECREF(h);
            return NULL;
        }
    }
    else {
        h->context = Py_NewRef(context);
    }
    if (handle_finish(h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

/* A handle for a callback that runs at most once (call_soon, call_later,
 * call_at, call_soon_threadsafe).  Without a context, it shares a pristine
 * copy of the current one with the other callbacks scheduled in the same
 * context, and runs in a copy made when it runs: the callback sees the
 * context current when it was scheduled, and what it sets stays in its
 * own copy, as with asyncio's copy at scheduling time.  The copy at run
 * time usually reuses the context freed by the previous callback, where
 * one copy per scheduled callback would be a new object for the GC. */
fa_handle *
fa_handle_new_oneshot(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
                      PyObject *args, PyObject *context)
{
    fa_handle *h;
    if (!ctx_view_ok || (context != NULL && context != Py_None)) {
        return fa_handle_new(loop, tp, callback, args, context);
    }
    h = handle_alloc(loop, tp, callback, args);
    if (h == NULL) {
        return NULL;
    }
    h->ctx_shared = shared_context(loop);
    if (h->ctx_shared == NULL || handle_finish(h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

static int
handle_traverse(fa_handle *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    Py_VISIT(h->callback);
    Py_VISIT(h->args);
    Py_VISIT(h->context);
    Py_VISIT(h->ctx_shared);
    Py_VISIT((PyObject *)h->loop);
    Py_VISIT(h->source_traceback);
    Py_VISIT(h->repr);
    return 0;
}

static int
handle_clear(fa_handle *h)
{
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
    Py_CLEAR(h->context);
    Py_CLEAR(h->ctx_shared);
    Py_CLEAR(h->loop);
    Py_CLEAR(h->source_traceback);
    Py_CLEAR(h->repr);
    return 0;
}

static void
handle_dealloc(fa_handle *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    fa_state *st = fa_state_of_own_type(tp);
    PyObject_GC_UnTrack(h);
#if FA_MANAGED_WEAKREF
    PyObject_ClearWeakRefs((PyObject *)h);
#else
    if (h->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)h);
    }
#endif
    (void)handle_clear(h);
    if (st != NULL) {
        st->live_handles--;
    }
    if (st != NULL && !st->handles_closed && st->n_free_handles < FA_HANDLE_FREE_MAX) {
        /* Keep the memory; the type reference goes (PyObject_Init takes a
         * new one on reuse). */
        h->next_free = st->free_handles;
        st->free_handles = h;
        st->n_free_handles++;
    }
    else {
        PyErr_Clear(); /* PyType_GetModuleState cannot fail for our types */
        tp->tp_free(h);
    }
    Py_DECREF(tp);
}

/* Module teardown: release the kept memory, and keep no more. */
void
fa_handle_clear_free_list(fa_state *st)
{
    st->handles_closed = 1;
    while (st->free_handles != NULL) {
        fa_handle *h = st->free_handles;
        st->free_handles = h->next_free;
        PyObject_GC_Del(h);
    }
    st->n_free_handles = 0;
}

/* format_helpers._format_callback_source(callback, args[, debug=loop's
 * debug flag]), as asyncio.Handle formats itself on this Python. */
PyObject *
fa_format_callback(fa_handle *h)
{
    fa_state *st = h->loop->st;
    PyObject *argv[3] = {h->callback, h->args ? h->args : Py_None,
                         h->loop->debug ? Py_True : Py_False};
    return PyObject_Vectorcall(st->format_cb_source, argv, 2, st->kw_debug);
}

/* Route the exception currently set to the loop's exception handler, as
 * asyncio.Handle._run does.  Returns -1 only for KeyboardInterrupt and
 * SystemExit (and failures raising them), which must propagate. */
static int
handle_report_exception(fa_handle *h)
{
    PyObject *value;
    PyObject *cbrepr = NULL, *msg = NULL;
    fa_loop *loop = (fa_loop *)Py_NewRef(h->loop);

    if (fa_is_fatal_exception()) {
        Py_DECREF(loop);
        return -1;
    }
    value = fa_fetch_exception();
    cbrepr = fa_format_callback(h);
    if (cbrepr == NULL) {
        goto error;
    }
    msg = PyUnicode_FromFormat("Exception in callback %U", cbrepr);
    if (msg == NULL) {
        goto error;
    }
    if (fa_call_exception_handler((PyObject *)loop, msg, value, "handle", (PyObject *)h,
                                  "source_traceback", h->source_traceback, NULL) < 0) {
        goto error;
    }
    Py_DECREF(msg);
    Py_DECREF(cbrepr);
    Py_XDECREF(value);
    Py_DECREF(loop);
    return 0;

error:
    Py_XDECREF(msg);
    Py_XDECREF(cbrepr);
    Py_XDECREF(value);
    Py_DECREF(loop);
    if (fa_is_fatal_exception()) {
        return -1;
    }
    /* The handler itself failed: never lose it, never stop the loop. */
    PyErr_WriteUnraisable((PyObject *)h);
    return 0;
}

/* Run the callback in its context.  0 on success or a handled error, -1 if
 * KeyboardInterrupt/SystemExit must propagate out of the loop. */
int
fa_handle_run(fa_handle *h)
{
    PyObject *cb, *ctx, *args, *res;

    ctx = handle_context(h);
    if (ctx == NULL) {
        return handle_report_exception(h);
    }
    /* Own everything the call uses: the callback may cancel its own handle,
     * which drops the handle's references to it and its arguments. */
    cb = Py_NewRef(h->callback);
    Py_INCREF(ctx);
    args = Py_XNewRef(h->args);
    if (PyContext_Enter(ctx) < 0) {
        res = NULL;
    }
    else {
        if (args == NULL) {
            res = PyObject_CallNoArgs(cb);
        }
        else {
            res = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0),
                                      PyTuple_GET_SIZE(args), NULL);
        }
        if (PyContext_Exit(ctx) < 0) {
            Py_XDECREF(res);
            res = NULL;
        }
    }
    Py_DECREF(cb);
    Py_DECREF(ctx);
    Py_XDECREF(args);
    if (res == NULL) {
        return handle_report_exception(h);
    }
    Py_DECREF(res);
    return 0;
}

static PyObject *
handle_cancel(fa_handle *h, PyObject *Py_UNUSED(ignored))
{
    if (!h->cancelled) {
        h->cancelled = 1;
        if (h->is_timer && h->scheduled && h->loop != NULL) {
            fa_timer_remove(h->loop, h);
        }
        if (h->loop != NULL && h->loop->debug && h->repr == NULL) {
            /* Debug mode keeps a representation for slow-callback logs. */
            h->repr = PyObject_Repr((PyObject *)h);
            if (h->repr == NULL) {
                return NULL;
            }
        }
        /* Drop the callback and its arguments now, as asyncio does, so a
         * cancelled handle does not keep them alive. */
        Py_CLEAR(h->args);
        Py_SETREF(h->callback, Py_NewRef(Py_None));
    }
    Py_RETURN_NONE;
}

static PyObject *
handle_cancelled(fa_handle *h, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(h->cancelled);
}

static PyObject *
handle_get_context(fa_handle *h, PyObject *Py_UNUSED(ignored))
{
    return Py_XNewRef(handle_context(h));
}

static PyObject *
handle_run_py(fa_handle *h, PyObject *Py_UNUSED(ignored))
{
    if (fa_handle_run(h) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
handle_when(fa_handle *h, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(h->when);
}

static PyObject *
handle_new_py(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    PyErr_Format(PyExc_TypeError,
                 "cannot create '%s' instances directly; use loop.call_soon() "
                 "or loop.call_later()", tp->tp_name);
    return NULL;
}

/* asyncio's own Handle/TimerHandle code (repr, and TimerHandle's ordering
 * and hash) reads the slots by name: the getsets answer them from the C
 * fields.  They are read-only. */

static PyObject *
handle_get_callback(fa_handle *h, void *Py_UNUSED(c))
{
    return Py_NewRef(h->callback != NULL ? h->callback : Py_None);
}

/* asyncio keeps the tuple it was given (() for none) and None once cancelled. */
static PyObject *
handle_get_args(fa_handle *h, void *Py_UNUSED(c))
{
    if (h->args != NULL) {
        return Py_NewRef(h->args);
    }
    if (h->cancelled || h->callback == NULL) {
        Py_RETURN_NONE;
    }
    return PyTuple_New(0);
}

static PyObject *
handle_get_loop(fa_handle *h, void *Py_UNUSED(c))
{
    return Py_NewRef(h->loop != NULL ? (PyObject *)h->loop : Py_None);
}

static PyObject *
handle_get_context_attr(fa_handle *h, void *Py_UNUSED(c))
{
    if (h->context == NULL && h->ctx_shared == NULL) {
        Py_RETURN_NONE;
    }
    return Py_XNewRef(handle_context(h));
}

static PyObject *
handle_get_source_traceback(fa_handle *h, void *Py_UNUSED(c))
{
    return Py_NewRef(h->source_traceback != NULL ? h->source_traceback : Py_None);
}

static PyObject *
handle_get_repr(fa_handle *h, void *Py_UNUSED(c))
{
    return Py_NewRef(h->repr != NULL ? h->repr : Py_None);
}

static PyObject *
handle_get_cancelled(fa_handle *h, void *Py_UNUSED(c))
{
    return PyBool_FromLong(h->cancelled);
}

static PyObject *
handle_get_when(fa_handle *h, void *Py_UNUSED(c))
{
    return PyFloat_FromDouble(h->when);
}

static PyObject *
handle_get_scheduled(fa_handle *h, void *Py_UNUSED(c))
{
    return PyBool_FromLong(h->scheduled);
}

#define HANDLE_GETSETS                                                                  \
    {"_callback", (getter)handle_get_callback, NULL, NULL, NULL},                      \
    {"_args", (getter)handle_get_args, NULL, NULL, NULL},                              \
    {"_loop", (getter)handle_get_loop, NULL, NULL, NULL},                              \
    {"_context", (getter)handle_get_context_attr, NULL, NULL, NULL},                   \
    {"_source_traceback", (getter)handle_get_source_traceback, NULL, NULL, NULL},      \
    {"_repr", (getter)handle_get_repr, NULL, NULL, NULL},                              \
    {"_cancelled", (getter)handle_get_cancelled, NULL, NULL, NULL}

static PyGetSetDef handle_getset[] = {
    HANDLE_GETSETS,
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef timer_getset[] = {
    HANDLE_GETSETS,
    {"_when", (getter)handle_get_when, NULL, NULL, NULL},
    {"_scheduled", (getter)handle_get_scheduled, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define HANDLE_METHODS                                                                  \
    {"cancel", (PyCFunction)handle_cancel, METH_NOARGS,                                 \
     "Cancel the callback. If it has already run or been cancelled, do nothing."},     \
    {"cancelled", (PyCFunction)handle_cancelled, METH_NOARGS,                           \
     "Return True if the callback was cancelled."},                                    \
    {"get_context", (PyCFunction)handle_get_context, METH_NOARGS,                       \
     "Return the contextvars.Context the callback runs in."},                          \
    {"_run", (PyCFunction)handle_run_py, METH_NOARGS, "Run the callback now."}

static PyMethodDef handle_methods[] = {
    HANDLE_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyMethodDef timer_methods[] = {
    HANDLE_METHODS,
    {"when", (PyCFunction)handle_when, METH_NOARGS,
     "Return the scheduled time, on the loop's time() clock."},
    {NULL, NULL, 0, NULL},
};

/* No tp_repr, tp_richcompare or tp_hash: asyncio's own __repr__ (and
 * TimerHandle's comparisons and hash) are inherited. */
static PyType_Slot handle_slots[] = {
    {Py_tp_doc, "A callback scheduled by loop.call_soon(); an asyncio.Handle."},
    {Py_tp_new, handle_new_py},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {0, NULL},
};

static PyType_Spec handle_spec = {
    .name = "flaskasync._core.Handle",
    .basicsize = sizeof(fa_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = handle_slots,
};

static PyType_Slot timer_slots[] = {
    {Py_tp_doc, "A callback scheduled by loop.call_later()/call_at(); an asyncio.TimerHandle."},
    {Py_tp_new, handle_new_py},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_methods, timer_methods},
    {Py_tp_getset, timer_getset},
    {0, NULL},
};

static PyType_Spec timer_spec = {
    .name = "flaskasync._core.TimerHandle",
    .basicsize = sizeof(fa_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = timer_slots,
};

/* ------------------------------------------------------------ the types */

/* Where fa_handle keeps room for the slots of asyncio's classes. */
static const struct {
    const char *owner, *name;
    Py_ssize_t offset;
} slot_layout[] = {
    {"Handle", "_args", offsetof(fa_handle, args)},
    {"Handle", "_callback", offsetof(fa_handle, callback)},
    {"Handle", "_cancelled", offsetof(fa_handle, cancelled_slot)},
    {"Handle", "_context", offsetof(fa_handle, context)},
    {"Handle", "_loop", offsetof(fa_handle, loop)},
    {"Handle", "_repr", offsetof(fa_handle, repr)},
    {"Handle", "_source_traceback", offsetof(fa_handle, source_traceback)},
    {"TimerHandle", "_scheduled", offsetof(fa_handle, timer_slots[0])},
    {"TimerHandle", "_when", offsetof(fa_handle, timer_slots[1])},
};

static int
layout_error(const char *what)
{
    PyErr_Format(PyExc_ImportError,
                 "flaskasync: asyncio.events.%s is not laid out as this build of flaskasync "
                 "expects (a Python version it does not support?)", what);
    return -1;
}

/* Check that asyncio's Handle and TimerHandle keep their slots where
 * fa_handle reserves them, and nothing else: ImportError otherwise. */
static int
check_slot_layout(PyObject *events, PyTypeObject *handle, PyTypeObject *timer)
{
    for (size_t i = 0; i < sizeof(slot_layout) / sizeof(slot_layout[0]); i++) {
        PyObject *owner = PyObject_GetAttrString(events, slot_layout[i].owner);
        PyObject *descr = NULL;
        int ok = 0;
        if (owner != NULL && PyType_Check(owner)) {
            /* The descriptor in the class's own dict, not an inherited one. */
            descr = PyDict_GetItemString(((PyTypeObject *)owner)->tp_dict, slot_layout[i].name);
            ok = descr != NULL && PyObject_TypeCheck(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->offset == slot_layout[i].offset;
        }
        Py_XDECREF(owner);
        if (!ok) {
            PyErr_Clear();
            return layout_error(slot_layout[i].owner);
        }
    }
#if FA_MANAGED_WEAKREF
    if (!(handle->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF) ||
#else
    if (handle->tp_weaklistoffset != offsetof(fa_handle, weakreflist) ||
#endif
        handle->tp_dictoffset != 0 || handle->tp_itemsize != 0 ||
        handle->tp_basicsize != (Py_ssize_t)offsetof(fa_handle, timer_slots)) {
        return layout_error("Handle");
    }
    if (!PyType_IsSubtype(timer, handle) || timer->tp_dictoffset != 0 ||
        timer->tp_itemsize != 0 ||
        timer->tp_basicsize != (Py_ssize_t)offsetof(fa_handle, ctx_shared)) {
        return layout_error("TimerHandle");
    }
    return 0;
}

static PyTypeObject *
make_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base, const char *export)
{
    PyObject *bases = PyTuple_Pack(1, (PyObject *)base);
    PyObject *t;
    if (bases == NULL) {
        return NULL;
    }
    t = PyType_FromModuleAndSpec(module, spec, bases);
    Py_DECREF(bases);
    if (t != NULL && PyModule_AddObjectRef(module, export, t) < 0) {
        Py_CLEAR(t);
    }
    return (PyTypeObject *)t;
}

/* Create Handle and TimerHandle, subclasses of asyncio.Handle and
 * asyncio.TimerHandle (as the selector loop's handles are instances of
 * them), after checking the slot layout they reproduce. */
int
fa_handle_init_types(PyObject *module, fa_state *st)
{
    PyObject *events = PyImport_ImportModule("asyncio.events");
    PyObject *handle = NULL, *timer = NULL;
    int r = -1;
    if (events == NULL) {
        return -1;
    }
    handle = PyObject_GetAttrString(events, "Handle");
    timer = PyObject_GetAttrString(events, "TimerHandle");
    if (handle == NULL || timer == NULL) {
        goto done;
    }
    if (!PyType_Check(handle) || !PyType_Check(timer)) {
        layout_error("Handle");
        goto done;
    }
    if (check_slot_layout(events, (PyTypeObject *)handle, (PyTypeObject *)timer) < 0) {
        goto done;
    }
    st->HandleType = make_type(module, &handle_spec, (PyTypeObject *)handle, "Handle");
    if (st->HandleType == NULL) {
        goto done;
    }
    st->TimerHandleType = make_type(module, &timer_spec, (PyTypeObject *)timer, "TimerHandle");
    if (st->TimerHandleType == NULL) {
        goto done;
    }
    ctx_view_ok = ctx_view_check();
    r = 0;
done:
    Py_XDECREF(timer);
    Py_XDECREF(handle);
    Py_DECREF(events);
    return r;
}
