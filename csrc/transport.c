/* What the C transports (stream.c, udp.c) share: the list of a loop's
 * live transports, the fd watch (a registration in the loop's own epoll
 * set, holding a reference to its transport while it watches), closing
 * it, a fd lost behind the transport's back, error reporting, and
 * write-buffer limits.  Every transport struct starts with
 * FA_TRANSPORT_HEAD (transport.h), so these functions take an fa_transport. */
#include "transport.h"
#include "handle.h"
#include "ioset.h"
#include "loop.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <sys/epoll.h>

static void transport_on_events(fa_reg *r, uint32_t events);
static void transport_reg_lost(fa_reg *r, int reason);

/* What the set tells a transport.  A closed fd met when the watch is added
 * is the transport's socket closed behind its back: a loss. */
static const fa_reg_ops transport_reg_ops = {
    .on_events = transport_on_events,
    .lost = transport_reg_lost,
    .closed_is_lost = 1,
};

static inline fa_transport *
transport_of(fa_reg *r)
{
    return (fa_transport *)((char *)r - offsetof(fa_transport, reg));
}

/* ------------------------------------------------------------ the list */

void
fa_transport_list_add(fa_transport *t)
{
    fa_transport *head = t->loop->transports;
    /* The identity of the fd's file, to never watch another file that
     * took its number after the transport's socket was closed behind its
     * back (ioset.c). */
    fa_reg_init(&t->reg, t->fd, &transport_reg_ops, 1);
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
    for (fa_transport *t = loop->transports; t != NULL; t = t->next) {
        if (t->fd == fd && t->sock != NULL && !t->fd_lent) {
            PyErr_Format(PyExc_RuntimeError, "File descriptor %d is used by transport %R", fd,
                         (PyObject *)t);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ the watch */

/* Stop watching the transport's fd (the fd stays open, owned by the
 * socket object).  Safe from any thread holding the GIL: the set is the
 * loop's own, and epoll_ctl() is thread-safe. */
void
fa_transport_unwatch(fa_transport *t)
{
    (void)fa_ioset_set(t->loop, &t->reg, 0);
    t->events = 0;
}

/* loop.close(): stop watching every transport's fd.  A transport that was
 * only kept alive by its watch is then collected, warning that it was not
 * closed, as with asyncio's loop. */
void
fa_transport_close_all(fa_loop *loop)
{
    PyObject *held = PyList_New(0);
    fa_transport *t = loop->transports, *next;
    for (; t != NULL; t = next) {
        next = t->next;
        fa_transport_unwatch(t);
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

/* The loop's receive buffer (FA_RECV_BUF_SIZE bytes), shared by its
 * transports: a read fills it and copies it into bytes before any Python
 * code runs, so one buffer per loop serves them all (as uvloop's does).
 * Allocated on first use, freed with the loop.  NULL with MemoryError. */
char *
fa_transport_recv_buf(fa_loop *loop)
{
    if (loop->recv_buf == NULL) {
        loop->recv_buf = PyMem_Malloc(FA_RECV_BUF_SIZE);
        if (loop->recv_buf == NULL) {
            PyErr_NoMemory();
        }
    }
    return loop->recv_buf;
}

static inline uint32_t
epoll_events(int want)
{
    return (want & UV_READABLE ? EPOLLIN : 0) | (want & UV_WRITABLE ? EPOLLOUT : 0);
}

/* Watch the fd for `want` (UV_READABLE | UV_WRITABLE, 0 for nothing) and
 * hold a reference to the transport while it watches.  The caller must
 * own a reference (the self-reference may be dropped here).  A fd found
 * closed or replaced ends the transport with an OSError (see
 * transport_lost), not here.  Returns -1 with an exception. */
int
fa_transport_watch(fa_transport *t, int want)
{
    int rc;
    if (t->fd < 0) {
        want = 0;
    }
    if (want != t->events) {
        if (want && fa_loop_check_closed(t->loop) < 0) {
            return -1;
        }
        rc = fa_ioset_set(t->loop, &t->reg, epoll_events(want));
        if (rc == FA_REG_CLOSED || rc == FA_REG_REPLACED) {
            want = 0; /* transport_lost() took over */
        }
        else if (rc < 0) {
            return fa_ioset_raise(t->loop, &t->reg, rc);
        }
        t->events = want;
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

/* The fd is ready: queue the transport's read and/or write Handle (once:
 * level-triggered, the set may report the fd again before the ready queue
 * runs).  The handles run the syscalls and check the transport's state.
 * On an error condition (a reset, an ICMP error on a UDP socket) both
 * sides retry their syscall, which reports and clears the error, after
 * the watch is stopped (as libuv's poll handles do), so that a side that
 * does not read the error cannot spin the loop; they restart it. */
static void
transport_on_events(fa_reg *r, uint32_t events)
{
    fa_transport *t = transport_of(r);
    fa_loop *loop = t->loop;
    int want = t->events, ready = 0;
    if (events & EPOLLERR) {
        (void)fa_ioset_set(loop, &t->reg, 0);
        t->events = 0;
        ready = UV_READABLE | UV_WRITABLE;
    }
    else {
        if ((events & (EPOLLIN | EPOLLOUT)) == 0) {
            ready = want; /* a bare hang-up: both watched sides see it */
        }
        if (events & EPOLLIN) {
            ready |= UV_READABLE;
        }
        if (events & EPOLLOUT) {
            ready |= UV_WRITABLE;
        }
        ready &= want;
    }
    if ((ready & UV_READABLE) && t->read_h != NULL && !t->read_h->queued) {
        if (fa_loop_push_ready(loop, t->read_h) == 0) {
            t->read_h->queued = 1;
        }
    }
    if ((ready & UV_WRITABLE) && t->write_h != NULL && !t->write_h->queued) {
        if (fa_loop_push_ready(loop, t->write_h) == 0) {
            t->write_h->queued = 1;
        }
    }
}

/* The loop's set found the transport's fd closed, or its number referring
 * to another file (closed and reused, dup2()): the socket was closed behind
 * the transport's back.  asyncio's transport would wait forever for a
 * reader (its fd silently left epoll) or fail its next write with EBADF;
 * this one stops using the number at once (a write must not reach the
 * file that now has it) and ends with _fatal_error(OSError(EBADF)), so
 * the protocol's connection_lost() gets that error.  The socket object is
 * detached, not closed, when released (see fa_transport_release_fd). */
static void
transport_lost(fa_transport *t, int reason)
{
    PyObject *exc, *cb = NULL, *args = NULL;
    fa_handle *h;
    if (t->fd_lost || t->sock == NULL) {
        return;
    }
    t->fd_lost = reason;
    t->fd = -1;
    t->events = 0;
    exc = fa_ioset_lost_error(t->reg.fd, reason);
    if (exc == NULL) {
        goto error;
    }
    cb = PyObject_GetAttrString((PyObject *)t, "_fatal_error");
    args = cb != NULL ? Py_BuildValue("(Os)", exc, "Fatal error on transport") : NULL;
    Py_DECREF(exc);
    if (args == NULL) {
        goto error;
    }
    h = fa_loop_call_soon(t->loop, cb, args, NULL);
    if (h == NULL) {
        goto error;
    }
    Py_DECREF(h);
    Py_DECREF(cb);
    Py_DECREF(args);
    return;
error:
    Py_XDECREF(cb);
    Py_XDECREF(args);
    PyErr_WriteUnraisable((PyObject *)t);
}

static void
transport_reg_lost(fa_reg *r, int reason)
{
    transport_lost(transport_of(r), reason);
}

/* The sweep (ioset.c) and the transports not in the set (reading paused,
 * nothing to write): they are checked by identity, so that their
 * connection ends now, not when they resume. */
static int
sweep_any(fa_loop *loop)
{
    return loop->transports != NULL;
}

static void
sweep_check(fa_loop *loop)
{
    for (fa_transport *t = loop->transports, *next; t != NULL; t = next) {
        next = t->next;
        if (t->events == 0 && t->fd >= 0 && t->sock != NULL && !t->fd_lost && t->reg.has_id) {
            int same = fa_reg_same_file(&t->reg);
            if (same != 1) {
                transport_lost(t, same);
            }
        }
    }
}

const fa_ioset_sweeper fa_transport_sweeper = {
    .any = sweep_any,
    .check = sweep_check,
};

/* The fd to make a syscall on: t->fd while the socket (or pipe) object
 * still owns it, else -1 with errno EBADF.  A socket object closed or
 * detached behind the transport's back gave its number up, and the number
 * may belong to another file by now: asyncio's transport calls the
 * object's own send()/recv(), which then fail with EBADF, and so does
 * this one (connection_lost gets that OSError), instead of reading or
 * writing whatever file has the number now.  One fileno() call. */
int
fa_transport_live_fd(fa_transport *t)
{
    PyObject *r;
    long fd = -1;
    if (t->fd < 0 || t->sock == NULL) {
        errno = EBADF;
        return -1;
    }
    r = PyObject_VectorcallMethod(t->loop->st->net.s_fileno, &t->sock,
                                  1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r != NULL) {
        fd = PyLong_Check(r) ? PyLong_AsLong(r) : -1;
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* a closed file object's fileno() raises ValueError */
        fd = -1;
    }
    if (fd == t->fd) {
        return t->fd;
    }
    t->fd_lost = FA_REG_CLOSED;
    (void)fa_ioset_set(t->loop, &t->reg, 0);
    t->events = 0; /* the next watch update drops the self-reference */
    t->fd = -1;
    errno = EBADF;
    return -1;
}

/* Let go of a socket object whose fd number may belong to another file by
 * now: a socket.socket still holding the number is detached (closing it
 * would close the number's new owner); one the user closed (fd -1) needs
 * nothing; anything else (a pipe's file object) is closed, as asyncio
 * would.  Returns a new reference or NULL with an exception. */
static PyObject *
release_lost_socket(fa_transport *t, PyObject *sock)
{
    PyObject *fdobj, *mod, *socktype = NULL;
    long fd;
    int is_sock = 0;
    fdobj = PyObject_CallMethod(sock, "fileno", NULL);
    if (fdobj == NULL) {
        PyErr_Clear();
        return PyObject_CallMethod(sock, "close", NULL);
    }
    fd = PyLong_Check(fdobj) ? PyLong_AsLong(fdobj) : -2;
    Py_DECREF(fdobj);
    PyErr_Clear();
    if (fd == -1) {
        Py_RETURN_NONE;
    }
    mod = PyImport_ImportModule("socket");
    if (mod != NULL) {
        socktype = PyObject_GetAttrString(mod, "socket");
        Py_DECREF(mod);
    }
    if (socktype != NULL) {
        is_sock = PyObject_IsInstance(sock, socktype);
        Py_DECREF(socktype);
    }
    if (is_sock < 0 || socktype == NULL) {
        PyErr_Clear();
        is_sock = 0;
    }
    if (is_sock && fd == t->reg.fd) {
        return PyObject_CallMethod(sock, "detach", NULL);
    }
    return PyObject_CallMethod(sock, "close", NULL);
}

/* Close the socket object after stopping the watch; the fd is -1 from
 * here.  A socket whose fd was closed behind the transport's back, or
 * whose number now refers to another file, is detached instead: closing it
 * would close the number's new owner.  Returns -1 with an exception if
 * sock.close() raised. */
int
fa_transport_release_fd(fa_transport *t)
{
    PyObject *sock = t->sock, *r;
    int detach = t->fd_lost != 0;
    fa_transport_unwatch(t);
    fa_transport_list_remove(t);
    if (!detach && t->fd >= 0 && fa_reg_same_file(&t->reg) != 1) {
        detach = 1;
    }
    t->fd = -1;
    if (sock == NULL) {
        return 0;
    }
    t->sock = NULL;
    r = detach ? release_lost_socket(t, sock) : PyObject_CallMethod(sock, "close", NULL);
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
    PyObject *msg = PyUnicode_FromString(message);
    if (msg == NULL ||
        fa_call_exception_handler((PyObject *)t->loop, msg, exc, "transport", (PyObject *)t,
                                  "protocol", t->protocol != NULL ? t->protocol : Py_None,
                                  NULL) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
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

/* ------------------------------------------------------------ closing */

/* The watch could not be updated on a path that cannot raise: report it. */
void
fa_transport_update_poll_or_report(fa_transport *t)
{
    if (t->ops->update_poll(t) < 0) {
        fa_transport_report_current(t);
    }
}

/* loop.call_soon(self._call_connection_lost, exc), once. */
int
fa_transport_schedule_lost(fa_transport *t, PyObject *exc)
{
    PyObject *cb, *args;
    fa_handle *h;
    if (t->lost_scheduled) {
        return 0;
    }
    if (fa_loop_check_closed(t->loop) < 0) {
        return -1; /* as asyncio's call_soon: RuntimeError('Event loop is closed') */
    }
    /* Set before the getattr, which may run Python code that closes the
     * transport again; cleared if scheduling fails, so that a later close()
     * or abort() can still deliver connection_lost. */
    t->lost_scheduled = 1;
    cb = PyObject_GetAttrString((PyObject *)t, "_call_connection_lost");
    args = cb != NULL ? PyTuple_Pack(1, exc != NULL ? exc : Py_None) : NULL;
    h = args != NULL ? fa_loop_call_soon(t->loop, cb, args, NULL) : NULL;
    Py_XDECREF(cb);
    Py_XDECREF(args);
    if (h == NULL) {
        t->lost_scheduled = 0;
        return -1;
    }
    Py_DECREF(h);
    return 0;
}

/* asyncio's _SelectorTransport._force_close: once, drop the unsent data,
 * stop reading and writing, connection_lost(exc) soon. */
int
fa_transport_force_close(fa_transport *t, PyObject *exc)
{
    if (t->conn_lost) {
        return 0;
    }
    t->ops->clear_buffer(t);
    t->closing = 1;
    t->conn_lost++;
    fa_transport_update_poll_or_report(t);
    return fa_transport_schedule_lost(t, exc);
}

/* _fatal_error: OSErrors are expected (peer resets, ...) and only close
 * the transport, unless its kind reports them (os_error_reported);
 * anything else also goes to the exception handler. */
int
fa_transport_fatal_error(fa_transport *t, PyObject *exc, const char *message)
{
    if (!PyErr_GivenExceptionMatches(exc, PyExc_OSError) ||
        t->ops->os_error_reported(t, exc, message)) {
        fa_transport_report(t, message, exc);
    }
    return t->ops->force_close(t, exc);
}

/* abort() */
PyObject *
fa_transport_abort(PyObject *self, PyObject *Py_UNUSED(unused))
{
    fa_transport *t = (fa_transport *)Py_NewRef(self);
    int r = t->ops->force_close(t, NULL);
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _force_close(exc) */
PyObject *
fa_transport_force_close_method(PyObject *self, PyObject *exc)
{
    fa_transport *t = (fa_transport *)Py_NewRef(self);
    int r = t->ops->force_close(t, exc == Py_None ? NULL : exc);
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _fatal_error(exc, message='Fatal error on transport'), as asyncio's
 * selector transports have it. */
PyObject *
fa_transport_fatal_error_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const names[] = {"exc", "message"};
    PyObject *argv[2];
    const char *message = "Fatal error on transport";
    Py_ssize_t len;
    /* Positional only, as before (asyncio's own calls pass both so). */
    if (fa_parse_args("_fatal_error", args, nargs, NULL, names, 2, 1, 2, argv) < 0) {
        return NULL;
    }
    PyObject *exc = argv[0];
    if (argv[1] != NULL) {
        /* A str without NUL characters, as the "s" format took it. */
        if (!PyUnicode_Check(argv[1])) {
            PyErr_Format(PyExc_TypeError, "_fatal_error() argument 2 must be str, not %.100s",
                         Py_TYPE(argv[1])->tp_name);
            return NULL;
        }
        message = PyUnicode_AsUTF8AndSize(argv[1], &len);
        if (message == NULL) {
            return NULL;
        }
        if ((size_t)len != strlen(message)) {
            PyErr_SetString(PyExc_ValueError, "embedded null character");
            return NULL;
        }
    }
    fa_transport *t = (fa_transport *)Py_NewRef(self);
    int r = fa_transport_fatal_error(t, exc, message);
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ protocol */

/* protocol.<method>(): its exception goes to the exception handler with
 * message; returns -1 only for KeyboardInterrupt/SystemExit. */
int
fa_transport_call_protocol(fa_transport *t, const char *method, const char *message)
{
    PyObject *r = PyObject_CallMethod(t->protocol, method, NULL);
    if (r == NULL) {
        if (fa_is_fatal_exception()) {
            return -1;
        }
        PyObject *exc = fa_fetch_exception();
        fa_transport_report(t, message, exc);
        Py_XDECREF(exc);
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------ methods */

PyObject *
fa_transport_is_closing(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyBool_FromLong(((fa_transport *)self)->closing);
}

PyObject *
fa_transport_get_protocol(PyObject *self, PyObject *Py_UNUSED(unused))
{
    PyObject *p = ((fa_transport *)self)->protocol;
    return Py_NewRef(p != NULL ? p : Py_None);
}

PyObject *
fa_transport_get_write_buffer_size(PyObject *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromSsize_t(((fa_transport *)self)->wsize);
}

PyObject *
fa_transport_get_write_buffer_limits(PyObject *self, PyObject *Py_UNUSED(unused))
{
    fa_transport *t = (fa_transport *)self;
    return Py_BuildValue("(nn)", t->low, t->high);
}

/* asyncio's _FlowControlMixin.set_write_buffer_limits. */
PyObject *
fa_transport_set_write_buffer_limits(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    static const char *const names[] = {"high", "low"};
    fa_transport *t = (fa_transport *)self;
    PyObject *argv[2];
    if (fa_parse_args("set_write_buffer_limits", args, nargs, kwnames, names, 2, 0, 2, argv) < 0) {
        return NULL;
    }
    PyObject *high = argv[0] != NULL ? argv[0] : Py_None;
    PyObject *low = argv[1] != NULL ? argv[1] : Py_None;
    if (fa_transport_parse_limits(high, low, &t->high, &t->low) < 0 ||
        fa_transport_maybe_pause_protocol(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _FlowControlMixin's methods, for code that calls them on a transport. */
PyObject *
fa_transport_maybe_pause_method(PyObject *self, PyObject *Py_UNUSED(unused))
{
    if (fa_transport_maybe_pause_protocol((fa_transport *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
fa_transport_maybe_resume_method(PyObject *self, PyObject *Py_UNUSED(unused))
{
    if (fa_transport_maybe_resume_protocol((fa_transport *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
fa_transport_get_high_water(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((fa_transport *)self)->high);
}

PyObject *
fa_transport_get_low_water(PyObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(((fa_transport *)self)->low);
}

PyObject *
fa_transport_get_protocol_paused(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((fa_transport *)self)->protocol_paused);
}

PyObject *
fa_transport_get_closing_attr(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((fa_transport *)self)->closing);
}

PyObject *
fa_transport_get_sock_attr(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *sock = ((fa_transport *)self)->sock;
    return Py_NewRef(sock != NULL ? sock : Py_None);
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
fa_transport_get_extra_info(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"name", "default"};
    PyObject *argv[2], *v;
    if (fa_parse_args("get_extra_info", args, nargs, kwnames, names, 2, 1, 2, argv) < 0) {
        return NULL;
    }
    v = PyDict_GetItemWithError(((fa_transport *)self)->extra, argv[0]);
    if (v == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(argv[1] != NULL ? argv[1] : Py_None);
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
            fa_transport_unwatch(t);
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
