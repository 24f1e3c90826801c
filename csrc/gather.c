/* flaskasync.gather(): asyncio.gather's observable semantics in C.
 *
 * The outer future is an instance of _GatheringFuture, a subclass of the C
 * asyncio.Future created at import time.  Its extra fields sit at the end
 * of the object, after the base object, because the base layout is private
 * to CPython: only its size is known, at run time.  The type is final, so
 * an instance's type is _GatheringFuture and the fields are at its
 * tp_basicsize minus their size (checked when the type is made): nothing
 * process-wide holds the offset. */
#include "gather.h"
#include "loop.h"
#include "state.h"
#include "util.h"

typedef struct {
    PyObject *children;     /* list of futures, in argument order */
    PyObject *loop;
    PyObject *cur_task;     /* 3.14+: the task awaiting the children (call graph) */
    Py_ssize_t nfuts;       /* distinct children */
    Py_ssize_t nfinished;
    int return_exceptions;
    int cancel_requested;
} gather_fields;

static inline gather_fields *
GF(PyObject *o)
{
    return (gather_fields *)((char *)o + Py_TYPE(o)->tp_basicsize - sizeof(gather_fields));
}

/* The methods gather calls on its children and on itself.  On the exact C
 * asyncio.Future and asyncio.Task (and _GatheringFuture, which overrides
 * none of them) they are called through the types' own method
 * descriptors: the same C functions a method call finds, without looking
 * up the name on every call.  Any other type gets a method call by name,
 * as asyncio.gather makes. */
enum {
    M_DONE,
    M_CANCELLED,
    M_EXCEPTION,
    M_RESULT,
    M_MAKE_CANCELLED_ERROR,
    M_ADD_DONE_CALLBACK,
    M_SET_RESULT,
    M_SET_EXCEPTION,
    M_N
};

struct fa_gather_meths {
    PyTypeObject *types[2];   /* asyncio.Future, asyncio.Task */
    PyObject *names[M_N];
    PyObject *descr[2][M_N];  /* NULL where a type's method is not a C method descriptor */
};

static PyObject *
meth(fa_state *st, int which, PyObject *obj, PyObject *arg)
{
    const struct fa_gather_meths *gm = st->gather_meths;
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject *argv[3] = {NULL, obj, arg};
    size_t nargs = (arg != NULL ? 2 : 1) | PY_VECTORCALL_ARGUMENTS_OFFSET;
    PyObject *d = NULL;
    if (tp == gm->types[0] || tp == st->GatherType) {
        d = gm->descr[0][which];
    }
    else if (tp == gm->types[1]) {
        d = gm->descr[1][which];
    }
    if (d != NULL) {
        return PyObject_Vectorcall(d, argv + 1, nargs, NULL);
    }
    return PyObject_VectorcallMethod(gm->names[which], argv + 1, nargs, NULL);
}

static void
meths_free(struct fa_gather_meths *gm)
{
    for (int t = 0; t < 2; t++) {
        Py_XDECREF(gm->types[t]);
        for (int i = 0; i < M_N; i++) {
            Py_XDECREF(gm->descr[t][i]);
        }
    }
    for (int i = 0; i < M_N; i++) {
        Py_XDECREF(gm->names[i]);
    }
    PyMem_Free(gm);
}

/* The module is freed (m_free, not m_clear: a gather still pending while
 * the module is cleared in a cycle may still call through the table; once
 * the module is freed no _GatheringFuture is left, each holds its type,
 * which holds the module). */
void
fa_gather_free_meths(fa_state *st)
{
    if (st->gather_meths != NULL) {
        meths_free(st->gather_meths);
        st->gather_meths = NULL;
    }
}

/* The table of the C types' method descriptors, owned by the module state. */
static int
meths_init(fa_state *st)
{
    struct fa_gather_meths *gm = PyMem_Calloc(1, sizeof(*gm));
    if (gm == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    gm->types[0] = (PyTypeObject *)Py_NewRef(st->FutureType);
    gm->types[1] = (PyTypeObject *)Py_NewRef(st->TaskType);
    gm->names[M_DONE] = Py_NewRef(st->s_done);
    gm->names[M_CANCELLED] = Py_NewRef(st->s_cancelled);
    gm->names[M_EXCEPTION] = Py_NewRef(st->s_exception);
    gm->names[M_RESULT] = Py_NewRef(st->s_result);
    gm->names[M_MAKE_CANCELLED_ERROR] = Py_NewRef(st->s_make_cancelled_error);
    gm->names[M_ADD_DONE_CALLBACK] = Py_NewRef(st->s_add_done_callback);
    gm->names[M_SET_RESULT] = Py_NewRef(st->s_set_result);
    gm->names[M_SET_EXCEPTION] = Py_NewRef(st->s_set_exception);
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < M_N; i++) {
            PyObject *d = PyObject_GetAttr((PyObject *)gm->types[t], gm->names[i]);
            if (d == NULL) {
                meths_free(gm);
                return -1;
            }
            if (Py_IS_TYPE(d, &PyMethodDescr_Type)) {
                gm->descr[t][i] = d;
            }
            else {
                Py_DECREF(d);
            }
        }
    }
    st->gather_meths = gm;
    return 0;
}

/* The type is visited exactly once along the chain (the 3.9+ rule for heap
 * types): by the base when it is a heap type (asyncio.Future from 3.12 on),
 * else here. */
static int
gather_traverse(PyObject *self, visitproc visit, void *arg)
{
    gather_fields *f = GF(self);
    PyTypeObject *base = Py_TYPE(self)->tp_base;
    Py_VISIT(f->children);
    Py_VISIT(f->loop);
    Py_VISIT(f->cur_task);
    if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
        Py_VISIT(Py_TYPE(self));
    }
    return base->tp_traverse(self, visit, arg);
}

static int
gather_clear(PyObject *self)
{
    gather_fields *f = GF(self);
    Py_CLEAR(f->children);
    Py_CLEAR(f->loop);
    Py_CLEAR(f->cur_task);
    return Py_TYPE(self)->tp_base->tp_clear(self);
}

static void
gather_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyTypeObject *base = tp->tp_base;
    gather_fields *f = GF(self);
    /* An instance owns a reference to its heap type.  A heap base's dealloc
     * (asyncio.Future from 3.12 on) drops it; a static base's (3.11) does
     * not, so it is ours to drop, after the base is done with the object.
     * Read before: the base's dealloc may free the type. */
    int drop_type = !(base->tp_flags & Py_TPFLAGS_HEAPTYPE);
    /* The base finalizes only exact Futures up to 3.11; a second call of
     * the finalizer is a no-op (the object is marked finalized). */
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    Py_CLEAR(f->children);
    Py_CLEAR(f->loop);
    Py_CLEAR(f->cur_task);
    base->tp_dealloc(self);
    if (drop_type) {
        Py_DECREF(tp);
    }
}

static int
is_done(fa_state *st, PyObject *fut)
{
    PyObject *r = meth(st, M_DONE, fut, NULL);
    int v;
    if (r == NULL) {
        return -1;
    }
    v = (r == Py_True);
    Py_DECREF(r);
    return v;
}

static int
is_cancelled(fa_state *st, PyObject *fut)
{
    PyObject *r = meth(st, M_CANCELLED, fut, NULL);
    int v;
    if (r == NULL) {
        return -1;
    }
    v = (r == Py_True);
    Py_DECREF(r);
    return v;
}

/* outer.cancel(msg=None): cancel the children; the outer future finishes
 * when they do, with CancelledError. */
static PyObject *
gather_cancel(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    fa_state *st = fa_state_of_own_type(Py_TYPE(self));
    gather_fields *f = GF(self);
    static const char *const names[] = {"msg"};
    PyObject *msg = NULL;
    int ret = 0;
    if (st == NULL) {
        return NULL;
    }
    if (fa_parse_args("cancel", args, nargs, kwnames, names, 1, 0, 1, &msg) < 0) {
        return NULL;
    }
    if (msg == NULL) {
        msg = Py_None;
    }
    int d = is_done(st, self);
    if (d < 0) {
        return NULL;
    }
    if (d) {
        Py_RETURN_FALSE;
    }
    if (f->children != NULL) {
        PyObject *children = Py_NewRef(f->children);
        PyObject *kwn = PyTuple_Pack(1, st->s_msg);
        if (kwn == NULL) {
            Py_DECREF(children);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(children); i++) {
            PyObject *argv[2] = {PyList_GET_ITEM(children, i), msg};
            PyObject *r = PyObject_VectorcallMethod(st->s_cancel, argv,
                                                    1 | PY_VECTORCALL_ARGUMENTS_OFFSET, kwn);
            if (r == NULL) {
                Py_DECREF(kwn);
                Py_DECREF(children);
                return NULL;
            }
            if (PyObject_IsTrue(r)) {
                ret = 1;
            }
            Py_DECREF(r);
        }
        Py_DECREF(kwn);
        Py_DECREF(children);
    }
    if (ret) {
        /* Propagate the cancellation whatever return_exceptions says. */
        f->cancel_requested = 1;
    }
    return PyBool_FromLong(ret);
}

static PyObject *
set_outer_exception(fa_state *st, PyObject *outer, PyObject *exc)
{
    PyObject *r = meth(st, M_SET_EXCEPTION, outer, exc);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* Done callback of every child: outer is the bound self. */
static PyObject *
gather_child_done(PyObject *outer, PyObject *fut)
{
    fa_state *st = fa_state_of_own_type(Py_TYPE(outer));
    gather_fields *f = GF(outer);
    PyObject *exc, *results = NULL, *last = NULL;
    int d, c;

    if (st == NULL) {
        return NULL;
    }
    f->nfinished++;
    if (f->cur_task != NULL) {
        PyObject *r = PyObject_CallFunctionObjArgs(st->discard_awaited_by, fut, f->cur_task, NULL);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    d = is_done(st, outer);
    if (d < 0) {
        return NULL;
    }
    if (d) {
        /* The outer future already has its outcome: just mark the child's
         * exception as retrieved so it is not logged. */
        c = is_cancelled(st, fut);
        if (c < 0) {
            return NULL;
        }
        if (!c) {
            exc = meth(st, M_EXCEPTION, fut, NULL);
            if (exc == NULL) {
                return NULL;
            }
            Py_DECREF(exc);
        }
        Py_RETURN_NONE;
    }
    if (!f->return_exceptions) {
        c = is_cancelled(st, fut);
        if (c < 0) {
            return NULL;
        }
        if (c) {
            exc = meth(st, M_MAKE_CANCELLED_ERROR, fut, NULL);
        }
        else {
            exc = meth(st, M_EXCEPTION, fut, NULL);
        }
        if (exc == NULL) {
            return NULL;
        }
        if (exc != Py_None) {
            PyObject *r = set_outer_exception(st, outer, exc);
            Py_DECREF(exc);
            return r;
        }
        Py_DECREF(exc);
    }
    if (f->nfinished < f->nfuts || f->children == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *children = Py_NewRef(f->children);
    Py_ssize_t n = PyList_GET_SIZE(children);
    results = PyList_New(n);
    if (results == NULL) {
        Py_DECREF(children);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *child = Py_NewRef(PyList_GET_ITEM(children, i));
        PyObject *res;
        Py_XSETREF(last, child);
        if (!f->return_exceptions && (Py_TYPE(child) == st->gather_meths->types[0]
                                      || Py_TYPE(child) == st->gather_meths->types[1])) {
            /* Without return_exceptions, every child's callback found it
             * neither cancelled nor failed (else the outer future would be
             * done): asyncio's cancelled() and exception() calls would
             * return False and None, with no effect on a C future. */
            res = meth(st, M_RESULT, child, NULL);
            if (res == NULL) {
                goto error;
            }
            PyList_SET_ITEM(results, i, res);
            continue;
        }
        c = is_cancelled(st, child);
        if (c < 0) {
            goto error;
        }
        if (c) {
            /* A cancelled child gives CancelledError(its message) in the
             * results, as asyncio does (without calling
             * _make_cancelled_error, which is kept for the outer). */
            PyObject *msg = PyObject_GetAttrString(child, "_cancel_message");
            if (msg == NULL) {
                goto error;
            }
            if (msg == Py_None) {
                Py_SETREF(msg, PyUnicode_FromString(""));
                if (msg == NULL) {
                    goto error;
                }
            }
            res = PyObject_CallOneArg(st->CancelledError, msg);
            Py_DECREF(msg);
        }
        else {
            res = meth(st, M_EXCEPTION, child, NULL);
            if (res == Py_None) {
                Py_DECREF(res);
                res = meth(st, M_RESULT, child, NULL);
            }
        }
        if (res == NULL) {
            goto error;
        }
        PyList_SET_ITEM(results, i, res);
    }
    PyObject *r;
    if (f->cancel_requested) {
        exc = meth(st, M_MAKE_CANCELLED_ERROR, last, NULL);
        if (exc == NULL) {
            goto error;
        }
        r = set_outer_exception(st, outer, exc);
        Py_DECREF(exc);
    }
    else {
        r = meth(st, M_SET_RESULT, outer, results);
    }
    Py_DECREF(results);
    Py_DECREF(children);
    Py_XDECREF(last);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    /* Break the outer -> children -> callbacks -> outer cycle now. */
    Py_CLEAR(f->children);
    Py_RETURN_NONE;
error:
    Py_XDECREF(results);
    Py_DECREF(children);
    Py_XDECREF(last);
    return NULL;
}

static PyMethodDef child_done_def = {"_gather_done_callback", gather_child_done, METH_O, NULL};

static PyMethodDef gather_methods[] = {
    {"cancel", (PyCFunction)(void (*)(void))gather_cancel, METH_FASTCALL | METH_KEYWORDS,
     "Cancel every child; the gather then finishes with CancelledError."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
gather_get_children(PyObject *self, void *Py_UNUSED(c))
{
    PyObject *ch = GF(self)->children;
    return ch ? PyList_AsTuple(ch) : PyTuple_New(0);
}

static PyObject *
gather_get_cancel_requested(PyObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(GF(self)->cancel_requested);
}

static PyGetSetDef gather_getset[] = {
    {"_children", (getter)gather_get_children, NULL, NULL, NULL},
    {"_cancel_requested", (getter)gather_get_cancel_requested, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

int
fa_gather_init_type(PyObject *module, fa_state *st)
{
    PyTypeObject *base = (PyTypeObject *)st->FutureType;
    PyType_Slot slots[] = {
        {Py_tp_doc, "The future returned by flaskasync.gather()."},
        {Py_tp_dealloc, gather_dealloc},
        {Py_tp_traverse, gather_traverse},
        {Py_tp_clear, gather_clear},
        {Py_tp_methods, gather_methods},
        {Py_tp_getset, gather_getset},
        {0, NULL},
    };
    PyType_Spec spec = {
        .name = "flaskasync._core._GatheringFuture",
        .basicsize = (int)(base->tp_basicsize + sizeof(gather_fields)),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
        .slots = slots,
    };
    PyObject *bases;
    if (!(base->tp_flags & Py_TPFLAGS_HAVE_GC) || base->tp_itemsize != 0) {
        PyErr_SetString(PyExc_ImportError, "asyncio.Future has an unexpected layout");
        return -1;
    }
    bases = PyTuple_Pack(1, (PyObject *)base);
    if (bases == NULL) {
        return -1;
    }
    st->GatherType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, bases);
    Py_DECREF(bases);
    if (st->GatherType == NULL) {
        return -1;
    }
    /* GF() finds the fields at the end of the object. */
    if (st->GatherType->tp_basicsize != spec.basicsize
        || st->GatherType->tp_itemsize != 0
        || (st->GatherType->tp_flags & Py_TPFLAGS_BASETYPE)) {
        Py_CLEAR(st->GatherType);
        PyErr_SetString(PyExc_ImportError, "_GatheringFuture has an unexpected layout");
        return -1;
    }
    return meths_init(st);
}

/* The loop for a gather with no arguments, or for wrapping coroutines when
 * no future gave one: the running loop, else get_event_loop(). */
static PyObject *
current_loop(fa_state *st)
{
    PyObject *loop = PyObject_CallNoArgs(st->get_running_loop);
    if (loop == NULL || loop != Py_None) {
        return loop;
    }
    Py_DECREF(loop);
    return PyObject_CallNoArgs(st->get_event_loop);
}

static PyObject *
new_outer(fa_state *st, PyObject *loop)
{
    PyObject *argv[1] = {loop};
    PyObject *kwn = PyTuple_Pack(1, st->s_loop);
    PyObject *outer;
    if (kwn == NULL) {
        return NULL;
    }
    outer = PyObject_Vectorcall((PyObject *)st->GatherType, argv, 0, kwn);
    Py_DECREF(kwn);
    if (outer != NULL) {
        gather_fields *f = GF(outer);
        f->children = NULL;
        f->loop = Py_NewRef(loop);
        f->cur_task = NULL;
        f->nfuts = f->nfinished = 0;
        f->return_exceptions = 0;
        f->cancel_requested = 0;
    }
    return outer;
}

/* ensure_future(arg, loop=loop) with a fast path for coroutines on our loop. */
static PyObject *
to_future(fa_state *st, PyObject *arg, PyObject **loop)
{
    PyObject *fut, *blocking;
    int iscoro = PyCoro_CheckExact(arg);
    if (!iscoro && !PyType_IsSubtype(Py_TYPE(arg), (PyTypeObject *)st->FutureType)) {
        PyObject *r = PyObject_CallOneArg(st->iscoroutine, arg);
        if (r == NULL) {
            return NULL;
        }
        iscoro = PyObject_IsTrue(r);
        Py_DECREF(r);
    }
    if (iscoro) {
        if (*loop == NULL) {
            *loop = current_loop(st);
            if (*loop == NULL) {
                return NULL;
            }
        }
        if (PyObject_TypeCheck(*loop, st->LoopType)) {
            return fa_loop_create_task((fa_loop *)*loop, arg, NULL, NULL);
        }
        return PyObject_CallMethodOneArg(*loop, st->s_create_task, arg);
    }
    blocking = PyObject_GetAttrString((PyObject *)Py_TYPE(arg), "_asyncio_future_blocking");
    if (blocking != NULL) {
        Py_DECREF(blocking);
        fut = Py_NewRef(arg);
        if (*loop != NULL) {
            PyObject *floop = PyObject_CallMethodNoArgs(fut, st->s_get_loop);
            if (floop == NULL) {
                Py_DECREF(fut);
                return NULL;
            }
            Py_DECREF(floop);
            if (floop != *loop) {
                Py_DECREF(fut);
                PyErr_SetString(PyExc_ValueError,
                                "The future belongs to a different loop than the one "
                                "specified as the loop argument");
                return NULL;
            }
        }
    }
    else {
        PyObject *argv[2] = {arg, *loop};
        PyObject *kwn;
        PyErr_Clear();
        if (*loop == NULL) {
            fut = PyObject_CallOneArg(st->ensure_future, arg);
        }
        else {
            kwn = PyTuple_Pack(1, st->s_loop);
            if (kwn == NULL) {
                return NULL;
            }
            fut = PyObject_Vectorcall(st->ensure_future, argv, 1, kwn);
            Py_DECREF(kwn);
        }
        if (fut == NULL) {
            return NULL;
        }
    }
    if (*loop == NULL) {
        *loop = PyObject_CallMethodNoArgs(fut, st->s_get_loop);
        if (*loop == NULL) {
            Py_DECREF(fut);
            return NULL;
        }
    }
    return fut;
}

/* asyncio.gather keys a dict by its arguments; for types that keep
 * object's __hash__ and __eq__ (coroutines, C futures and tasks, most
 * classes) that key is the object's identity. */
static int
identity_keyed(PyTypeObject *tp)
{
    return tp->tp_hash == PyBaseObject_Type.tp_hash
           && tp->tp_richcompare == PyBaseObject_Type.tp_richcompare;
}

/* When every argument is identity-keyed: first[i] = the first index whose
 * argument is args[i] (i itself for a first occurrence).  Returns NULL
 * with no exception set when some argument is not identity-keyed (the
 * caller then uses a dict, as asyncio does), NULL with MemoryError set on
 * failure. */
static Py_ssize_t *
first_occurrences(PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t *first, *table;
    size_t size = 8, mask;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (!identity_keyed(Py_TYPE(args[i]))) {
            return NULL;
        }
    }
    first = PyMem_New(Py_ssize_t, nargs);
    if (first == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (nargs <= 16) {
        for (Py_ssize_t i = 0; i < nargs; i++) {
            Py_ssize_t j = 0;
            while (args[j] != args[i]) {
                j++;
            }
            first[i] = j;
        }
        return first;
    }
    while (size < 2 * (size_t)nargs) {
        size *= 2;
    }
    mask = size - 1;
    table = PyMem_New(Py_ssize_t, size);
    if (table == NULL) {
        PyMem_Free(first);
        PyErr_NoMemory();
        return NULL;
    }
    for (size_t k = 0; k < size; k++) {
        table[k] = -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        size_t k = (size_t)(((uintptr_t)args[i] >> 4) * (uintptr_t)0x9E3779B97F4A7C15ULL >> 16) & mask;
        while (table[k] >= 0 && args[table[k]] != args[i]) {
            k = (k + 1) & mask;
        }
        if (table[k] < 0) {
            table[k] = i;
        }
        first[i] = table[k];
    }
    PyMem_Free(table);
    return first;
}

PyObject *
fa_gather(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    fa_state *st = fa_get_state(module);
    PyObject *loop = NULL, *outer = NULL, *children = NULL, *arg_to_fut = NULL, *cb = NULL;
    PyObject *cur_task = NULL, *done_now = NULL;
    int return_exceptions = 0;
    Py_ssize_t *first = NULL;
    char *fresh = NULL;     /* fresh[i]: argument i made its own future */
    Py_ssize_t nfuts = 0;

    if (kwnames != NULL) {
        static const char *const names[] = {"return_exceptions"};
        PyObject *flag = NULL;
        if (fa_parse_keywords("gather", args, nargs, kwnames, names, &flag, 1) < 0) {
            return NULL;
        }
        return_exceptions = flag != NULL ? PyObject_IsTrue(flag) : 0;
        if (return_exceptions < 0) {
            return NULL;
        }
    }
    if (nargs == 0) {
        PyObject *r;
        loop = current_loop(st);
        if (loop == NULL) {
            return NULL;
        }
        outer = PyObject_CallMethod(loop, "create_future", NULL);
        Py_DECREF(loop);
        if (outer == NULL) {
            return NULL;
        }
        children = PyList_New(0);
        if (children == NULL) {
            Py_DECREF(outer);
            return NULL;
        }
        r = PyObject_CallMethodOneArg(outer, st->s_set_result, children);
        Py_DECREF(children);
        if (r == NULL) {
            Py_DECREF(outer);
            return NULL;
        }
        Py_DECREF(r);
        return outer;
    }

    children = PyList_New(nargs);
    arg_to_fut = PyDict_New();
    if (children == NULL || arg_to_fut == NULL) {
        goto error;
    }
    if (st->add_awaited_by != NULL) {
        /* 3.14's gather: the children belong to the running loop if there
         * is one, and are recorded as awaited by the current task (for
         * asyncio.capture_call_graph) until each is done. */
        loop = PyObject_CallNoArgs(st->get_running_loop);
        if (loop == NULL) {
            goto error;
        }
        if (loop == Py_None) {
            Py_CLEAR(loop);
        }
        else {
            cur_task = PyObject_CallOneArg(st->current_task, loop);
            if (cur_task == NULL) {
                goto error;
            }
            if (cur_task == Py_None) {
                Py_CLEAR(cur_task);
            }
        }
    }
    /* First pass: turn every argument into a future (the same awaitable
     * twice gives the same future), as asyncio.gather does. */
    first = first_occurrences(args, nargs);
    if (first == NULL && PyErr_Occurred()) {
        goto error;
    }
    fresh = PyMem_Calloc((size_t)nargs, 1);
    if (fresh == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *arg = args[i];
        PyObject *fut;
        if (first != NULL) {
            if (first[i] != i) {
                PyList_SET_ITEM(children, i, Py_NewRef(PyList_GET_ITEM(children, first[i])));
                continue;
            }
            fut = NULL;
        }
        else {
            fut = PyDict_GetItemWithError(arg_to_fut, arg);
        }
        if (fut != NULL) {
            PyList_SET_ITEM(children, i, Py_NewRef(fut));
            continue;
        }
        if (PyErr_Occurred()) {
            /* Unhashable awaitable: treat as distinct. */
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                goto error;
            }
            PyErr_Clear();
        }
        fut = to_future(st, arg, &loop);
        if (fut == NULL) {
            goto error;
        }
        if (fut != arg) {
            /* A task we created: gather owns its outcome. */
            if (PyObject_SetAttr(fut, st->s_log_destroy_pending, Py_False) < 0) {
                PyErr_Clear();
            }
        }
        nfuts++;
        fresh[i] = 1;
        if (first == NULL && PyDict_SetItem(arg_to_fut, arg, fut) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                Py_DECREF(fut);
                goto error;
            }
            PyErr_Clear();
        }
        PyList_SET_ITEM(children, i, fut);
    }
    outer = new_outer(st, loop);
    if (outer == NULL) {
        goto error;
    }
    GF(outer)->children = Py_NewRef(children);
    GF(outer)->nfuts = nfuts;
    GF(outer)->return_exceptions = return_exceptions;
    GF(outer)->cur_task = Py_XNewRef(cur_task);
    cb = PyCFunction_New(&child_done_def, outer);
    if (cb == NULL) {
        goto error;
    }
    /* Second pass: attach the callback once per argument that made its own
     * future, as asyncio.gather does (nfuts counts those; two arguments
     * answered with the same future, by a task factory, get a callback
     * each and count twice). */
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *fut = PyList_GET_ITEM(children, i);
        int seen = fresh[i] ? 0 : 1;
        if (seen == 0 && FA_GATHER_DONE_CHILDREN_AT_ONCE) {
            int d = is_done(st, fut);
            if (d > 0) {
                /* Handled below, once every pending child has its callback. */
                if ((done_now == NULL && (done_now = PyList_New(0)) == NULL) ||
                    PyList_Append(done_now, fut) < 0) {
                    d = -1;
                }
                seen = 1;
            }
            if (d < 0) {
                seen = -1;
            }
        }
        if (seen == 0 && cur_task != NULL) {
            PyObject *r = PyObject_CallFunctionObjArgs(st->add_awaited_by, fut, cur_task, NULL);
            if (r == NULL) {
                seen = -1;
            }
            Py_XDECREF(r);
        }
        if (seen == 0) {
            PyObject *r = meth(st, M_ADD_DONE_CALLBACK, fut, cb);
            if (r == NULL) {
                seen = -1;
            }
            Py_XDECREF(r);
        }
        if (seen < 0) {
            goto error;
        }
    }
    /* The children that were done already, in argument order, as if their
     * callbacks ran now: a gather of finished children returns finished. */
    for (Py_ssize_t i = 0; done_now != NULL && i < PyList_GET_SIZE(done_now); i++) {
        PyObject *r = gather_child_done(outer, PyList_GET_ITEM(done_now, i));
        if (r == NULL) {
            goto error;
        }
        Py_DECREF(r);
    }
    PyMem_Free(first);
    PyMem_Free(fresh);
    Py_XDECREF(done_now);
    Py_XDECREF(cur_task);
    Py_DECREF(cb);
    Py_DECREF(children);
    Py_DECREF(arg_to_fut);
    Py_DECREF(loop);
    return outer;

error:
    /* Don't leave orphan tasks behind: cancel what we created. */
    if (children != NULL) {
        PyObject *exc = fa_fetch_exception();
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(children); i++) {
            PyObject *fut = PyList_GET_ITEM(children, i);
            if (fut != NULL && fut != args[i]) {
                PyObject *r = PyObject_CallMethodNoArgs(fut, st->s_cancel);
                Py_XDECREF(r);
                PyErr_Clear();
            }
        }
        fa_restore_exception(exc);
    }
    PyMem_Free(first);
    PyMem_Free(fresh);
    Py_XDECREF(done_now);
    Py_XDECREF(cur_task);
    Py_XDECREF(cb);
    Py_XDECREF(outer);
    Py_XDECREF(children);
    Py_XDECREF(arg_to_fut);
    Py_XDECREF(loop);
    return NULL;
}
