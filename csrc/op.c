/* The awaitable returned by the network methods: a coroutine written in C.
 *
 * asyncio's loop.getaddrinfo(), loop.sock_recv() and the rest are
 * `async def` methods.  Calling one runs nothing until the coroutine is
 * awaited or wrapped in a Task, and asyncio.iscoroutine() is true for it, so
 * loop.create_task(loop.sock_recv(sock, n)) works.  An fa_op keeps that
 * contract without a Python frame.  It has send, throw, close and
 * __await__, by which collections.abc.Coroutine recognises it.  Its first
 * send runs the kind's step function.  The step either finishes at once
 * (the common case for sock_recv on a busy connection: no future at all) or
 * names an awaitable, usually a Future of the loop.  The op then delegates
 * to that awaitable's iterator as `yield from` would, and calls the step
 * again with its result.
 *
 * Cancelling the Task cancels the future it waits on; the future's done
 * callback (set by dns.c or sock.c) stops the watch or the libuv request.
 * A coroutine closed or abandoned while it waits cancels its future too, so
 * the fd watch or request never outlives the only code that could use it. */
#include "op.h"
#include "loop.h"
#include "net.h"
#include "state.h"
#include "util.h"

/* ------------------------------------------------------------ helpers */

/* Cancel op->fut if it is still pending.  Keeps any exception set. */
static void
op_cancel_future(fa_op *op)
{
    fa_state *st = op->loop->st;
    PyObject *exc, *done, *r = NULL;

    if (op->fut == NULL || op->loop->closed) {
        /* A closed loop runs no callback again: cancelling would only fail
         * to schedule the future's callbacks. */
        return;
    }
    exc = fa_fetch_exception();
    done = PyObject_CallMethodNoArgs(op->fut, st->s_done);
    if (done != NULL) {
        r = done == Py_False ? PyObject_CallMethodNoArgs(op->fut, st->s_cancel)
                             : Py_NewRef(Py_None);
        Py_DECREF(done);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)op);
    }
    Py_XDECREF(r);
    fa_restore_exception(exc);
}

/* The coroutine has returned or raised: nothing will wait on its future. */
static void
op_finish(fa_op *op)
{
    op->state = FA_OP_FINISHED;
    Py_CLEAR(op->inner);
    op_cancel_future(op);
    if (op->kind->finish != NULL) {
        PyObject *exc = fa_fetch_exception();
        op->kind->finish(op);
        fa_restore_exception(exc);
    }
}

/* Raise StopIteration(value) the way a returning coroutine does: wrapped
 * in an instance so that a tuple or an exception value stays one value. */
static void
set_stop_iteration(PyObject *value)
{
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
}

/* After StopIteration was raised: its value (a new reference), with the
 * error cleared.  NULL with another exception set on failure. */
static PyObject *
fetch_stop_iteration_value(void)
{
    PyObject *exc = fa_fetch_exception(), *res;
    res = exc != NULL ? PyObject_GetAttrString(exc, "value") : Py_NewRef(Py_None);
    Py_XDECREF(exc);
    return res;
}

/* Raise what throw(typ[, val[, tb]]) names, in this frame. */
static void
raise_thrown(PyObject *typ, PyObject *val, PyObject *tb)
{
    if (val == Py_None) {
        val = NULL;
    }
    if (tb == Py_None) {
        tb = NULL;
    }
    if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return;
    }
    if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    }
    else if (PyExceptionInstance_Check(typ)) {
        if (val != NULL) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from "
                     "BaseException, not %s", Py_TYPE(typ)->tp_name);
        return;
    }
    if (tb != NULL) {
        PyObject *exc = fa_fetch_exception();
        if (exc != NULL) {
            PyException_SetTraceback(exc, tb);
        }
        fa_restore_exception(exc);
    }
}

PyObject *
fa_op_new_future(fa_op *op)
{
    fa_state *st = op->loop->st;
    PyObject *args[1] = {(PyObject *)op->loop};
    PyObject *fut = PyObject_Vectorcall(st->FutureType, args, 0, st->net.k_loop);
    if (fut == NULL) {
        return NULL;
    }
    Py_XSETREF(op->fut, fut);
    return fut;
}

/* Await `awaitable` next: op->inner becomes its iterator, as the `await`
 * expression finds it.  Returns FA_OP_AWAIT, or -1. */
int
fa_op_await(fa_op *op, PyObject *awaitable)
{
    PyTypeObject *tp = Py_TYPE(awaitable);
    PyObject *it;

    if (PyCoro_CheckExact(awaitable)) {
        it = Py_NewRef(awaitable);
    }
    else {
        if (tp->tp_as_async == NULL || tp->tp_as_async->am_await == NULL) {
            PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression",
                         tp->tp_name);
            return -1;
        }
        it = tp->tp_as_async->am_await(awaitable);
        if (it == NULL) {
            return -1;
        }
        if (!PyIter_Check(it) || PyCoro_CheckExact(it)) {
            PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%.100s'",
                         Py_TYPE(it)->tp_name);
            Py_DECREF(it);
            return -1;
        }
    }
    Py_XSETREF(op->inner, it);
    return FA_OP_AWAIT;
}

/* Await op->fut. */
int
fa_op_await_future(fa_op *op)
{
    return fa_op_await(op, op->fut);
}

/* Report an error that happened in a libuv callback, where no caller can
 * receive it, to the loop's exception handler. */
int
fa_op_call_exception_handler(fa_loop *loop, const char *message, PyObject *exc)
{
    PyObject *msg = PyUnicode_FromString(message);
    int r = msg != NULL ? fa_call_exception_handler((PyObject *)loop, msg, exc, NULL) : -1;
    Py_XDECREF(msg);
    if (r < 0) {
        PyErr_WriteUnraisable((PyObject *)loop);
    }
    return r;
}

/* ---------------------------------------------------------- coroutine */

/* Run the step's decision to completion or to the next yield: while the
 * step asks to await something, send into that iterator; when it returns,
 * hand its value back to the step. */
static PySendResult
op_advance(fa_op *op, int r, PyObject **presult)
{
    while (r == FA_OP_AWAIT) {
        PyObject *v;
        PySendResult st = PyIter_Send(op->inner, Py_None, &v);
        if (st == PYGEN_NEXT) {
            *presult = v;
            return PYGEN_NEXT;
        }
        Py_CLEAR(op->inner);
        if (st == PYGEN_ERROR) {
            r = -1;
            break;
        }
        r = op->kind->step(op, v);
        Py_DECREF(v);
    }
    if (r < 0) {
        if (PyErr_ExceptionMatches(PyExc_StopIteration) ||
            PyErr_ExceptionMatches(PyExc_StopAsyncIteration)) {
            /* PEP 479, as for a coroutine: a StopIteration escaping the step
             * would look like a return and leave the awaiting Task hanging. */
            PyObject *cause = fa_fetch_exception();
            PyErr_SetString(PyExc_RuntimeError,
                            PyObject_TypeCheck(cause, (PyTypeObject *)PyExc_StopIteration)
                                ? "coroutine raised StopIteration"
                                : "coroutine raised StopAsyncIteration");
            PyObject *exc = fa_fetch_exception();
            PyException_SetCause(exc, Py_NewRef(cause));
            PyException_SetContext(exc, cause);
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        op_finish(op);
        return PYGEN_ERROR;
    }
    FA_ASSERT(op->result != NULL);
    *presult = op->result;
    op->result = NULL;
    op_finish(op);
    return PYGEN_RETURN;
}

/* After the awaited iterator produced `st` (and v) from a send or throw. */
static PySendResult
op_resume(fa_op *op, PySendResult st, PyObject *v, PyObject **presult)
{
    int r;
    if (st == PYGEN_NEXT) {
        *presult = v;
        return PYGEN_NEXT;
    }
    Py_CLEAR(op->inner);
    if (st == PYGEN_ERROR) {
        op_finish(op);
        return PYGEN_ERROR;
    }
    r = op->kind->step(op, v);
    Py_DECREF(v);
    return op_advance(op, r, presult);
}

static int
op_enter(fa_op *op)
{
    if (op->executing) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return -1;
    }
    if (op->state == FA_OP_FINISHED) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return -1;
    }
    op->executing = 1;
    return 0;
}

static PySendResult
op_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    fa_op *op = (fa_op *)self;
    PySendResult res;
    PyObject *v = NULL;

    *presult = NULL;
    if (op_enter(op) < 0) {
        return PYGEN_ERROR;
    }
    /* The step may run code that drops every other reference to us. */
    Py_INCREF(op);
    if (op->state == FA_OP_NEW) {
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            res = PYGEN_ERROR;
        }
        else {
            op->state = FA_OP_RUNNING;
            res = op_advance(op, op->kind->step(op, NULL), presult);
        }
    }
    else {
        PySendResult st;
        FA_ASSERT(op->inner != NULL);
        st = PyIter_Send(op->inner, arg, &v);
        res = op_resume(op, st, v, presult);
    }
    op->executing = 0;
    Py_DECREF(op);
    return res;
}

static PyObject *
op_iternext(PyObject *self)
{
    PyObject *res;
    PySendResult st = op_am_send(self, Py_None, &res);
    if (st == PYGEN_NEXT) {
        return res;
    }
    if (st == PYGEN_RETURN) {
        if (res != Py_None) {
            set_stop_iteration(res);
        }
        Py_DECREF(res);
    }
    return NULL;
}

/* Result of send()/throw() called as methods: a return raises StopIteration. */
static PyObject *
send_result(PySendResult st, PyObject *res)
{
    if (st == PYGEN_NEXT) {
        return res;
    }
    if (st == PYGEN_RETURN) {
        if (res == Py_None) {
            PyErr_SetNone(PyExc_StopIteration);
        }
        else {
            set_stop_iteration(res);
        }
        Py_DECREF(res);
    }
    return NULL;
}

static PyObject *
op_send(PyObject *self, PyObject *arg)
{
    PyObject *res;
    PySendResult st = op_am_send(self, arg, &res);
    return send_result(st, res);
}

static PyObject *
op_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    fa_op *op = (fa_op *)self;
    PyObject *meth = NULL, *v = NULL, *res = NULL;
    PySendResult st;

    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected at least 1 argument, at most 3, got %zd",
                     nargs);
        return NULL;
    }
    if (op->state == FA_OP_FINISHED) {
        raise_thrown(args[0], nargs > 1 ? args[1] : NULL, nargs > 2 ? args[2] : NULL);
        return NULL;
    }
    if (op_enter(op) < 0) {
        return NULL;
    }
    Py_INCREF(op);
    if (op->inner != NULL) {
        meth = PyObject_GetAttr(op->inner, op->loop->st->net.s_throw);
        if (meth == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                op_finish(op);
                goto done;
            }
            PyErr_Clear();
        }
    }
    if (meth == NULL) {
        /* Not started, or awaiting an iterator without throw(): the
         * exception is raised where the coroutine stands. */
        raise_thrown(args[0], nargs > 1 ? args[1] : NULL, nargs > 2 ? args[2] : NULL);
        op_finish(op);
        goto done;
    }
    v = PyObject_Vectorcall(meth, args, nargs, NULL);
    Py_DECREF(meth);
    if (v != NULL) {
        st = PYGEN_NEXT;
    }
    else if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        /* The awaited iterator caught the exception and returned. */
        v = fetch_stop_iteration_value();
        st = v != NULL ? PYGEN_RETURN : PYGEN_ERROR;
    }
    else {
        st = PYGEN_ERROR;
    }
    st = op_resume(op, st, v, &res);
    res = send_result(st, res);

done:
    op->executing = 0;
    Py_DECREF(op);
    return res;
}

static PyObject *
op_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fa_op *op = (fa_op *)self;
    PyObject *r;
    if (op->executing) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return NULL;
    }
    if (op->state == FA_OP_RUNNING && op->inner != NULL) {
        PyObject *meth = PyObject_GetAttr(op->inner, op->loop->st->net.s_close);
        if (meth == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                op_finish(op);
                return NULL;
            }
            PyErr_Clear();
        }
        else {
            r = PyObject_CallNoArgs(meth);
            Py_DECREF(meth);
            if (r == NULL) {
                op_finish(op);
                return NULL;
            }
            Py_DECREF(r);
        }
    }
    op_finish(op);
    Py_RETURN_NONE;
}

static PyObject *
op_await(PyObject *self)
{
    fa_op *op = (fa_op *)self;
    if (op->state == FA_OP_RUNNING && op->inner != NULL) {
        /* As CPython's coroutines: a second awaiter would steal the first
         * one's wake-up. */
        PyErr_SetString(PyExc_RuntimeError, "coroutine is being awaited already");
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
op_repr(fa_op *op)
{
    return PyUnicode_FromFormat("<coroutine object %s at %p>", op->kind->qualname, op);
}

static PyObject *
op_get_name(fa_op *op, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(op->kind->name);
}

static PyObject *
op_get_qualname(fa_op *op, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(op->kind->qualname);
}

static PyObject *
op_get_running(fa_op *op, void *Py_UNUSED(c))
{
    return PyBool_FromLong(op->executing);
}

static PyObject *
op_get_await(fa_op *op, void *Py_UNUSED(c))
{
    return Py_NewRef(op->inner != NULL ? op->inner : Py_None);
}

/* ------------------------------------------------------- life and death */

fa_op *
fa_op_new(fa_loop *loop, const fa_op_kind *kind, PyObject *const *argv, Py_ssize_t argc)
{
    fa_op *op = PyObject_GC_New(fa_op, loop->st->net.OpType);
    if (op == NULL) {
        return NULL;
    }
    memset((char *)op + sizeof(PyObject), 0, sizeof(fa_op) - sizeof(PyObject));
    op->loop = (fa_loop *)Py_NewRef(loop);
    op->kind = kind;
    op->fd = -1;
    op->in_fd = -1;
    for (Py_ssize_t i = 0; i < argc && i < FA_OP_MAXARGS; i++) {
        op->argv[i] = Py_XNewRef(argv[i]);
    }
    PyObject_GC_Track(op);
    return op;
}

static int
op_traverse(fa_op *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT((PyObject *)op->loop);
    for (int i = 0; i < FA_OP_MAXARGS; i++) {
        Py_VISIT(op->argv[i]);
    }
    Py_VISIT(op->inner);
    Py_VISIT(op->result);
    Py_VISIT(op->fut);
    Py_VISIT((PyObject *)op->handle);
    if (op->has_view) {
        Py_VISIT(op->view.obj);
    }
    return 0;
}

static int
op_clear(fa_op *op)
{
    /* An op whose libuv request is in flight holds a reference to itself,
     * so the collector never clears it while libuv may call back. */
    FA_ASSERT(!op->in_flight);
    for (int i = 0; i < FA_OP_MAXARGS; i++) {
        Py_CLEAR(op->argv[i]);
    }
    Py_CLEAR(op->inner);
    Py_CLEAR(op->result);
    Py_CLEAR(op->fut);
    Py_CLEAR(op->handle);
    if (op->has_view) {
        op->has_view = 0;
        PyBuffer_Release(&op->view);
    }
    return 0;
}

/* Like a coroutine of an `async def` method: one that was never awaited (nor
 * closed) warns when collected. */
static void
op_finalize(fa_op *op)
{
    PyObject *exc;
    if (op->state != FA_OP_NEW) {
        return;
    }
    exc = fa_fetch_exception();
    if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "coroutine '%s' was never awaited",
                         op->kind->qualname) < 0) {
        PyErr_WriteUnraisable((PyObject *)op);
    }
    if (exc != NULL) {
        fa_restore_exception(exc);
    }
}

static void
op_dealloc(fa_op *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)op) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(op);
    /* Allocated but never submitted (submission failed). */
    PyMem_RawFree(op->req);
    if (op->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)op);
    }
    (void)op_clear(op);
    Py_CLEAR(op->loop);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef op_methods[] = {
    {"send", (PyCFunction)op_send, METH_O,
     "send(value): resume the coroutine; raise StopIteration when it returns."},
    {"throw", (PyCFunction)(void (*)(void))op_throw, METH_FASTCALL,
     "throw(typ[, val[, tb]]): raise an exception in the coroutine."},
    {"close", (PyCFunction)op_close, METH_NOARGS,
     "close(): stop the coroutine, cancelling the operation it waits for."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef op_getset[] = {
    {"__name__", (getter)op_get_name, NULL, NULL, NULL},
    {"__qualname__", (getter)op_get_qualname, NULL, NULL, NULL},
    {"cr_running", (getter)op_get_running, NULL, NULL, NULL},
    {"cr_await", (getter)op_get_await, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef op_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(fa_op, weakreflist), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot op_slots[] = {
    {Py_tp_doc, "A network method's coroutine (loop.sock_recv(...), loop.getaddrinfo(...))."},
    {Py_tp_dealloc, op_dealloc},
    {Py_tp_finalize, op_finalize},
    {Py_tp_traverse, op_traverse},
    {Py_tp_clear, op_clear},
    {Py_tp_repr, op_repr},
    {Py_tp_iternext, op_iternext},
    {Py_tp_methods, op_methods},
    {Py_tp_getset, op_getset},
    {Py_tp_members, op_members},
    {Py_am_await, op_await},
    {Py_am_send, op_am_send},
    {0, NULL},
};

PyType_Spec fa_op_spec = {
    .name = "flaskasync._core._NetCoroutine",
    .basicsize = sizeof(fa_op),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = op_slots,
};

/* ------------------------------------------------------- module state */

#define NET_NAMES(n)                                                                     \
    &(n)->s_recv, &(n)->s_recv_into, &(n)->s_recvfrom, &(n)->s_recvfrom_into, &(n)->s_send, \
        &(n)->s_sendto, &(n)->s_connect, &(n)->s_accept, &(n)->s_fileno,                 \
        &(n)->s_gettimeout, &(n)->s_getsockopt, &(n)->s_setblocking, &(n)->s_family,     \
        &(n)->s_type, &(n)->s_proto, &(n)->s_getaddrinfo, &(n)->s_throw, &(n)->s_close,  \
        &(n)->s_ssl, &(n)->s_mode, &(n)->s_readinto,                                     \
        &(n)->s_run_in_executor, &(n)->s_sock_sendall, &(n)->s_data_received,            \
        &(n)->s_get_buffer, &(n)->s_buffer_updated, &(n)->s_connection_lost

static const char *const net_name_strings[] = {
    "recv", "recv_into", "recvfrom", "recvfrom_into", "send", "sendto", "connect",
    "accept", "fileno", "gettimeout", "getsockopt", "setblocking", "family", "type",
    "proto", "getaddrinfo", "throw", "close", "ssl", "mode", "readinto",
    "run_in_executor", "sock_sendall", "data_received", "get_buffer", "buffer_updated",
    "connection_lost",
};

int
fa_net_init(PyObject *module, fa_state *st)
{
    fa_net_state *n = &st->net;
    PyObject **names[] = {NET_NAMES(n)};

    Py_BUILD_ASSERT(sizeof(names) / sizeof(names[0]) ==
                    sizeof(net_name_strings) / sizeof(net_name_strings[0]));
    n->OpType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &fa_op_spec, NULL);
    if (n->OpType == NULL) {
        return -1;
    }
    if (fa_import_attr(&n->gaierror, "socket", "gaierror") < 0 ||
        fa_import_attr(&n->AddressFamily, "socket", "AddressFamily") < 0 ||
        fa_import_attr(&n->SocketKind, "socket", "SocketKind") < 0 ||
        fa_import_attr(&n->UnsupportedOperation, "io", "UnsupportedOperation") < 0 ||
        fa_import_attr(&n->SendfileNotAvailableError, "asyncio", "SendfileNotAvailableError") < 0 ||
        fa_import_attr(&n->BufferedProtocol, "asyncio", "BufferedProtocol") < 0 ||
        fa_import_attr(&n->set_result_unless_cancelled, "asyncio.futures",
                 "_set_result_unless_cancelled") < 0 ||
        fa_import_attr(&n->logger, "asyncio.log", "logger") < 0) {
        return -1;
    }
    n->minus_one = PyLong_FromLong(-1);
    if (n->minus_one == NULL) {
        return -1;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i] = PyUnicode_InternFromString(net_name_strings[i]);
        if (*names[i] == NULL) {
            return -1;
        }
    }
    n->k_loop = Py_BuildValue("(s)", "loop");
    n->k_gai = Py_BuildValue("(ssss)", "family", "type", "proto", "flags");
    if (n->k_loop == NULL || n->k_gai == NULL) {
        return -1;
    }
    return 0;
}

int
fa_net_traverse(fa_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->net.OpType);
    Py_VISIT(st->net.SSLSocket);
    return 0;
}

void
fa_net_clear(fa_state *st)
{
    fa_net_state *n = &st->net;
    PyObject **names[] = {NET_NAMES(n)};
    Py_CLEAR(n->OpType);
    Py_CLEAR(n->gaierror);
    Py_CLEAR(n->AddressFamily);
    Py_CLEAR(n->SocketKind);
    Py_CLEAR(n->SSLSocket);
    Py_CLEAR(n->UnsupportedOperation);
    Py_CLEAR(n->SendfileNotAvailableError);
    Py_CLEAR(n->k_loop);
    Py_CLEAR(n->k_gai);
    Py_CLEAR(n->BufferedProtocol);
    Py_CLEAR(n->set_result_unless_cancelled);
    Py_CLEAR(n->logger);
    Py_CLEAR(n->minus_one);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        Py_CLEAR(*names[i]);
    }
}
