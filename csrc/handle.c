/* Handle and TimerHandle: the callbacks the loop runs.  They mirror
 * asyncio.Handle / asyncio.TimerHandle: cancel(), cancelled(), get_context(),
 * when(), and an exception in the callback goes to the loop's exception
 * handler instead of stopping the loop. */
#include "fa.h"

/* Live handle count, for the leak tests (the GIL protects it). */
Py_ssize_t fa_live_handles = 0;

fa_handle *
fa_handle_new(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
              PyObject *args, PyObject *context)
{
    fa_handle *h = PyObject_GC_New(fa_handle, tp);
    if (h == NULL) {
        return NULL;
    }
    fa_live_handles++;
    h->callback = Py_NewRef(callback);
    h->args = (args != NULL && PyTuple_GET_SIZE(args) > 0) ? Py_NewRef(args) : NULL;
    h->context = NULL;
    h->loop = (fa_loop *)Py_NewRef(loop);
    h->source_traceback = NULL;
    h->weakreflist = NULL;
    h->repr = NULL;
    h->queued = 0;
    h->cancelled = 0;
    h->is_timer = 0;
    h->scheduled = 0;
    h->when = 0.0;
    h->seq = 0;
    h->heap_index = -1;
    PyObject_GC_Track(h);
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
    if (loop->debug) {
        h->source_traceback = PyObject_CallNoArgs(loop->st->extract_stack);
        if (h->source_traceback == NULL) {
            Py_DECREF(h);
            return NULL;
        }
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
    Py_CLEAR(h->loop);
    Py_CLEAR(h->source_traceback);
    Py_CLEAR(h->repr);
    return 0;
}

static void
handle_dealloc(fa_handle *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    if (h->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)h);
    }
    (void)handle_clear(h);
    fa_live_handles--;
    tp->tp_free(h);
    Py_DECREF(tp);
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
    fa_state *st = h->loop->st;
    PyObject *value;
    PyObject *ctx = NULL, *cbrepr = NULL, *msg = NULL, *res = NULL;
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
    ctx = PyDict_New();
    if (ctx == NULL || PyDict_SetItem(ctx, st->s_message, msg) < 0 ||
        PyDict_SetItem(ctx, st->s_exception_key, value) < 0 ||
        PyDict_SetItem(ctx, st->s_handle, (PyObject *)h) < 0) {
        goto error;
    }
    if (h->source_traceback != NULL &&
        PyDict_SetItem(ctx, st->s_source_traceback, h->source_traceback) < 0) {
        goto error;
    }
    res = PyObject_CallMethodOneArg((PyObject *)loop, st->s_call_exception_handler, ctx);
    if (res == NULL) {
        goto error;
    }
    Py_DECREF(res);
    Py_DECREF(ctx);
    Py_DECREF(msg);
    Py_DECREF(cbrepr);
    Py_XDECREF(value);
    Py_DECREF(loop);
    return 0;

error:
    Py_XDECREF(ctx);
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
    /* Own everything the call uses: the callback may cancel its own handle,
     * which drops the handle's references to it and its arguments. */
    PyObject *cb = Py_NewRef(h->callback);
    PyObject *ctx = Py_NewRef(h->context);
    PyObject *args = Py_XNewRef(h->args);
    PyObject *res;

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
    return Py_NewRef(h->context);
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
handle_repr(fa_handle *h)
{
    const char *name = h->is_timer ? "TimerHandle" : "Handle";
    if (h->repr != NULL) {
        return Py_NewRef(h->repr);
    }
    PyObject *parts = NULL, *cb = NULL, *sep = NULL, *joined = NULL, *res = NULL;
    PyObject *item;

    parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    item = PyUnicode_FromString(name);
    if (item == NULL || PyList_Append(parts, item) < 0) {
        Py_XDECREF(item);
        goto done;
    }
    Py_DECREF(item);
    if (h->cancelled) {
        item = PyUnicode_FromString("cancelled");
        if (item == NULL || PyList_Append(parts, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
    }
    if (h->is_timer) {
        PyObject *w = PyFloat_FromDouble(h->when);
        if (w == NULL) {
            goto done;
        }
        item = PyUnicode_FromFormat("when=%R", w);
        Py_DECREF(w);
        if (item == NULL || PyList_Append(parts, item) < 0) {
            Py_XDECREF(item);
            goto done;
        }
        Py_DECREF(item);
    }
    if (h->callback != NULL && h->callback != Py_None && h->loop != NULL) {
        cb = fa_format_callback(h);
        if (cb == NULL || PyList_Append(parts, cb) < 0) {
            goto done;
        }
    }
    sep = PyUnicode_FromString(" ");
    if (sep == NULL) {
        goto done;
    }
    joined = PyUnicode_Join(sep, parts);
    if (joined == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("<%U>", joined);
done:
    Py_XDECREF(parts);
    Py_XDECREF(cb);
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    return res;
}

static PyObject *
timer_richcompare(fa_handle *a, PyObject *bo, int op)
{
    if (!PyObject_TypeCheck(bo, Py_TYPE(a)) && !PyObject_TypeCheck((PyObject *)a, Py_TYPE(bo))) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    fa_handle *b = (fa_handle *)bo;
    if (!b->is_timer) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (op == Py_EQ || op == Py_NE) {
        int eq = (a == b) || (a->when == b->when && a->callback == b->callback &&
                              a->cancelled == b->cancelled);
        if (eq && a != b) {
            eq = PyObject_RichCompareBool(a->args ? a->args : Py_None,
                                          b->args ? b->args : Py_None, Py_EQ);
            if (eq < 0) {
                return NULL;
            }
        }
        return PyBool_FromLong(op == Py_EQ ? eq : !eq);
    }
    Py_RETURN_RICHCOMPARE(a->when, b->when, op);
}

/* hash(self._when), as asyncio.TimerHandle: the hash of a float (through
 * the public API; _Py_HashDouble is private). */
static Py_hash_t
timer_hash(fa_handle *h)
{
    PyObject *when = PyFloat_FromDouble(h->when);
    Py_hash_t r;
    if (when == NULL) {
        return -1;
    }
    r = PyObject_Hash(when);
    Py_DECREF(when);
    return r;
}

static PyObject *
handle_new_py(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    PyErr_Format(PyExc_TypeError,
                 "cannot create '%s' instances directly; use loop.call_soon() "
                 "or loop.call_later()", tp->tp_name);
    return NULL;
}

static PyMethodDef handle_methods[] = {
    {"cancel", (PyCFunction)handle_cancel, METH_NOARGS,
     "Cancel the callback. If it has already run or been cancelled, do nothing."},
    {"cancelled", (PyCFunction)handle_cancelled, METH_NOARGS,
     "Return True if the callback was cancelled."},
    {"get_context", (PyCFunction)handle_get_context, METH_NOARGS,
     "Return the contextvars.Context the callback runs in."},
    {"_run", (PyCFunction)handle_run_py, METH_NOARGS, "Run the callback now."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef timer_methods[] = {
    {"when", (PyCFunction)handle_when, METH_NOARGS,
     "Return the scheduled time, on the loop's time() clock."},
    {NULL, NULL, 0, NULL},
};

/* The object fields read as asyncio.Handle's attributes: None when unset
 * (structmember's T_OBJECT did that; 3.12 deprecates it). */
#define HANDLE_FIELD_GETTER(field)                                          \
    static PyObject *handle_field_##field(fa_handle *h, void *Py_UNUSED(c)) \
    {                                                                       \
        return Py_NewRef(h->field != NULL ? (PyObject *)h->field : Py_None); \
    }
HANDLE_FIELD_GETTER(callback)
HANDLE_FIELD_GETTER(args)
HANDLE_FIELD_GETTER(loop)
HANDLE_FIELD_GETTER(context)
HANDLE_FIELD_GETTER(source_traceback)
#undef HANDLE_FIELD_GETTER

static PyGetSetDef handle_getset[] = {
    {"_callback", (getter)handle_field_callback, NULL, NULL, NULL},
    {"_args", (getter)handle_field_args, NULL, NULL, NULL},
    {"_loop", (getter)handle_field_loop, NULL, NULL, NULL},
    {"_context", (getter)handle_field_context, NULL, NULL, NULL},
    {"_source_traceback", (getter)handle_field_source_traceback, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef handle_members[] = {
    {"_cancelled", Py_T_BOOL, offsetof(fa_handle, cancelled), Py_READONLY, NULL},
    {"_scheduled", Py_T_BOOL, offsetof(fa_handle, scheduled), Py_READONLY, NULL},
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(fa_handle, weakreflist), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_doc, "A callback scheduled by loop.call_soon(); see asyncio.Handle."},
    {Py_tp_new, handle_new_py},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_repr, handle_repr},
    {Py_tp_methods, handle_methods},
    {Py_tp_members, handle_members},
    {Py_tp_getset, handle_getset},
    {0, NULL},
};

PyType_Spec fa_handle_spec = {
    .name = "flaskasync._core.Handle",
    .basicsize = sizeof(fa_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = handle_slots,
};

static PyType_Slot timer_slots[] = {
    {Py_tp_doc, "A callback scheduled by loop.call_later()/call_at(); see asyncio.TimerHandle."},
    {Py_tp_methods, timer_methods},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_richcompare, timer_richcompare},
    {Py_tp_hash, timer_hash},
    {0, NULL},
};

PyType_Spec fa_timer_handle_spec = {
    .name = "flaskasync._core.TimerHandle",
    .basicsize = sizeof(fa_handle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = timer_slots,
};
