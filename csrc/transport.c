/* What the C transports (stream.c, udp.c) share: the list of a loop's
 * live transports, the fd watch (one uv_poll_t per transport, made on first
 * use, holding a reference to its transport while started), closing it,
 * error reporting, and write-buffer limits.  Every transport struct starts
 * with FA_TRANSPORT_HEAD (fa.h), so these functions take an fa_transport. */
#include "fa.h"

/* ------------------------------------------------------------ the list */

void
fa_transport_list_add(fa_transport *t)
{
    fa_transport *head = (fa_transport *)t->loop->transports;
    t->prev = NULL;
    t->next = head;
    if (head != NULL) {
        head->prev = t;
    }
    t->loop->transports = t;
}

void
fa_transport_list_remove(fa_transport *t)
{
    if (t->prev != NULL) {
        t->prev->next = t->next;
    }
    else if (t->loop->transports == t) {
        t->loop->transports = t->next;
    }
    if (t->next != NULL) {
        t->next->prev = t->prev;
    }
    t->prev = t->next = NULL;
}

/* asyncio refuses to watch a fd a transport uses (add_reader, sock_*):
 * RuntimeError naming the transport.  Returns -1 with it set, else 0.
 * loop.sendfile() lends a stream's fd to sock_sendfile (fd_lent). */
int
fa_transport_check_fd(fa_loop *loop, int fd)
{
    for (fa_transport *t = (fa_transport *)loop->transports; t != NULL; t = t->next) {
        if (t->fd == fd && t->sock != NULL && !t->fd_lent) {
            PyErr_Format(PyExc_RuntimeError, "File descriptor %d is used by transport %R", fd,
                         (PyObject *)t);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ the poll */

/* Close the transport's uv_poll (its fd stays open, owned by the socket
 * object).  Returns 1 if the loop took sock over, to close it after the
 * poll (see fa_loop_close_poll), else 0. */
int
fa_transport_drop_poll(fa_transport *t, PyObject *sock)
{
    fa_loop *loop = t->loop;
    uv_poll_t *p = t->poll;
    if (p == NULL) {
        return 0;
    }
    t->poll = NULL;
    if (t->events) {
        /* Only on the loop thread: a started poll keeps its transport alive. */
        uv_poll_stop(p);
        loop->n_io--;
        t->events = 0;
    }
    return fa_loop_close_poll(loop, p, sock);
}

/* loop.close(): stop watching every transport's fd.  A transport that was
 * only kept alive by its watch is then collected, warning that it was not
 * closed, as with asyncio's loop. */
void
fa_transport_close_all(fa_loop *loop)
{
    PyObject *held = PyList_New(0);
    fa_transport *t = (fa_transport *)loop->transports, *next;
    for (; t != NULL; t = next) {
        next = t->next;
        fa_transport_drop_poll(t, NULL);
        if (t->self_ref) {
            if (held == NULL || PyList_Append(held, (PyObject *)t) < 0) {
                PyErr_Clear();
                continue; /* keep the reference: a leak, not a crash */
            }
            t->self_ref = 0;
            Py_DECREF(t); /* the list holds it until the walk is done */
        }
    }
    Py_XDECREF(held);
}

/* Create the uv_poll on first use: a write pipe on a character device
 * such as /dev/null, which epoll refuses, works as long as it never has
 * to wait, as with asyncio. */
static int
ensure_poll(fa_transport *t)
{
    int rc;
    if (t->poll != NULL) {
        return 0;
    }
    if (fa_loop_check_closed(t->loop) < 0) {
        return -1;
    }
    t->poll = PyMem_RawMalloc(sizeof(uv_poll_t));
    if (t->poll == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    rc = uv_poll_init(&t->loop->uv, t->poll, t->fd);
    if (rc < 0) {
        PyMem_RawFree(t->poll);
        t->poll = NULL;
        if (rc == UV_EEXIST) {
            PyErr_Format(PyExc_RuntimeError,
                         "File descriptor %d is used by another watcher of this loop "
                         "(add_reader/add_writer or a sock_* call in progress)", t->fd);
            return -1;
        }
        return fa_set_uv_error(rc, "uv_poll_init");
    }
    t->poll->data = t;
    return 0;
}

/* Start or stop the poll for `want` (UV_READABLE | UV_WRITABLE, 0 for
 * nothing) and hold a reference to the transport while it waits.  The
 * caller must own a reference (the self-reference may be dropped here).
 * Returns -1 with an exception. */
int
fa_transport_watch(fa_transport *t, int want)
{
    fa_loop *loop = t->loop;
    int r;
    if (t->fd < 0) {
        want = 0;
    }
    if (want != t->events) {
        if (want) {
            if (ensure_poll(t) < 0) {
                return -1;
            }
            r = uv_poll_start(t->poll, want, fa_transport_on_io);
            if (r < 0) {
                return fa_set_uv_error(r, "uv_poll_start");
            }
            if (t->events == 0) {
                loop->n_io++;
            }
        }
        else {
            uv_poll_stop(t->poll);
            loop->n_io--;
        }
        t->events = want;
        loop->io_dirty = 1;
        if (loop->is_app && atomic_load(&loop->baton) == 0) {
            /* Nobody drives the app loop: its home thread must register the
             * change with epoll. */
            fa_loop_poke(loop);
        }
    }
    if (want && !t->self_ref) {
        t->self_ref = 1;
        Py_INCREF(t);
    }
    else if (!want && t->self_ref) {
        t->self_ref = 0;
        Py_DECREF(t);
    }
    return 0;
}

/* The poll callback of every transport: queue its read and/or write
 * Handle (once: level-triggered, uv_run may report the fd again before the
 * ready queue runs).  The handles run the syscalls; they check the
 * transport's state themselves. */
void
fa_transport_on_io(uv_poll_t *p, int status, int events)
{
    fa_transport *t = (fa_transport *)p->data;
    fa_loop *loop;
    int want;
    if (t == NULL) {
        return;
    }
    loop = t->loop;
    fa_loop_gil_ensure(loop);
    want = t->events;
    if (status < 0) {
        /* libuv stopped the poll after an error on the fd (POLLERR, e.g. a
         * reset, or an ICMP error on a UDP socket): both sides retry their
         * syscall, which reports (and clears) the error, and restart the
         * poll. */
        if (t->events) {
            loop->n_io--;
            t->events = 0;
            loop->io_dirty = 1;
        }
        events = want = UV_READABLE | UV_WRITABLE;
    }
    if ((events & want & UV_READABLE) && t->read_h != NULL && !t->read_h->queued) {
        if (fa_loop_push_ready(loop, t->read_h) == 0) {
            t->read_h->queued = 1;
        }
    }
    if ((events & want & UV_WRITABLE) && t->write_h != NULL && !t->write_h->queued) {
        if (fa_loop_push_ready(loop, t->write_h) == 0) {
            t->write_h->queued = 1;
        }
    }
    if (PyErr_Occurred()) {
        /* Growing the ready queue failed (MemoryError); we are in a libuv
         * callback: report it.  The fd is level-triggered, so it comes
         * back next iteration. */
        PyErr_WriteUnraisable((PyObject *)t);
    }
}

/* Close the socket object after stopping the watch; the fd is -1 from
 * here.  Returns -1 with an exception if sock.close() raised. */
int
fa_transport_release_fd(fa_transport *t)
{
    PyObject *sock = t->sock, *r;
    int handed_over = fa_transport_drop_poll(t, sock);
    fa_transport_list_remove(t);
    t->fd = -1;
    if (sock == NULL) {
        return 0;
    }
    t->sock = NULL;
    if (handed_over) {
        Py_DECREF(sock); /* the loop thread closes it after the poll */
        return 0;
    }
    r = PyObject_CallMethod(sock, "close", NULL);
    Py_DECREF(sock);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------ errors */

/* loop.call_exception_handler({'message', 'exception', 'transport',
 * 'protocol'}); an error in the handler call is reported as unraisable. */
void
fa_transport_report(fa_transport *t, const char *message, PyObject *exc)
{
    fa_state *st = t->loop->st;
    PyObject *ctx = PyDict_New(), *msg = PyUnicode_FromString(message), *r = NULL;
    if (ctx == NULL || msg == NULL || PyDict_SetItem(ctx, st->s_message, msg) < 0 ||
        (exc != NULL && PyDict_SetItem(ctx, st->s_exception_key, exc) < 0) ||
        PyDict_SetItemString(ctx, "transport", (PyObject *)t) < 0 ||
        PyDict_SetItemString(ctx, "protocol", t->protocol != NULL ? t->protocol : Py_None) < 0) {
        goto done;
    }
    r = PyObject_CallMethodOneArg((PyObject *)t->loop, st->s_call_exception_handler, ctx);
done:
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
    Py_XDECREF(ctx);
    Py_XDECREF(msg);
}

/* The watch could not be changed on a path that cannot raise: report it. */
void
fa_transport_report_current(fa_transport *t)
{
    PyObject *exc = fa_fetch_exception();
    fa_transport_report(t, "Fatal error: cannot watch the transport's fd", exc);
    Py_XDECREF(exc);
}

/* asyncio's logger.warning(message). */
void
fa_transport_log_warning(fa_transport *t, const char *message)
{
    PyObject *r = PyObject_CallMethod(t->loop->st->net.logger, "warning", "s", message);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
}

/* ------------------------------------------------------------ object */

static int
call_soon_attr(fa_transport *t, PyObject *obj, const char *name, PyObject *args)
{
    PyObject *cb = PyObject_GetAttrString(obj, name);
    fa_handle *h;
    if (cb == NULL) {
        return -1;
    }
    h = fa_loop_call_soon(t->loop, cb, args, NULL);
    Py_DECREF(cb);
    if (h == NULL) {
        return -1;
    }
    Py_DECREF(h);
    return 0;
}

static fa_handle *
method_handle(fa_transport *t, const char *name)
{
    PyObject *cb = PyObject_GetAttrString((PyObject *)t, name);
    fa_handle *h;
    if (cb == NULL) {
        return NULL;
    }
    h = fa_handle_new(t->loop, t->loop->st->HandleType, cb, NULL, NULL);
    Py_DECREF(cb);
    return h;
}

/* The end of a transport's construction: the Handles its poll queues
 * (self._read_ready and self.<write_ready>), then, in asyncio's order,
 * protocol.connection_made(self), self._start_reading() if start_reading,
 * and the waiter's result.  Returns -1 with an exception. */
int
fa_transport_start(fa_transport *t, const char *write_ready, int start_reading, PyObject *waiter)
{
    PyObject *args;
    int r;
    t->read_h = method_handle(t, "_read_ready");
    if (t->read_h == NULL) {
        return -1;
    }
    t->write_h = method_handle(t, write_ready);
    if (t->write_h == NULL) {
        return -1;
    }
    args = PyTuple_Pack(1, (PyObject *)t);
    if (args == NULL) {
        return -1;
    }
    r = call_soon_attr(t, t->protocol, "connection_made", args);
    Py_DECREF(args);
    if (r < 0 || (start_reading && call_soon_attr(t, (PyObject *)t, "_start_reading", NULL) < 0)) {
        return -1;
    }
    if (waiter != NULL && waiter != Py_None) {
        fa_handle *h;
        args = PyTuple_Pack(2, waiter, Py_None);
        if (args == NULL) {
            return -1;
        }
        h = fa_loop_call_soon(t->loop, t->loop->st->net.set_result_unless_cancelled, args, NULL);
        Py_DECREF(args);
        if (h == NULL) {
            return -1;
        }
        Py_DECREF(h);
    }
    return 0;
}

/* get_extra_info(name, default=None) */
PyObject *
fa_transport_get_extra_info(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "default", NULL};
    PyObject *name, *deflt = Py_None, *v;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:get_extra_info", kwlist, &name, &deflt)) {
        return NULL;
    }
    v = PyDict_GetItemWithError(((fa_transport *)self)->extra, name);
    if (v == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(deflt);
    }
    return Py_NewRef(v);
}

int
fa_transport_traverse_head(fa_transport *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->loop);
    Py_VISIT(t->protocol);
    Py_VISIT(t->extra);
    for (int i = 0; i < 4; i++) {
        Py_VISIT(t->fcm_reserved[i]);
    }
    Py_VISIT(t->sock);
    Py_VISIT(t->read_h);
    Py_VISIT(t->write_h);
    return 0;
}

void
fa_transport_clear_head(fa_transport *t)
{
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->extra);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(t->fcm_reserved[i]);
    }
    Py_CLEAR(t->read_h);
    Py_CLEAR(t->write_h);
}

/* tp_finalize: an unclosed transport being collected warns and closes its
 * socket, as asyncio's __del__ does. */
void
fa_transport_finalize(PyObject *self)
{
    fa_transport *t = (fa_transport *)self;
    PyObject *exc;
    if (t->sock == NULL) {
        return;
    }
    exc = fa_fetch_exception();
    if (PyErr_ResourceWarning(self, 1, "unclosed transport %R", self) < 0) {
        PyErr_WriteUnraisable(self);
    }
    if (t->loop != NULL && fa_transport_release_fd(t) < 0) {
        PyErr_WriteUnraisable(self);
    }
    if (exc != NULL) {
        fa_restore_exception(exc);
    }
}

/* The start of tp_dealloc: runs the finalizer (returns -1 if it
 * resurrected the object: stop there), untracks, drops the watch. */
int
fa_transport_dealloc_start(fa_transport *t, PyObject *weakreflist)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return -1;
    }
    PyObject_GC_UnTrack(t);
    if (weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    if (t->loop != NULL) {
        if (t->sock != NULL) {
            /* tp_finalize did not run (a Python subclass's __del__ replaced
             * it): release the fd now, poll first. */
            PyObject *exc = fa_fetch_exception();
            if (fa_transport_release_fd(t) < 0) {
                PyErr_WriteUnraisable((PyObject *)t);
            }
            if (exc != NULL) {
                fa_restore_exception(exc);
            }
        }
        else {
            fa_transport_drop_poll(t, NULL);
            fa_transport_list_remove(t);
        }
    }
    return 0;
}

/* The end of tp_dealloc, after the type's own fields are cleared. */
void
fa_transport_dealloc_end(fa_transport *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    fa_transport_clear_head(t);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->loop);
    tp->tp_free(t);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------ limits */

/* A buffer limit: any real number (asyncio takes floats too), truncated;
 * beyond Py_ssize_t it means "never", so it is clamped. */
static int
limit_value(PyObject *v, Py_ssize_t *out)
{
    int overflow;
    long long x;
    PyObject *i = PyFloat_Check(v) ? PyNumber_Long(v) : PyNumber_Index(v);
    if (i == NULL) {
        return -1;
    }
    x = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0 || x > PY_SSIZE_T_MAX) {
        *out = PY_SSIZE_T_MAX;
    }
    else if (overflow < 0 || x < -PY_SSIZE_T_MAX) {
        *out = -PY_SSIZE_T_MAX;
    }
    else {
        *out = (Py_ssize_t)x;
    }
    return 0;
}

/* set_write_buffer_limits(high=None, low=None) as asyncio computes them:
 * high defaults to 64 KiB (or 4 * low), low to high // 4. */
int
fa_transport_parse_limits(PyObject *high_obj, PyObject *low_obj, Py_ssize_t *phigh,
                          Py_ssize_t *plow)
{
    Py_ssize_t high, low = 0;
    if (low_obj != Py_None && limit_value(low_obj, &low) < 0) {
        return -1;
    }
    if (high_obj != Py_None) {
        if (limit_value(high_obj, &high) < 0) {
            return -1;
        }
    }
    else {
        high = low_obj == Py_None ? FA_DEFAULT_HIGH_WATER
               : (low > PY_SSIZE_T_MAX / 4 ? PY_SSIZE_T_MAX : 4 * low);
    }
    if (low_obj == Py_None) {
        low = high >= 0 ? high / 4 : -((-high + 3) / 4); /* Python's high // 4 */
    }
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high, low);
        return -1;
    }
    *phigh = high;
    *plow = low;
    return 0;
}

/* ------------------------------------------------------------ the type */

/* asyncio.transports' slots and where FA_TRANSPORT_HEAD keeps room for
 * them: BaseTransport's `_extra` is our extra dict; _FlowControlMixin's four
 * slots (laid out in sorted name order by CPython) fall in fcm_reserved. */
static const struct {
    const char *owner, *name;
    Py_ssize_t lo, hi;           /* the slot's offset must be in [lo, hi] */
} slot_layout[] = {
    {"BaseTransport", "_extra", offsetof(fa_transport, extra), offsetof(fa_transport, extra)},
    {"_FlowControlMixin", "_loop", offsetof(fa_transport, fcm_reserved[0]),
     offsetof(fa_transport, fcm_reserved[3])},
    {"_FlowControlMixin", "_protocol_paused", offsetof(fa_transport, fcm_reserved[0]),
     offsetof(fa_transport, fcm_reserved[3])},
    {"_FlowControlMixin", "_high_water", offsetof(fa_transport, fcm_reserved[0]),
     offsetof(fa_transport, fcm_reserved[3])},
    {"_FlowControlMixin", "_low_water", offsetof(fa_transport, fcm_reserved[0]),
     offsetof(fa_transport, fcm_reserved[3])},
};

/* Check that the slots of asyncio's transport classes sit where
 * FA_TRANSPORT_HEAD expects them.  Returns -1 with ImportError if a Python
 * version laid them out differently. */
static int
check_slot_layout(PyObject *transports)
{
    for (size_t i = 0; i < sizeof(slot_layout) / sizeof(slot_layout[0]); i++) {
        PyObject *owner = PyObject_GetAttrString(transports, slot_layout[i].owner);
        PyObject *descr = owner ? PyObject_GetAttrString(owner, slot_layout[i].name) : NULL;
        int ok = descr != NULL && PyObject_TypeCheck(descr, &PyMemberDescr_Type);
        if (ok) {
            Py_ssize_t off = ((PyMemberDescrObject *)descr)->d_member->offset;
            ok = off >= slot_layout[i].lo && off <= slot_layout[i].hi;
        }
        Py_XDECREF(descr);
        Py_XDECREF(owner);
        if (!ok) {
            PyErr_Clear();
            PyErr_Format(PyExc_ImportError,
                         "flaskasync: asyncio.transports.%s.%s is not laid out as this build "
                         "of flaskasync expects (a Python version it does not support?)",
                         slot_layout[i].owner, slot_layout[i].name);
            return -1;
        }
    }
    return 0;
}

/* Create a transport type deriving from the named classes of
 * asyncio.transports, after checking their slot layout. */
PyTypeObject *
fa_transport_make_type(PyObject *module, PyType_Spec *spec, const char *const *bases_names,
                       int nbases)
{
    PyObject *transports, *bases = NULL;
    PyTypeObject *tp = NULL;
    transports = PyImport_ImportModule("asyncio.transports");
    if (transports == NULL) {
        return NULL;
    }
    if (check_slot_layout(transports) < 0) {
        goto done;
    }
    bases = PyTuple_New(nbases);
    if (bases == NULL) {
        goto done;
    }
    for (int i = 0; i < nbases; i++) {
        PyObject *b = PyObject_GetAttrString(transports, bases_names[i]);
        if (b == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(bases, i, b);
        if (!PyType_Check(b) || ((PyTypeObject *)b)->tp_basicsize > spec->basicsize) {
            PyErr_Format(PyExc_ImportError,
                         "flaskasync: asyncio.transports.%s is larger than this build of "
                         "flaskasync expects", bases_names[i]);
            goto done;
        }
    }
    tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, bases);
done:
    Py_XDECREF(bases);
    Py_DECREF(transports);
    return tp;
}
