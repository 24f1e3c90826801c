/* sock_*: asyncio's low-level socket methods on the C loop.
 *
 * Each call first tries the socket operation.  When it does not block, the
 * coroutine returns its result with no future, no Handle and no fd watch.
 * Otherwise it registers a reader or writer Handle for the fd through the
 * same watchers as add_reader()/add_writer(), and retries whenever the fd
 * is ready, as asyncio's selector loop does.  There is one reader and one
 * writer per fd (libuv allows one uv_poll_t per fd), so a second sock_recv()
 * on a socket replaces the first one's watch exactly as in asyncio.
 *
 * The socket object's own methods (recv, send, accept, connect, ...) do the
 * syscalls, as in asyncio and uvloop: argument handling, address formats
 * and exceptions are then the ones asyncio users already get.
 *
 * One deliberate difference: asyncio checks that the socket is
 * non-blocking only in debug mode.  We always check, because a blocking
 * socket would stall every coroutine on the loop, and on the app loop every
 * request of the process. */
#include "handle.h"
#include "ioset.h"
#include "loop.h"
#include "net.h"
#include "op.h"
#include "state.h"
#include "util.h"
#include "watcher.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* op->phase */
enum {
    PHASE_START = 0,
    PHASE_FD,          /* waiting for the fd, on op->fut */
    PHASE_RESOLVE,     /* sock_connect: awaiting loop.getaddrinfo() */
    PHASE_FB_READ,     /* sock_sendfile fallback: awaiting file.readinto */
    PHASE_FB_SEND,     /* sock_sendfile fallback: awaiting sock_sendall */
};

/* Argument slots (fa_op.argv).  Slot 0 is always the socket. */
enum { A_SOCK = 0, A_1 = 1, A_2 = 2, A_3 = 3, A_4 = 4, A_5 = 5 };

/* asyncio.constants.SENDFILE_FALLBACK_READBUFFER_SIZE */
#define SENDFILE_FALLBACK_READBUFFER_SIZE (1024 * 256)

/* ------------------------------------------------------------ helpers */

static inline fa_net_state *
net_of(fa_op *op)
{
    return &op->loop->st->net;
}

/* Call sock.<name>(*args[1:]), args[0] being the socket.  Returns 1 with
 * *res set, 0 if it would block (BlockingIOError or InterruptedError, which
 * asyncio retries when the fd is next ready), -1 on any other error. */
static int
try_call(PyObject *name, PyObject *const *args, size_t nargs, PyObject **res)
{
    *res = PyObject_VectorcallMethod(name, args, nargs, NULL);
    if (*res != NULL) {
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
        PyErr_ExceptionMatches(PyExc_InterruptedError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}


/* asyncio's checks: not an ssl.SSLSocket, and non-blocking (see above). */
static int
check_sock(fa_op *op)
{
    fa_net_state *net = net_of(op);
    PyObject *sock = op->argv[A_SOCK], *t;
    int r;

    if (net->SSLSocket == NULL) {
        /* An SSLSocket exists only once ssl is imported: look it up then. */
        PyObject *ssl = PyImport_GetModule(net->s_ssl);
        if (ssl == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (ssl != NULL) {
            net->SSLSocket = PyObject_GetAttrString(ssl, "SSLSocket");
            Py_DECREF(ssl);
            if (net->SSLSocket == NULL) {
                PyErr_Clear(); /* ssl is still initialising */
            }
        }
    }
    if (net->SSLSocket != NULL) {
        r = PyObject_IsInstance(sock, net->SSLSocket);
        if (r < 0) {
            return -1;
        }
        if (r) {
            PyErr_SetString(PyExc_TypeError, "Socket cannot be of type SSLSocket");
            return -1;
        }
    }
    t = PyObject_CallMethodNoArgs(sock, net->s_gettimeout);
    if (t == NULL) {
        return -1;
    }
    r = t != Py_None;
    if (r) {
        double v = PyFloat_AsDouble(t);
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(t);
            return -1;
        }
        r = v == 0.0;
    }
    Py_DECREF(t);
    if (!r) {
        PyErr_SetString(PyExc_ValueError, "the socket must be non-blocking");
        return -1;
    }
    return 0;
}

static int
sock_fileno(fa_op *op)
{
    PyObject *r = PyObject_CallMethodNoArgs(op->argv[A_SOCK], net_of(op)->s_fileno);
    long fd;
    if (r == NULL) {
        return -2;
    }
    fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred()) {
        return -2;
    }
    if (fd < -1 || fd > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -2;
    }
    return (int)fd;
}

/* ------------------------------------------------------ waiting on fd */

/* Why the fd op waits on through h went away (FA_REG_CLOSED,
 * FA_REG_REPLACED: the watcher found it lost), or 0. */
static inline int
fd_lost(fa_handle *h)
{
    return h != NULL && h->fd_wait != FA_FD_WAITING ? h->fd_wait : 0;
}

/* Stop watching the fd, unless another caller replaced our Handle since
 * (add_reader cancels the Handle it replaces), as asyncio's
 * _sock_read_done/_sock_write_done do, or the fd was lost and its watch
 * dropped (the number may be watched for another file by now). */
static int
unwatch(fa_op *op)
{
    fa_handle *h = op->handle;
    PyObject *key, *r;
    fa_watcher *w;
    int lost = fd_lost(h);
    op->handle = NULL;
    if (h == NULL) {
        return 0;
    }
    if (h->cancelled) {
        Py_DECREF(h);
        return 0;
    }
    key = PyLong_FromLong(op->fd);
    if (key == NULL) {
        Py_DECREF(h);
        return -1;
    }
    w = (fa_watcher *)PyDict_GetItemWithError(op->loop->watchers, key);
    if (w == NULL || (op->events == UV_READABLE ? w->reader : w->writer) != h) {
        Py_DECREF(h);
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(h);
    r = fa_loop_remove_io(op->loop, key, op->events | (lost ? FA_IO_UNCHECKED : 0));
    Py_DECREF(key);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The fd is ready: retry the operation unless the future is already done
 * (cancelled in an earlier iteration). */
static PyObject *
sock_fd_ready(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    fa_op *op = (fa_op *)self;
    fa_state *st = op->loop->st;
    PyObject *fut = op->fut, *done, *r;
    int status;

    if (fut == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(fut);
    done = PyObject_CallMethodNoArgs(fut, st->s_done);
    if (done == NULL) {
        goto error;
    }
    if (done == Py_True) {
        Py_DECREF(done);
        Py_DECREF(fut);
        Py_RETURN_NONE;
    }
    Py_DECREF(done);
    if (fd_lost(op->handle)) {
        /* The fd was closed (or now refers to another file) while we
         * waited: asyncio's call would wait forever; fail clearly, and
         * never retry the syscall on whatever the number is now. */
        PyObject *exc = fa_ioset_lost_error(op->fd, fd_lost(op->handle));
        if (exc == NULL) {
            goto error;
        }
        r = PyObject_CallMethodOneArg(fut, st->s_set_exception, exc);
        Py_DECREF(exc);
        Py_DECREF(fut);
        return r;
    }
    status = op->kind->ready(op);
    if (status == 0) {
        Py_DECREF(fut);
        Py_RETURN_NONE;
    }
    if (status > 0) {
        PyObject *res = op->result;
        op->result = NULL;
        r = PyObject_CallMethodOneArg(fut, st->s_set_result, res);
        Py_DECREF(res);
    }
    else {
        PyObject *exc;
        if (fa_is_fatal_exception()) {
            /* asyncio re-raises these out of the loop. */
            goto error;
        }
        exc = fa_fetch_exception();
        if (exc == NULL) {
            goto error;
        }
        r = PyObject_CallMethodOneArg(fut, st->s_set_exception, exc);
        Py_DECREF(exc);
    }
    Py_DECREF(fut);
    return r;

error:
    Py_DECREF(fut);
    return NULL;
}

/* The future is done (result, exception or cancelled): stop watching. */
static PyObject *
sock_fut_done(PyObject *self, PyObject *Py_UNUSED(fut))
{
    fa_op *op = (fa_op *)self;
    if (op->has_view) {
        op->has_view = 0;
        PyBuffer_Release(&op->view);
    }
    if (unwatch(op) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef sock_fd_ready_def = {"_sock_ready", sock_fd_ready, METH_NOARGS, NULL};
static PyMethodDef sock_fut_done_def = {"_sock_done", sock_fut_done, METH_O, NULL};

/* Register op's ready callback as fd's reader or writer and keep its
 * Handle, to know later whether it was replaced. */
static int
watch(fa_op *op, int fd, int events)
{
    PyObject *args[2], *r, *key;
    fa_watcher *w;
    fa_handle *h;

    key = PyLong_FromLong(fd);
    if (key == NULL) {
        return -1;
    }
    args[0] = key;
    args[1] = PyCFunction_New(&sock_fd_ready_def, (PyObject *)op);
    if (args[1] == NULL) {
        Py_DECREF(key);
        return -1;
    }
    r = fa_loop_add_io(op->loop, args, 2, events | FA_IO_SOCK_WAIT);
    Py_DECREF(args[1]);
    if (r == NULL) {
        Py_DECREF(key);
        return -1;
    }
    Py_DECREF(r);
    w = (fa_watcher *)PyDict_GetItemWithError(op->loop->watchers, key);
    Py_DECREF(key);
    h = w == NULL ? NULL : events == UV_READABLE ? w->reader : w->writer;
    if (h == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "fd watcher vanished after add_reader()");
        }
        return -1;
    }
    op->handle = (fa_handle *)Py_NewRef(h);
    op->fd = fd;
    op->events = events;
    return 0;
}

/* The operation would block: make the future, watch the fd, await. */
static int
wait_fd(fa_op *op, int events)
{
    PyObject *fut, *cb, *r;
    int fd;

    fut = fa_op_new_future(op);
    if (fut == NULL) {
        return -1;
    }
    fd = sock_fileno(op);
    if (fd < -1) {
        return -1;
    }
    if (watch(op, fd, events) < 0) {
        return -1;
    }
    cb = PyCFunction_New(&sock_fut_done_def, (PyObject *)op);
    r = cb ? PyObject_CallMethodOneArg(fut, op->loop->st->s_add_done_callback, cb) : NULL;
    Py_XDECREF(cb);
    if (r == NULL) {
        PyObject *exc = fa_fetch_exception();
        if (unwatch(op) < 0) {
            PyErr_Clear();
        }
        fa_restore_exception(exc);
        return -1;
    }
    Py_DECREF(r);
    op->phase = PHASE_FD;
    return fa_op_await_future(op);
}

/* Try once (the kind's ready function), then wait for `events` if that
 * would block.  After the wait, the future's result is the op's. */
static int
try_or_wait(fa_op *op, int events)
{
    int r = op->kind->ready(op);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        return FA_OP_DONE;
    }
    return wait_fd(op, events);
}

/* A wait on the fd is over: its result is the coroutine's. */
static int
fd_result(fa_op *op, PyObject *value)
{
    op->result = Py_NewRef(value);
    return FA_OP_DONE;
}

/* ------------------------------------------------------------ receive */

static int
recv_ready(fa_op *op)
{
    return try_call(net_of(op)->s_recv, op->argv, 2, &op->result);
}

static int
recv_into_ready(fa_op *op)
{
    return try_call(net_of(op)->s_recv_into, op->argv, 2, &op->result);
}

static int
recvfrom_ready(fa_op *op)
{
    return try_call(net_of(op)->s_recvfrom, op->argv, 2, &op->result);
}

static int
recvfrom_into_ready(fa_op *op)
{
    return try_call(net_of(op)->s_recvfrom_into, op->argv, 3, &op->result);
}

/* sock_recv, sock_recv_into, sock_recvfrom: check, try, wait to read. */
static int
read_step(fa_op *op, PyObject *value)
{
    if (value != NULL) {
        return fd_result(op, value);
    }
    if (check_sock(op) < 0) {
        return -1;
    }
    return try_or_wait(op, UV_READABLE);
}

static int
recvfrom_into_step(fa_op *op, PyObject *value)
{
    int truth;
    if (value != NULL) {
        return fd_result(op, value);
    }
    if (check_sock(op) < 0) {
        return -1;
    }
    /* `if not nbytes: nbytes = len(buf)` */
    truth = op->argv[A_2] == NULL ? 0 : PyObject_IsTrue(op->argv[A_2]);
    if (truth < 0) {
        return -1;
    }
    if (!truth) {
        Py_ssize_t n = PyObject_Size(op->argv[A_1]);
        if (n < 0) {
            return -1;
        }
        Py_XSETREF(op->argv[A_2], PyLong_FromSsize_t(n));
        if (op->argv[A_2] == NULL) {
            return -1;
        }
    }
    return try_or_wait(op, UV_READABLE);
}

/* --------------------------------------------------------------- send */

/* sock_sendall after a partial send: send the rest of the buffer. */
static int
sendall_ready(fa_op *op)
{
    PyObject *mv, *n, *args[2];
    Py_ssize_t sent;
    int r;

    /* A memoryview that owns a buffer export of the data: send() may keep
     * its argument after op->view is released (a recording socket, a mock). */
    {
        PyObject *full = PyMemoryView_FromObject(op->argv[A_1]);
        if (full == NULL) {
            return -1;
        }
        mv = PySequence_GetSlice(full, op->pos, op->view.len);
        Py_DECREF(full);
        if (mv == NULL) {
            return -1;
        }
    }
    args[0] = op->argv[A_SOCK];
    args[1] = mv;
    r = try_call(net_of(op)->s_send, args, 2, &n);
    Py_DECREF(mv);
    if (r <= 0) {
        return r;
    }
    sent = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    if (sent == -1 && PyErr_Occurred()) {
        return -1;
    }
    op->pos += sent;
    if (op->pos < op->view.len) {
        return 0;
    }
    op->result = Py_NewRef(Py_None);
    return 1;
}

static int
sendall_step(fa_op *op, PyObject *value)
{
    PyObject *n = NULL;
    Py_ssize_t sent = 0;
    int r;

    if (value != NULL) {
        return fd_result(op, value);
    }
    if (check_sock(op) < 0) {
        return -1;
    }
    r = try_call(net_of(op)->s_send, op->argv, 2, &n);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        sent = PyLong_AsSsize_t(n);
        Py_DECREF(n);
        if (sent == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    /* send() accepted the object, so it exports a contiguous buffer; hold
     * it (as asyncio's memoryview does) until everything is sent. */
    if (PyObject_GetBuffer(op->argv[A_1], &op->view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    op->has_view = 1;
    if (sent >= op->view.len) {
        op->has_view = 0;
        PyBuffer_Release(&op->view);
        op->result = Py_NewRef(Py_None);
        return FA_OP_DONE;
    }
    op->pos = sent;
    return wait_fd(op, UV_WRITABLE);
}

static int
sendto_ready(fa_op *op)
{
    PyObject *zero = PyLong_FromLong(0), *args[4];
    int r;
    if (zero == NULL) {
        return -1;
    }
    args[0] = op->argv[A_SOCK];
    args[1] = op->argv[A_1];
    args[2] = zero;
    args[3] = op->argv[A_2];
    r = try_call(net_of(op)->s_sendto, args, 4, &op->result);
    Py_DECREF(zero);
    return r;
}

static int
sendto_step(fa_op *op, PyObject *value)
{
    int r;
    if (value != NULL) {
        return fd_result(op, value);
    }
    if (check_sock(op) < 0) {
        return -1;
    }
    /* asyncio's first try is sock.sendto(data, address); retries pass
     * flags=0 explicitly (sendto_ready).  Same call either way. */
    r = try_call(net_of(op)->s_sendto, op->argv, 3, &op->result);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        return FA_OP_DONE;
    }
    return wait_fd(op, UV_WRITABLE);
}

/* ------------------------------------------------------------- accept */

static int
accept_ready(fa_op *op)
{
    PyObject *pair, *seq, *r;
    int status = try_call(net_of(op)->s_accept, op->argv, 1, &pair);
    if (status <= 0) {
        return status;
    }
    /* conn, address = sock.accept(); conn.setblocking(False) */
    seq = PySequence_Fast(pair, "cannot unpack non-iterable object");
    Py_DECREF(pair);
    if (seq == NULL) {
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
        PyErr_Format(PyExc_ValueError, "accept() returned %zd values, expected 2",
                     PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return -1;
    }
    r = PyObject_CallMethodOneArg(PySequence_Fast_GET_ITEM(seq, 0), net_of(op)->s_setblocking,
                                  Py_False);
    if (r == NULL) {
        Py_DECREF(seq);
        return -1;
    }
    Py_DECREF(r);
    op->result = PyTuple_Pack(2, PySequence_Fast_GET_ITEM(seq, 0),
                              PySequence_Fast_GET_ITEM(seq, 1));
    Py_DECREF(seq);
    return op->result == NULL ? -1 : 1;
}

/* ------------------------------------------------------------ connect */

/* `a, b = seq` for a sequence of exactly n items: a new fast sequence. */
static PyObject *
unpack(PyObject *obj, Py_ssize_t n)
{
    PyObject *seq = PySequence_Fast(obj, "cannot unpack non-iterable object");
    if (seq == NULL) {
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) < n) {
        PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected %zd, got %zd)", n,
                     PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) > n) {
        PyErr_Format(PyExc_ValueError, "too many values to unpack (expected %zd)", n);
        Py_DECREF(seq);
        return NULL;
    }
    return seq;
}

/* address[lo:hi] (hi < 0: to the end), with the errors of a subscript. */
static PyObject *
slice_of(PyObject *address, Py_ssize_t lo, Py_ssize_t hi)
{
    PyObject *slice, *res;
    PyObject *start = PyLong_FromSsize_t(lo);
    PyObject *stop = hi >= 0 ? PyLong_FromSsize_t(hi) : Py_NewRef(Py_None);
    if (start == NULL || stop == NULL) {
        Py_XDECREF(start);
        Py_XDECREF(stop);
        return NULL;
    }
    slice = PySlice_New(start, stop, NULL);
    Py_DECREF(start);
    Py_DECREF(stop);
    if (slice == NULL) {
        return NULL;
    }
    res = PyObject_GetItem(address, slice);
    Py_DECREF(slice);
    return res;
}

/* asyncio.base_events._ipaddr_info() as sock_connect uses it: the sockaddr
 * to connect to when host already is an IP address, Py_None when it needs
 * getaddrinfo, NULL with asyncio's exception on error. */
static PyObject *
ipaddr_info(PyObject *host, PyObject *port, long family, long type, long proto,
            PyObject *flowinfo, PyObject *scopeid)
{
    PyObject *portnum = NULL, *res = NULL, *pct = NULL;
    int afs[2], naf, contains;

    if ((proto != 0 && proto != IPPROTO_TCP && proto != IPPROTO_UDP) || host == Py_None) {
        Py_RETURN_NONE;
    }
    if (type != SOCK_STREAM && type != SOCK_DGRAM) {
        Py_RETURN_NONE;
    }
    if (port == Py_None || (PyBytes_Check(port) && PyBytes_GET_SIZE(port) == 0) ||
        (PyUnicode_Check(port) && PyUnicode_GET_LENGTH(port) == 0)) {
        portnum = PyLong_FromLong(0);
    }
    else {
        /* A service name such as "http" needs getaddrinfo. */
        portnum = PyNumber_Long(port);
        if (portnum == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError) ||
                PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                Py_RETURN_NONE;
            }
            return NULL;
        }
    }
    if (portnum == NULL) {
        return NULL;
    }
    if (family == AF_UNSPEC) {
        afs[0] = AF_INET;
        afs[1] = AF_INET6;
        naf = 2;
    }
    else {
        afs[0] = (int)family;
        naf = 1;
    }
    if (PyBytes_Check(host)) {
        host = PyUnicode_FromEncodedObject(host, "idna", NULL);
        if (host == NULL) {
            goto done;
        }
    }
    else {
        Py_INCREF(host);
    }
    /* Linux's inet_pton doesn't accept an IPv6 zone index ('::1%lo0'). */
    pct = PyUnicode_FromString("%");
    contains = pct ? PySequence_Contains(host, pct) : -1;
    if (contains < 0) {
        goto done;
    }
    if (contains) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    for (int i = 0; i < naf; i++) {
        unsigned char buf[sizeof(struct in6_addr)];
        const char *s;
        Py_ssize_t len;
        if (afs[i] != AF_INET && afs[i] != AF_INET6) {
            continue;
        }
        if (!PyUnicode_Check(host)) {
            PyErr_Format(PyExc_TypeError, "inet_pton() argument 2 must be str, not %.50s",
                         Py_TYPE(host)->tp_name);
            goto done;
        }
        s = PyUnicode_AsUTF8AndSize(host, &len);
        if (s == NULL) {
            goto done;
        }
        if ((size_t)len != strlen(s)) {
            PyErr_SetString(PyExc_ValueError, "embedded null character");
            goto done;
        }
        if (inet_pton(afs[i], s, buf) == 1) {
            if (afs[i] == AF_INET6) {
                res = PyTuple_Pack(4, host, portnum, flowinfo, scopeid);
            }
            else {
                res = PyTuple_Pack(2, host, portnum);
            }
            goto done;
        }
    }
    res = Py_NewRef(Py_None);

done:
    Py_XDECREF(pct);
    Py_XDECREF(host);
    Py_DECREF(portnum);
    return res;
}

static int
connect_ready(fa_op *op)
{
    fa_net_state *net = net_of(op);
    PyObject *args[3], *err, *msg, *exc;
    long e;
    int r;

    args[0] = op->argv[A_SOCK];
    args[1] = PyLong_FromLong(SOL_SOCKET);
    args[2] = PyLong_FromLong(SO_ERROR);
    if (args[1] == NULL || args[2] == NULL) {
        Py_XDECREF(args[1]);
        Py_XDECREF(args[2]);
        return -1;
    }
    r = try_call(net->s_getsockopt, args, 3, &err);
    Py_DECREF(args[1]);
    Py_DECREF(args[2]);
    if (r <= 0) {
        return r;
    }
    e = PyLong_AsLong(err);
    Py_DECREF(err);
    if (e == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (e != 0) {
        /* OSError(err, f'Connect call failed {address}'): OSError picks the
         * subclass for the errno (ConnectionRefusedError, ...). */
        msg = PyUnicode_FromFormat("Connect call failed %S", op->argv[A_2]);
        if (msg == NULL) {
            return -1;
        }
        exc = PyObject_CallFunction(PyExc_OSError, "lO", e, msg);
        Py_DECREF(msg);
        if (exc == NULL) {
            return -1;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
        return -1;
    }
    op->result = Py_NewRef(Py_None);
    return 1;
}

static int
connect_to(fa_op *op, PyObject *address)
{
    PyObject *args[2] = {op->argv[A_SOCK], address};
    int r;
    Py_XSETREF(op->argv[A_2], Py_NewRef(address));
    r = try_call(net_of(op)->s_connect, args, 2, &op->result);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        return FA_OP_DONE;
    }
    /* EINPROGRESS (a BlockingIOError), or EINTR: the connection goes on in
     * the background and the fd turns writable when it is decided. */
    return wait_fd(op, UV_WRITABLE);
}

/* asyncio's _ensure_resolved() for an AF_INET/AF_INET6 socket: connect at
 * once to an IP address, else await loop.getaddrinfo() first. */
static int
connect_resolve(fa_op *op, PyObject *famobj)
{
    fa_net_state *net = net_of(op);
    PyObject *address = op->argv[A_1];
    PyObject *head = NULL, *rest = NULL, *hp = NULL, *typeobj = NULL, *protoobj = NULL;
    PyObject *info = NULL, *zero = NULL, *aw = NULL;
    PyObject *flowinfo = NULL, *scopeid = NULL;
    long family, type, proto;
    int r = -1;

    family = PyLong_AsLong(famobj);
    if (family == -1 && PyErr_Occurred()) {
        return -1;
    }
    typeobj = PyObject_GetAttr(op->argv[A_SOCK], net->s_type);
    if (typeobj == NULL) {
        goto done;
    }
    protoobj = PyObject_GetAttr(op->argv[A_SOCK], net->s_proto);
    if (protoobj == NULL) {
        goto done;
    }
    type = PyLong_AsLong(typeobj);
    if (type == -1 && PyErr_Occurred()) {
        goto done;
    }
    proto = PyLong_AsLong(protoobj);
    if (proto == -1 && PyErr_Occurred()) {
        goto done;
    }
    /* host, port = address[:2]; _ipaddr_info(host, port, ..., *address[2:]) */
    head = slice_of(address, 0, 2);
    if (head == NULL || (hp = unpack(head, 2)) == NULL) {
        goto done;
    }
    rest = slice_of(address, 2, -1);
    if (rest == NULL) {
        goto done;
    }
    Py_SETREF(rest, PySequence_Fast(rest, "argument after * must be an iterable"));
    if (rest == NULL) {
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(rest) > 2) {
        PyErr_Format(PyExc_TypeError,
                     "_ipaddr_info() takes from 5 to 7 positional arguments but %zd were given",
                     5 + PySequence_Fast_GET_SIZE(rest));
        goto done;
    }
    zero = PyLong_FromLong(0);
    if (zero == NULL) {
        goto done;
    }
    flowinfo = PySequence_Fast_GET_SIZE(rest) > 0 ? PySequence_Fast_GET_ITEM(rest, 0) : zero;
    scopeid = PySequence_Fast_GET_SIZE(rest) > 1 ? PySequence_Fast_GET_ITEM(rest, 1) : zero;
    info = ipaddr_info(PySequence_Fast_GET_ITEM(hp, 0), PySequence_Fast_GET_ITEM(hp, 1),
                       family, type, proto, flowinfo, scopeid);
    if (info == NULL) {
        goto done;
    }
    if (info != Py_None) {
        r = connect_to(op, info);
        goto done;
    }
    {
        PyObject *args[7] = {(PyObject *)op->loop, PySequence_Fast_GET_ITEM(hp, 0),
                             PySequence_Fast_GET_ITEM(hp, 1), famobj, typeobj, protoobj, zero};
        aw = PyObject_VectorcallMethod(net->s_getaddrinfo, args, 3, net->k_gai);
    }
    if (aw == NULL) {
        goto done;
    }
    op->phase = PHASE_RESOLVE;
    r = fa_op_await(op, aw);

done:
    Py_XDECREF(aw);
    Py_XDECREF(info);
    Py_XDECREF(zero);
    Py_XDECREF(rest);
    Py_XDECREF(hp);
    Py_XDECREF(head);
    Py_XDECREF(protoobj);
    Py_XDECREF(typeobj);
    return r;
}

static int
connect_step(fa_op *op, PyObject *value)
{
    PyObject *famobj, *first, *addr;
    long family;
    int r;

    switch (op->phase) {
    case PHASE_FD:
        return fd_result(op, value);
    case PHASE_RESOLVE:
        /* _, _, _, _, address = resolved[0] */
        first = PySequence_GetItem(value, 0);
        if (first == NULL) {
            return -1;
        }
        addr = unpack(first, 5);
        Py_DECREF(first);
        if (addr == NULL) {
            return -1;
        }
        r = connect_to(op, PySequence_Fast_GET_ITEM(addr, 4));
        Py_DECREF(addr);
        return r;
    default:
        break;
    }
    if (check_sock(op) < 0) {
        return -1;
    }
    famobj = PyObject_GetAttr(op->argv[A_SOCK], net_of(op)->s_family);
    if (famobj == NULL) {
        return -1;
    }
    family = PyLong_AsLong(famobj);
    if (family == -1 && PyErr_Occurred()) {
        Py_DECREF(famobj);
        return -1;
    }
    if (family == AF_INET || family == AF_INET6) {
        r = connect_resolve(op, famobj);
    }
    else {
        r = connect_to(op, op->argv[A_1]);
    }
    Py_DECREF(famobj);
    return r;
}

/* ----------------------------------------------------------- sendfile */

/* asyncio's _sock_sendfile_update_filepos: leave the file position after
 * the bytes sent, whichever way the operation ended. */
static void
sendfile_update_filepos(fa_op *op)
{
    if (op->filepos_done || op->pos <= 0) {
        return;
    }
    op->filepos_done = 1;
    if (op->phase == PHASE_FB_READ || op->phase == PHASE_FB_SEND) {
        /* Fallback: file.seek(offset + total_sent) if it has seek(). */
        PyObject *r = PyObject_CallMethod(op->argv[A_1], "seek", "L", op->offset + op->pos);
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
            }
            else {
                PyErr_WriteUnraisable((PyObject *)op);
            }
        }
        Py_XDECREF(r);
    }
    else if (op->in_fd >= 0) {
        /* Native: op->offset already advanced past the bytes sent. */
        (void)lseek(op->in_fd, (off_t)op->offset, SEEK_SET);
    }
}

static void
sendfile_finish(fa_op *op)
{
    sendfile_update_filepos(op);
}

/* One sendfile(2) call, as _sock_sendfile_native_impl makes one per
 * readiness.  The result Py_None means "sendfile failed before sending
 * anything": the step then falls back to plain sends. */
static int
sendfile_native_ready(fa_op *op)
{
    long long blocksize = op->blocksize;
    off_t off = (off_t)op->offset;
    ssize_t sent;

    if (op->count) {
        blocksize = op->count - op->pos;
        if (blocksize <= 0) {
            sendfile_update_filepos(op);
            op->result = PyLong_FromSsize_t(op->pos);
            return op->result ? 1 : -1;
        }
    }
    do {
        sent = sendfile(op->fd, op->in_fd, &off, (size_t)blocksize);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        if (op->pos == 0) {
            /* Not a file sendfile(2) can read, for one: plain sends may
             * still work. */
            op->result = Py_NewRef(Py_None);
            return 1;
        }
        sendfile_update_filepos(op);
        if (op->phase == PHASE_FD && err == ENOTCONN) {
            /* The peer went away mid-transfer: asyncio normalizes this to
             * ConnectionError across platforms. */
            PyObject *cause, *exc;
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            cause = fa_fetch_exception();
            exc = PyObject_CallFunction(PyExc_ConnectionError, "si", "socket is not connected",
                                        ENOTCONN);
            if (exc != NULL && cause != NULL) {
                PyException_SetCause(exc, Py_NewRef(cause));
                PyErr_SetObject(PyExc_ConnectionError, exc);
            }
            Py_XDECREF(exc);
            Py_XDECREF(cause);
            return -1;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (sent == 0) {
        /* EOF */
        sendfile_update_filepos(op);
        op->result = PyLong_FromSsize_t(op->pos);
        return op->result ? 1 : -1;
    }
    op->offset += sent;
    op->pos += sent;
    return 0;
}

/* _sock_sendfile_fallback: read a block in the executor, sock_sendall it. */
static int
sendfile_fallback_next(fa_op *op)
{
    fa_net_state *net = net_of(op);
    PyObject *mv, *view, *readinto, *aw, *args[4];
    long long blocksize = op->blocksize;

    if (op->count) {
        if (op->count - op->pos < blocksize) {
            blocksize = op->count - op->pos;
        }
        if (blocksize <= 0) {
            goto finished;
        }
        op->blocksize = blocksize;
    }
    mv = PyMemoryView_FromObject(op->argv[A_5]);
    if (mv == NULL) {
        return -1;
    }
    view = slice_of(mv, 0, (Py_ssize_t)blocksize);
    Py_DECREF(mv);
    if (view == NULL) {
        return -1;
    }
    readinto = PyObject_GetAttr(op->argv[A_1], net->s_readinto);
    if (readinto == NULL) {
        Py_DECREF(view);
        return -1;
    }
    args[0] = (PyObject *)op->loop;
    args[1] = Py_None;
    args[2] = readinto;
    args[3] = view;
    aw = PyObject_VectorcallMethod(net->s_run_in_executor, args, 4, NULL);
    Py_DECREF(readinto);
    Py_DECREF(view);
    if (aw == NULL) {
        return -1;
    }
    op->phase = PHASE_FB_READ;
    {
        int r = fa_op_await(op, aw);
        Py_DECREF(aw);
        return r;
    }

finished:
    sendfile_update_filepos(op);
    op->result = PyLong_FromSsize_t(op->pos);
    return op->result ? FA_OP_DONE : -1;
}

static int
sendfile_fallback_start(fa_op *op)
{
    long long blocksize = SENDFILE_FALLBACK_READBUFFER_SIZE;
    op->phase = PHASE_FB_READ;
    op->pos = 0;
    op->filepos_done = 0;
    if (op->offset) {
        PyObject *r = PyObject_CallMethod(op->argv[A_1], "seek", "L", op->offset);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (op->count && op->count < blocksize) {
        blocksize = op->count;
    }
    op->blocksize = blocksize;
    Py_XSETREF(op->argv[A_5], PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)blocksize));
    if (op->argv[A_5] == NULL) {
        return -1;
    }
    return sendfile_fallback_next(op);
}

/* The native path is not available: fall back, or raise if fallback=False. */
static int
sendfile_fail_not_available(fa_op *op, const char *why)
{
    int fallback = op->argv[A_4] == NULL ? 1 : PyObject_IsTrue(op->argv[A_4]);
    if (fallback < 0) {
        return -1;
    }
    if (!fallback) {
        PyErr_SetString(net_of(op)->SendfileNotAvailableError, why);
        return -1;
    }
    return sendfile_fallback_start(op);
}

/* _check_sendfile_params() */
static int
sendfile_check_params(fa_op *op)
{
    PyObject *file = op->argv[A_1], *offset = op->argv[A_2], *count = op->argv[A_3];
    PyObject *mode, *b, *type;
    int r;

    mode = PyObject_GetAttr(file, net_of(op)->s_mode);
    if (mode == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
    }
    else {
        b = PyUnicode_FromString("b");
        r = b ? PySequence_Contains(mode, b) : -1;
        Py_XDECREF(b);
        Py_DECREF(mode);
        if (r < 0) {
            return -1;
        }
        if (!r) {
            PyErr_SetString(PyExc_ValueError, "file should be opened in binary mode");
            return -1;
        }
    }
    type = PyObject_GetAttr(op->argv[A_SOCK], net_of(op)->s_type);
    if (type == NULL) {
        return -1;
    }
    b = PyLong_FromLong(SOCK_STREAM);
    r = b ? PyObject_RichCompareBool(type, b, Py_EQ) : -1;
    Py_XDECREF(b);
    Py_DECREF(type);
    if (r < 0) {
        return -1;
    }
    if (!r) {
        PyErr_SetString(PyExc_ValueError, "only SOCK_STREAM type sockets are supported");
        return -1;
    }
    if (count != NULL && count != Py_None) {
        if (!PyLong_Check(count)) {
            PyErr_Format(PyExc_TypeError, "count must be a positive integer (got %R)", count);
            return -1;
        }
        /* asyncio compares in Python: a count beyond any file size means
         * "all of it", a hugely negative one is not positive. */
        int overflow;
        op->count = PyLong_AsLongLongAndOverflow(count, &overflow);
        if (op->count == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow > 0 && !FA_SENDFILE_BIG_COUNT_OK) {
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C ssize_t");
            return -1;
        }
        if (overflow) {
            op->count = overflow > 0 ? LLONG_MAX : -1;
        }
        if (op->count <= 0) {
            PyErr_Format(PyExc_ValueError, "count must be a positive integer (got %R)", count);
            return -1;
        }
    }
    if (offset != NULL) {
        if (!PyLong_Check(offset)) {
            PyErr_Format(PyExc_TypeError, "offset must be a non-negative integer (got %R)",
                         offset);
            return -1;
        }
        /* Negative (however large) is asyncio's ValueError; too large for
         * an off_t is os.sendfile()'s OverflowError. */
        int overflow;
        op->offset = PyLong_AsLongLongAndOverflow(offset, &overflow);
        if (op->offset == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow > 0) {
            PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C long");
            return -1;
        }
        if (overflow < 0 || op->offset < 0) {
            PyErr_Format(PyExc_ValueError, "offset must be a non-negative integer (got %R)",
                         offset);
            return -1;
        }
    }
    return 0;
}

/* The native path ended with op->result: the byte count, or Py_None when
 * sendfile(2) failed before sending anything (fall back then). */
static int
sendfile_native_done(fa_op *op)
{
    if (op->result == Py_None) {
        Py_CLEAR(op->result);
        return sendfile_fail_not_available(op, "os.sendfile call failed");
    }
    return FA_OP_DONE;
}

/* _sock_sendfile_native(): sendfile(2) from a regular file. */
static int
sendfile_native_start(fa_op *op)
{
    fa_net_state *net = net_of(op);
    PyObject *r;
    struct stat sb;
    long fileno;
    int fd, status;

    r = PyObject_CallMethodNoArgs(op->argv[A_1], net->s_fileno);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
            PyErr_ExceptionMatches(net->UnsupportedOperation)) {
            PyErr_Clear();
            return sendfile_fail_not_available(op, "not a regular file");
        }
        return -1;
    }
    fileno = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fileno == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (fileno < 0 || fileno > INT32_MAX || fstat((int)fileno, &sb) < 0) {
        return sendfile_fail_not_available(op, "not a regular file");
    }
    op->blocksize = op->count ? op->count : (long long)sb.st_size;
    if (!op->blocksize) {
        op->result = PyLong_FromLong(0); /* empty file */
        return op->result ? FA_OP_DONE : -1;
    }
    op->in_fd = (int)fileno;
    fd = sock_fileno(op);
    if (fd < -1) {
        return -1;
    }
    op->fd = fd;
    op->pos = 0;
    status = sendfile_native_ready(op);
    if (status < 0) {
        return -1;
    }
    if (status == 0) {
        return wait_fd(op, UV_WRITABLE);
    }
    return sendfile_native_done(op);
}

static int
sendfile_step(fa_op *op, PyObject *value)
{
    PyObject *mv, *view, *aw;
    int r;

    switch (op->phase) {
    case PHASE_START:
        if (check_sock(op) < 0 || sendfile_check_params(op) < 0) {
            return -1;
        }
        return sendfile_native_start(op);
    case PHASE_FD:
        op->result = Py_NewRef(value);
        return sendfile_native_done(op);
    case PHASE_FB_READ:
        /* read = await run_in_executor(None, file.readinto, view) */
        r = PyObject_IsTrue(value);
        if (r < 0) {
            return -1;
        }
        if (!r) {
            /* EOF */
            sendfile_update_filepos(op);
            op->result = PyLong_FromSsize_t(op->pos);
            return op->result ? FA_OP_DONE : -1;
        }
        op->chunk = PyLong_AsSsize_t(value);
        if (op->chunk == -1 && PyErr_Occurred()) {
            return -1;
        }
        /* await self.sock_sendall(sock, view[:read]) */
        mv = PyMemoryView_FromObject(op->argv[A_5]);
        if (mv == NULL) {
            return -1;
        }
        view = slice_of(mv, 0, op->chunk);
        Py_DECREF(mv);
        if (view == NULL) {
            return -1;
        }
        {
            PyObject *args[3] = {(PyObject *)op->loop, op->argv[A_SOCK], view};
            aw = PyObject_VectorcallMethod(net_of(op)->s_sock_sendall, args, 3, NULL);
        }
        Py_DECREF(view);
        if (aw == NULL) {
            return -1;
        }
        op->phase = PHASE_FB_SEND;
        r = fa_op_await(op, aw);
        Py_DECREF(aw);
        return r;
    case PHASE_FB_SEND:
        op->pos += op->chunk;
        return sendfile_fallback_next(op);
    default:
        PyErr_SetString(PyExc_SystemError, "sock_sendfile: bad phase");
        return -1;
    }
}

/* ------------------------------------------------------------ methods */

static const fa_op_kind recv_kind = {"sock_recv", "Loop.sock_recv", read_step, recv_ready,
                                     NULL};
static const fa_op_kind recv_into_kind = {"sock_recv_into", "Loop.sock_recv_into", read_step,
                                          recv_into_ready, NULL};
static const fa_op_kind recvfrom_kind = {"sock_recvfrom", "Loop.sock_recvfrom", read_step,
                                         recvfrom_ready, NULL};
static const fa_op_kind recvfrom_into_kind = {"sock_recvfrom_into", "Loop.sock_recvfrom_into",
                                              recvfrom_into_step, recvfrom_into_ready, NULL};
static const fa_op_kind sendall_kind = {"sock_sendall", "Loop.sock_sendall", sendall_step,
                                        sendall_ready, NULL};
static const fa_op_kind sendto_kind = {"sock_sendto", "Loop.sock_sendto", sendto_step,
                                       sendto_ready, NULL};
static const fa_op_kind connect_kind = {"sock_connect", "Loop.sock_connect", connect_step,
                                        connect_ready, NULL};
static const fa_op_kind accept_kind = {"sock_accept", "Loop.sock_accept", read_step,
                                       accept_ready, NULL};
static const fa_op_kind sendfile_kind = {"sock_sendfile", "Loop.sock_sendfile", sendfile_step,
                                         sendfile_native_ready, sendfile_finish};

/* Every sock_* method: its arguments, parsed as the Python def in
 * asyncio's BaseEventLoop would take them, go to a new fa_op of kind. */
static PyObject *
make_op(fa_loop *self, const fa_op_kind *kind, PyObject *const *args, Py_ssize_t nargs,
        PyObject *kwnames, const char *const *names, int n_names, int min_required,
        int max_positional)
{
    PyObject *argv[FA_OP_MAXARGS] = {NULL, NULL, NULL, NULL, NULL, NULL};
    if (fa_parse_args(kind->name, args, nargs, kwnames, names, n_names, min_required,
                      max_positional, argv) < 0) {
        return NULL;
    }
    return (PyObject *)fa_op_new(self, kind, argv, FA_OP_MAXARGS);
}

/* A sock_* method whose n parameters are all required and positional. */
#define SOCK_METHOD(func, kind, ...)                                                          \
    static PyObject *func(fa_loop *self, PyObject *const *args, Py_ssize_t nargs,             \
                          PyObject *kwnames)                                                  \
    {                                                                                         \
        static const char *const names[] = {__VA_ARGS__};                                     \
        enum { n = sizeof(names) / sizeof(names[0]) };                                        \
        return make_op(self, &kind, args, nargs, kwnames, names, n, n, n);                    \
    }

SOCK_METHOD(loop_sock_recv, recv_kind, "sock", "n")
SOCK_METHOD(loop_sock_recv_into, recv_into_kind, "sock", "buf")
SOCK_METHOD(loop_sock_recvfrom, recvfrom_kind, "sock", "bufsize")
SOCK_METHOD(loop_sock_sendall, sendall_kind, "sock", "data")
SOCK_METHOD(loop_sock_sendto, sendto_kind, "sock", "data", "address")
SOCK_METHOD(loop_sock_connect, connect_kind, "sock", "address")
SOCK_METHOD(loop_sock_accept, accept_kind, "sock")

/* sock_recvfrom_into(sock, buf, nbytes=0) */
static PyObject *
loop_sock_recvfrom_into(fa_loop *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"sock", "buf", "nbytes"};
    return make_op(self, &recvfrom_into_kind, args, nargs, kwnames, names, 3, 2, 3);
}

/* sock_sendfile(sock, file, offset=0, count=None, *, fallback=True) */
static PyObject *
loop_sock_sendfile(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"sock", "file", "offset", "count", "fallback"};
    return make_op(self, &sendfile_kind, args, nargs, kwnames, names, 5, 2, 4);
}

/* The loop type's sock_* methods (module.c adds them to loop.c's own). */
PyMethodDef fa_sock_loop_methods[] = {
    {"sock_recv", (PyCFunction)(void (*)(void))loop_sock_recv, METH_FASTCALL | METH_KEYWORDS,
     "sock_recv(sock, n)\n\nCoroutine: receive up to n bytes from a non-blocking socket."},
    {"sock_recv_into", (PyCFunction)(void (*)(void))loop_sock_recv_into,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_recv_into(sock, buf)\n\nCoroutine: receive into buf; return the byte count."},
    {"sock_recvfrom", (PyCFunction)(void (*)(void))loop_sock_recvfrom,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_recvfrom(sock, bufsize)\n\nCoroutine: receive a datagram; return (data, address)."},
    {"sock_recvfrom_into", (PyCFunction)(void (*)(void))loop_sock_recvfrom_into,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_recvfrom_into(sock, buf, nbytes=0)\n\n"
     "Coroutine: receive a datagram into buf; return (nbytes, address)."},
    {"sock_sendall", (PyCFunction)(void (*)(void))loop_sock_sendall,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_sendall(sock, data)\n\nCoroutine: send all of data."},
    {"sock_sendto", (PyCFunction)(void (*)(void))loop_sock_sendto,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_sendto(sock, data, address)\n\nCoroutine: send a datagram; return the byte count."},
    {"sock_connect", (PyCFunction)(void (*)(void))loop_sock_connect,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_connect(sock, address)\n\n"
     "Coroutine: connect, resolving a host name through loop.getaddrinfo()."},
    {"sock_accept", (PyCFunction)(void (*)(void))loop_sock_accept,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_accept(sock)\n\nCoroutine: accept a connection; return (conn, address)."},
    {"sock_sendfile", (PyCFunction)(void (*)(void))loop_sock_sendfile,
     METH_FASTCALL | METH_KEYWORDS,
     "sock_sendfile(sock, file, offset=0, count=None, *, fallback=True)\n\n"
     "Coroutine: send a file with sendfile(2), else read-and-send; return bytes sent."},
    {NULL, NULL, 0, NULL},
};
