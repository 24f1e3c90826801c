/* Stream transports in C: TCP and Unix sockets, read and write pipes.
 *
 * A transport watches its fd in the loop's own epoll set (ioset.c).  When
 * the fd is ready the loop appends the transport's read or write Handle to the
 * loop's ready queue, so protocol callbacks always run from the ready
 * queue (in the loop's context, with the running loop set, with asyncio's
 * exception routing and debug timing), never from inside uv_run.  The
 * handle calls back into C (_read_ready/_write_ready), which does the
 * recv/send syscalls directly: one syscall per event, no Python socket
 * method calls on the hot path.
 *
 * Behaviour follows asyncio's selector transports (_SelectorSocketTransport,
 * _UnixReadPipeTransport, _UnixWritePipeTransport): the order of protocol
 * callbacks, which errors reach the exception handler, flow control, and
 * connection_lost exactly once.
 *
 * Lifetime: while its fd is watched the transport holds a reference to
 * itself (the fd is "registered with the selector"), so a transport that
 * is reading or flushing stays alive without user references.  A paused,
 * idle transport that is dropped is finalized with a ResourceWarning and
 * its socket closed, as asyncio's __del__ does. */
#include "net.h"
#include "handle.h"
#include "loop.h"
#include "state.h"
#include "transport.h"
#include "util.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MODE_SOCKET 0
#define MODE_READ_PIPE 1
#define MODE_WRITE_PIPE 2

#define MAX_READ FA_RECV_BUF_SIZE     /* asyncio's max_size */
#define LOG_THRESHOLD 5              /* constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES */
#define MAX_IOV 64

typedef struct {
    FA_TRANSPORT_HEAD
    PyObject *server;            /* Server to _detach from, or NULL */
    PyObject *empty_waiter;      /* sendfile: future set when the buffer drains */
    int mode;
    int buffered;                /* protocol is an asyncio.BufferedProtocol */
    int eof;                     /* write_eof() called */
    int read_eof;                /* EOF received, eof_received kept it open */
    int dropped;                 /* pipes: writes dropped after close */

    /* Write buffer: a queue of buffers, the first one sent from woff. */
    Py_buffer *wbuf;
    Py_ssize_t whead, wlen, wcap;
    Py_ssize_t woff;
    PyObject *weakreflist;
} fa_stream;

#define T(t) ((fa_transport *)(t))


/* ------------------------------------------------------------ helpers */

static inline int
is_socket(fa_stream *t)
{
    return t->mode == MODE_SOCKET;
}


/* Watch the fd for what the transport waits for now (see
 * fa_transport_watch).  The caller must own a reference.  Returns -1 with
 * an exception. */
static int
update_poll(fa_stream *t)
{
    int want = 0;
    if (t->started && !t->closing && !t->paused && !t->read_eof) {
        want |= UV_READABLE;
    }
    if (t->wsize > 0 && !t->conn_lost) {
        want |= UV_WRITABLE;
    }
    return fa_transport_watch(T(t), want);
}

static void
wbuf_clear(fa_stream *t)
{
    for (Py_ssize_t i = 0; i < t->wlen; i++) {
        PyBuffer_Release(&t->wbuf[(t->whead + i) % t->wcap]);
    }
    t->whead = t->wlen = 0;
    t->woff = 0;
    t->wsize = 0;
}

/* Append data (from offset skip) to the write buffer.  Immutable bytes are
 * referenced; anything else is copied, since the caller may change it
 * after write() returns. */
static int
wbuf_push(fa_stream *t, PyObject *data, Py_ssize_t skip)
{
    Py_buffer view;
    PyObject *own;
    if (PyBytes_CheckExact(data) && skip == 0) {
        own = Py_NewRef(data);
    }
    else {
        Py_buffer src;
        if (PyObject_GetBuffer(data, &src, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        own = PyBytes_FromStringAndSize((char *)src.buf + skip, src.len - skip);
        PyBuffer_Release(&src);
        if (own == NULL) {
            return -1;
        }
    }
    if (t->wlen == t->wcap) {
        Py_ssize_t ncap = t->wcap ? t->wcap * 2 : 8;
        Py_buffer *nb = PyMem_New(Py_buffer, ncap);
        if (nb == NULL) {
            Py_DECREF(own);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < t->wlen; i++) {
            nb[i] = t->wbuf[(t->whead + i) % t->wcap];
        }
        PyMem_Free(t->wbuf);
        t->wbuf = nb;
        t->wcap = ncap;
        t->whead = 0;
    }
    if (PyObject_GetBuffer(own, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(own);
        return -1;
    }
    Py_DECREF(own); /* the view holds it */
    t->wbuf[(t->whead + t->wlen) % t->wcap] = view;
    t->wlen++;
    t->wsize += view.len;
    return 0;
}

/* Drop n sent bytes from the front of the buffer. */
static void
wbuf_consume(fa_stream *t, Py_ssize_t n)
{
    t->wsize -= n;
    while (n > 0 && t->wlen > 0) {
        Py_buffer *b = &t->wbuf[t->whead];
        Py_ssize_t left = b->len - t->woff;
        if (n < left) {
            t->woff += n;
            return;
        }
        n -= left;
        PyBuffer_Release(b);
        t->whead = (t->whead + 1) % t->wcap;
        t->wlen--;
        t->woff = 0;
    }
    if (t->wlen == 0) {
        t->whead = 0;
    }
}

/* One send/write syscall.  Returns bytes written, 0 if it would block, -1
 * with errno set. */
static Py_ssize_t
sys_send(fa_stream *t, const char *buf, Py_ssize_t len)
{
    Py_ssize_t n;
    int fd = fa_transport_live_fd(T(t));
    if (fd < 0) {
        return -1;
    }
    do {
        n = is_socket(t) ? send(fd, buf, (size_t)len, MSG_NOSIGNAL)
                         : write(fd, buf, (size_t)len);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return 0;
    }
    return n;
}

/* Send as much of the buffer as the kernel takes, in one writev/sendmsg. */
static Py_ssize_t
sys_send_buffer(fa_stream *t)
{
    struct iovec iov[MAX_IOV];
    int cnt = 0;
    Py_ssize_t n;
    int fd = fa_transport_live_fd(T(t));
    if (fd < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < t->wlen && cnt < MAX_IOV; i++) {
        Py_buffer *b = &t->wbuf[(t->whead + i) % t->wcap];
        Py_ssize_t off = i == 0 ? t->woff : 0;
        iov[cnt].iov_base = (char *)b->buf + off;
        iov[cnt].iov_len = (size_t)(b->len - off);
        cnt++;
    }
    do {
        if (is_socket(t)) {
            struct msghdr msg;
            memset(&msg, 0, sizeof(msg));
            msg.msg_iov = iov;
            msg.msg_iovlen = (size_t)cnt;
            n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        }
        else {
            n = writev(fd, iov, cnt);
        }
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return 0;
    }
    return n;
}

/* asyncio's _force_close (sockets) / _close (pipes: closing whatever
 * the state, connection_lost soon). */
static int
force_close(fa_transport *tt, PyObject *exc)
{
    fa_stream *t = (fa_stream *)tt;
    if (is_socket(t)) {
        return fa_transport_force_close(tt, exc);
    }
    t->closing = 1;
    wbuf_clear(t);
    fa_transport_update_poll_or_report(tt);
    return fa_transport_schedule_lost(tt, exc);
}

/* A read pipe reports every OSError but EIO to the exception handler, as
 * asyncio's pipe transport does; sockets and write pipes none. */
static int
os_error_reported(fa_transport *tt, PyObject *exc, const char *Py_UNUSED(message))
{
    int quiet;
    if (((fa_stream *)tt)->mode != MODE_READ_PIPE) {
        return 0;
    }
    PyObject *en = PyObject_GetAttrString(exc, "errno");
    quiet = en != NULL && PyLong_Check(en) && PyLong_AsLong(en) == EIO;
    Py_XDECREF(en);
    PyErr_Clear();
    return !quiet;
}

static int
update_poll_op(fa_transport *t)
{
    return update_poll((fa_stream *)t);
}

static void
clear_buffer_op(fa_transport *t)
{
    wbuf_clear((fa_stream *)t);
}

static const fa_transport_ops stream_ops = {
    .update_poll = update_poll_op,
    .force_close = force_close,
    .os_error_reported = os_error_reported,
    .clear_buffer = clear_buffer_op,
};

/* Handle the current exception raised by a protocol callback or a
 * syscall: KeyboardInterrupt/SystemExit propagate (returns -1); anything
 * else is a fatal error for the transport (returns 0). */
static int
callback_failed(fa_stream *t, const char *message)
{
    PyObject *exc;
    if (fa_is_fatal_exception()) {
        return -1;
    }
    exc = fa_fetch_exception();
    if (exc == NULL) {
        return -1;
    }
    int r = fa_transport_fatal_error(T(t), exc, message);
    Py_DECREF(exc);
    return r;
}

static PyObject *
errno_exception(void)
{
    PyErr_SetFromErrno(PyExc_OSError);
    return fa_fetch_exception();
}

/* server._attach() / server._detach(): with the transport as argument from
 * Python 3.13 on, as asyncio's transports call them.  Returns -1 with an
 * exception. */
static int
server_call(fa_stream *t, const char *method)
{
    PyObject *r;
    if (t->loop->st->net.detach_takes_transport) {
        r = PyObject_CallMethod(t->server, method, "O", (PyObject *)t);
    }
    else {
        r = PyObject_CallMethod(t->server, method, NULL);
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
set_empty_waiter(fa_stream *t, PyObject *exc)
{
    PyObject *w = t->empty_waiter, *r;
    if (w == NULL) {
        return 0;
    }
    r = exc != NULL ? PyObject_CallMethod(w, "set_exception", "O", exc)
                    : PyObject_CallMethod(w, "set_result", "O", Py_None);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
do_shutdown(fa_stream *t)
{
    int fd = fa_transport_live_fd(T(t));
    if (fd < 0 || shutdown(fd, SHUT_WR) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ reading */

static int
on_eof(fa_stream *t)
{
    PyObject *r;
    int keep_open;
    if (t->mode == MODE_READ_PIPE) {
        PyObject *cb;
        fa_handle *h;
        t->closing = 1;
        fa_transport_update_poll_or_report(T(t));
        cb = PyObject_GetAttrString(t->protocol, "eof_received");
        if (cb == NULL) {
            return -1;
        }
        h = fa_loop_call_soon(t->loop, cb, NULL, NULL);
        Py_DECREF(cb);
        if (h == NULL) {
            return -1;
        }
        Py_DECREF(h);
        return fa_transport_schedule_lost(T(t), NULL);
    }
    r = PyObject_CallMethod(t->protocol, "eof_received", NULL);
    if (r == NULL) {
        return callback_failed(t, "Fatal error: protocol.eof_received() call failed.");
    }
    keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return callback_failed(t, "Fatal error: protocol.eof_received() call failed.");
    }
    if (keep_open) {
        t->read_eof = 1;
        fa_transport_update_poll_or_report(T(t));
        return 0;
    }
    PyObject *c = PyObject_CallMethod((PyObject *)t, "close", NULL);
    if (c == NULL) {
        return -1;
    }
    Py_DECREF(c);
    return 0;
}

static const char *
read_error_message(fa_stream *t)
{
    return is_socket(t) ? "Fatal read error on socket transport"
                        : "Fatal read error on pipe transport";
}

static int
read_data(fa_stream *t)
{
    Py_ssize_t n;
    PyObject *data, *r;
    char *read_buf = fa_transport_recv_buf(t->loop);
    if (read_buf == NULL) {
        return -1;
    }
    int fd = fa_transport_live_fd(T(t));
    do {
        n = fd < 0 ? -1 : is_socket(t) ? recv(fd, read_buf, MAX_READ, 0) : read(fd, read_buf, MAX_READ);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyObject *exc = errno_exception();
        int res = fa_transport_fatal_error(T(t), exc, read_error_message(t));
        Py_XDECREF(exc);
        return res;
    }
    if (n == 0) {
        return on_eof(t);
    }
    data = PyBytes_FromStringAndSize(read_buf, n);
    if (data == NULL) {
        return -1;
    }
    r = PyObject_CallMethodOneArg(t->protocol, t->loop->st->net.s_data_received, data);
    Py_DECREF(data);
    if (r == NULL) {
        if (t->mode == MODE_READ_PIPE) {
            /* asyncio's pipe transport lets it reach the loop ("Exception in
             * callback"), and keeps reading. */
            return -1;
        }
        return callback_failed(t, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

static int
read_buffered(fa_stream *t)
{
    Py_buffer view;
    Py_ssize_t n;
    PyObject *buf, *r, *nobj;
    fa_net_state *ns = &t->loop->st->net;

    buf = PyObject_CallMethodOneArg(t->protocol, ns->s_get_buffer, ns->minus_one);
    if (buf == NULL) {
        return callback_failed(t, "Fatal error: protocol.get_buffer() call failed.");
    }
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(buf);
        return callback_failed(t, "Fatal error: protocol.get_buffer() call failed.");
    }
    Py_DECREF(buf);
    if (view.len == 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return callback_failed(t, "Fatal error: protocol.get_buffer() call failed.");
    }
    int fd = fa_transport_live_fd(T(t));
    do {
        n = fd < 0 ? -1 : is_socket(t) ? recv(fd, view.buf, (size_t)view.len, 0)
                                       : read(fd, view.buf, (size_t)view.len);
    } while (n < 0 && errno == EINTR);
    int saved = errno;
    PyBuffer_Release(&view);
    if (n < 0) {
        if (saved == EAGAIN || saved == EWOULDBLOCK) {
            return 0;
        }
        errno = saved;
        PyObject *exc = errno_exception();
        int res = fa_transport_fatal_error(T(t), exc, read_error_message(t));
        Py_XDECREF(exc);
        return res;
    }
    if (n == 0) {
        return on_eof(t);
    }
    nobj = PyLong_FromSsize_t(n);
    if (nobj == NULL) {
        return -1;
    }
    r = PyObject_CallMethodOneArg(t->protocol, ns->s_buffer_updated, nobj);
    Py_DECREF(nobj);
    if (r == NULL) {
        return callback_failed(t, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

/* A write pipe is "readable" when its reader went away. */
static int
write_pipe_peer_closed(fa_stream *t)
{
    if (t->wsize > 0) {
        PyObject *exc = PyObject_CallNoArgs(PyExc_BrokenPipeError);
        if (exc == NULL) {
            return -1;
        }
        int r = force_close(T(t), exc);
        Py_DECREF(exc);
        return r;
    }
    return force_close(T(t), NULL);
}

static PyObject *
stream_read_ready(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    int r;
    if (t->conn_lost || t->closing || t->paused || t->fd < 0 || t->read_eof) {
        Py_RETURN_NONE;
    }
    Py_INCREF(t);
    if (t->mode == MODE_WRITE_PIPE) {
        r = write_pipe_peer_closed(t);
    }
    else if (t->buffered) {
        r = read_buffered(t);
    }
    else {
        r = read_data(t);
    }
    /* Re-arm the watch if an error condition stopped it (see
     * transport_on_events, transport.c): the error (say, a reset) may sit
     * behind data this recv returned, and is read next. */
    if (t->events != UV_READABLE || r < 0) {
        PyObject *exc = r < 0 ? fa_fetch_exception() : NULL;
        fa_transport_update_poll_or_report(T(t));
        if (exc != NULL) {
            fa_restore_exception(exc);
        }
    }
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ writing */

static const char *
write_error_message(fa_stream *t)
{
    return is_socket(t) ? "Fatal write error on socket transport"
                        : "Fatal write error on pipe transport";
}

static int
after_drained(fa_stream *t)
{
    if (set_empty_waiter(t, NULL) < 0) {
        return -1;
    }
    if (t->closing) {
        PyObject *r = PyObject_CallMethod((PyObject *)t, "_call_connection_lost", "O", Py_None);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        return 0;
    }
    if (t->eof && is_socket(t)) {
        return do_shutdown(t);
    }
    return 0;
}

static PyObject *
stream_write_ready(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n;
    if (t->conn_lost || t->wsize == 0 || t->fd < 0) {
        Py_RETURN_NONE;
    }
    Py_INCREF(t);
    n = sys_send_buffer(t);
    if (n < 0) {
        PyObject *exc = errno_exception();
        wbuf_clear(t);
        if (!is_socket(t)) {
            t->conn_lost++;
        }
        int r = fa_transport_fatal_error(T(t), exc, write_error_message(t));
        if (r == 0) {
            r = set_empty_waiter(t, exc);
        }
        Py_XDECREF(exc);
        Py_DECREF(t);
        return r < 0 ? NULL : Py_NewRef(Py_None);
    }
    wbuf_consume(t, n);
    if (fa_transport_maybe_resume_protocol(T(t)) < 0) { /* may append to the buffer */
        Py_DECREF(t);
        return NULL;
    }
    if (update_poll(t) < 0 || (t->wsize == 0 && after_drained(t) < 0)) {
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(t);
    Py_RETURN_NONE;
}

static int
check_data(PyObject *data)
{
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.200s'",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    return 0;
}

static int
check_can_write(fa_stream *t)
{
    if (t->mode == MODE_READ_PIPE) {
        PyErr_SetString(PyExc_NotImplementedError, "a read pipe transport cannot write");
        return -1;
    }
    if (is_socket(t) && t->eof) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return -1;
    }
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "unable to write; sendfile is in progress");
        return -1;
    }
    return 0;
}

/* Writes after the connection is gone are dropped, with a warning from the
 * fifth on, as asyncio does.  Returns 1 if the write must be dropped. */
static int
write_dropped(fa_stream *t)
{
    if (is_socket(t)) {
        if (!t->conn_lost) {
            return 0;
        }
        if (t->conn_lost >= LOG_THRESHOLD) {
            fa_transport_log_warning(T(t), "socket.send() raised exception.");
        }
        t->conn_lost++;
        return 1;
    }
    /* A pipe drops writes once closing, but still flushes what it has:
     * count them apart from conn_lost, which stops the flush. */
    if (!t->conn_lost && !t->closing) {
        return 0;
    }
    if (t->conn_lost + t->dropped >= LOG_THRESHOLD) {
        fa_transport_log_warning(T(t), "pipe closed by peer or os.write(pipe, data) raised exception.");
    }
    t->dropped++;
    return 1;
}

static int
write_one(fa_stream *t, PyObject *data)
{
    Py_ssize_t n = 0;
    if (t->wsize == 0) {
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        n = sys_send(t, view.buf, view.len);
        Py_ssize_t len = view.len;
        PyBuffer_Release(&view);
        if (n < 0) {
            PyObject *exc = errno_exception();
            if (!is_socket(t)) {
                t->conn_lost++;
            }
            int r = fa_transport_fatal_error(T(t), exc, write_error_message(t));
            Py_XDECREF(exc);
            return r;
        }
        if (n == len) {
            return 0;
        }
    }
    if (wbuf_push(t, data, n) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *
stream_write(fa_stream *t, PyObject *data)
{
    Py_ssize_t len;
    if (check_data(data) < 0 || check_can_write(t) < 0) {
        return NULL;
    }
    len = PyObject_Length(data);
    if (len < 0) {
        return NULL; /* e.g. a released memoryview */
    }
    if (len == 0 || write_dropped(t)) {
        Py_RETURN_NONE;
    }
    if (write_one(t, data) < 0 || update_poll(t) < 0 || fa_transport_maybe_pause_protocol(T(t)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_writelines(fa_stream *t, PyObject *lines)
{
    PyObject *it, *item;
    if (check_can_write(t) < 0) {
        return NULL;
    }
    /* Check every item before queueing any, so a bad item writes nothing. */
    it = PySequence_Fast(lines, "writelines() argument must be iterable");
    if (it == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(it);
    PyObject **items = PySequence_Fast_ITEMS(it);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (check_data(items[i]) < 0 || PyObject_Length(items[i]) < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    /* Queue everything, then send it with one sendmsg. */
    for (Py_ssize_t i = 0; i < n; i++) {
        item = items[i];
        if (PyObject_Length(item) == 0 || write_dropped(t)) {
            continue;
        }
        if (wbuf_push(t, item, 0) < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (t->wsize > 0 && !t->conn_lost && t->events == 0) {
        /* Nothing was waiting: try to send now, as write() does. */
        PyObject *r = stream_write_ready(t, NULL);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
        if (t->conn_lost) {
            Py_RETURN_NONE;
        }
    }
    if (update_poll(t) < 0 || fa_transport_maybe_pause_protocol(T(t)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_write_eof(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->mode == MODE_READ_PIPE) {
        PyErr_SetString(PyExc_NotImplementedError, "a read pipe transport cannot write_eof");
        return NULL;
    }
    if (t->mode == MODE_WRITE_PIPE) {
        /* Closing the write end is the pipe's EOF. */
        if (t->closing) {
            Py_RETURN_NONE;
        }
        t->closing = 1;
        if (t->wsize == 0) {
            fa_transport_update_poll_or_report(T(t));
            if (fa_transport_schedule_lost(T(t), NULL) < 0) {
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }
    if (t->closing || t->eof) {
        Py_RETURN_NONE;
    }
    t->eof = 1;
    if (t->wsize == 0 && do_shutdown(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_can_write_eof(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->mode != MODE_READ_PIPE);
}

/* ------------------------------------------------------------ closing */

static PyObject *
stream_close(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->mode == MODE_WRITE_PIPE) {
        if (t->sock != NULL && !t->closing) {
            return stream_write_eof(t, NULL);
        }
        Py_RETURN_NONE;
    }
    if (t->closing) {
        Py_RETURN_NONE;
    }
    t->closing = 1;
    Py_INCREF(t);
    if (t->mode == MODE_READ_PIPE || t->wsize == 0) {
        if (is_socket(t)) {
            t->conn_lost++;
        }
        if (update_poll(t) < 0 || fa_transport_schedule_lost(T(t), NULL) < 0) {
            Py_DECREF(t);
            return NULL;
        }
    }
    else if (update_poll(t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(t);
    Py_RETURN_NONE;
}

static PyObject *
stream_call_connection_lost(fa_stream *t, PyObject *exc)
{
    PyObject *r = NULL, *err = NULL;
    if (t->protocol == NULL) {
        Py_RETURN_NONE; /* already done */
    }
    Py_INCREF(t);
    r = PyObject_CallMethodOneArg(t->protocol, t->loop->st->net.s_connection_lost, exc);
    if (r == NULL) {
        err = fa_fetch_exception();
    }
    Py_XDECREF(r);
    /* finally: */
    if (fa_transport_release_fd(T(t)) < 0 && err == NULL) {
        err = fa_fetch_exception();
    }
    wbuf_clear(t);
    t->closing = 1;
    Py_CLEAR(t->protocol);
    if (t->empty_waiter != NULL) {
        /* sendfile() is waiting for the buffer to drain: it never will. */
        PyObject *done = PyObject_CallMethod(t->empty_waiter, "done", NULL);
        int is_done = done == NULL ? -1 : PyObject_IsTrue(done);
        Py_XDECREF(done);
        if (is_done == 0) {
            PyObject *cexc = PyObject_CallFunction(PyExc_ConnectionError, "s",
                                                   "Connection is closed by peer");
            if (cexc == NULL || set_empty_waiter(t, cexc) < 0) {
                if (err == NULL) {
                    err = fa_fetch_exception();
                }
                else {
                    PyErr_Clear();
                }
            }
            Py_XDECREF(cexc);
        }
        else if (is_done < 0) {
            PyErr_Clear();
        }
    }
    Py_CLEAR(t->empty_waiter);
    if (t->read_h != NULL) {
        t->read_h->cancelled = 1;
    }
    if (t->write_h != NULL) {
        t->write_h->cancelled = 1;
    }
    Py_CLEAR(t->read_h);
    Py_CLEAR(t->write_h);
    if (t->server != NULL) {
        PyObject *server = t->server;
        t->server = NULL;
        t->server = server;
        if (server_call(t, "_detach") < 0 && err == NULL) {
            err = fa_fetch_exception();
        }
        PyErr_Clear();
        t->server = NULL;
        Py_DECREF(server);
    }
    if (t->self_ref) {
        t->self_ref = 0;
        Py_DECREF(t);
    }
    Py_DECREF(t);
    if (err != NULL) {
        fa_restore_exception(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ reading control */

static PyObject *
stream_is_reading(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->mode != MODE_WRITE_PIPE && !t->paused && !t->closing);
}

static PyObject *
stream_pause_reading(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->mode == MODE_WRITE_PIPE) {
        PyErr_SetString(PyExc_NotImplementedError, "a write pipe transport cannot pause_reading");
        return NULL;
    }
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    Py_INCREF(t);
    int r = update_poll(t);
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_resume_reading(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->mode == MODE_WRITE_PIPE) {
        PyErr_SetString(PyExc_NotImplementedError, "a write pipe transport cannot resume_reading");
        return NULL;
    }
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 0;
    if (update_poll(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Called soon after connection_made, as asyncio adds its reader then. */
static PyObject *
stream_start_reading(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    if (t->started || t->sock == NULL) {
        Py_RETURN_NONE;
    }
    t->started = 1;
    if (update_poll(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ misc API */

static PyObject *
stream_set_protocol(fa_stream *t, PyObject *protocol)
{
    int b = PyObject_IsInstance(protocol, t->loop->st->net.BufferedProtocol);
    if (b < 0) {
        return NULL;
    }
    t->buffered = b;
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_RETURN_NONE;
}

static PyObject *
stream_make_empty_waiter(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *fut, *r;
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    fut = PyObject_CallMethod((PyObject *)t->loop, "create_future", NULL);
    if (fut == NULL) {
        return NULL;
    }
    t->empty_waiter = Py_NewRef(fut);
    t->fd_lent = 1;
    if (t->wsize == 0) {
        r = PyObject_CallMethod(fut, "set_result", "O", Py_None);
        if (r == NULL) {
            Py_DECREF(fut);
            return NULL;
        }
        Py_DECREF(r);
    }
    return fut;
}

static PyObject *
stream_reset_empty_waiter(fa_stream *t, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(t->empty_waiter);
    t->fd_lent = 0;
    Py_RETURN_NONE;
}

/* As the running interpreter's asyncio writes them (after the class name):
 * _SelectorSocketTransport's "closed"/"closing", the fd, then the polling
 * state while connection_lost has not run (its _loop is not None);
 * _UnixReadPipeTransport's and _UnixWritePipeTransport's "polling"/"idle"
 * (and "bufsize=N") while the pipe is open and the loop too, "open" on a
 * closed loop, "closed" once the pipe is. */
static PyObject *
stream_repr(fa_stream *t)
{
    const char *name = Py_TYPE(t)->tp_name;
    const char *state = t->sock == NULL ? " closed" : (t->closing ? " closing" : "");
    int loop_open = t->loop != NULL && !t->loop->closed;
    const char *reading = t->events & UV_READABLE ? "polling" : "idle";
    const char *writing = t->events & UV_WRITABLE ? "polling" : "idle";

    if (t->mode == MODE_SOCKET) {
        if (t->protocol == NULL || !loop_open) {
            return PyUnicode_FromFormat("<%s%s fd=%d>", name, state, t->reg.fd);
        }
        return PyUnicode_FromFormat("<%s%s fd=%d read=%s write=<%s, bufsize=%zd>>", name, state,
                                    t->reg.fd, reading, writing, t->wsize);
    }
    if (t->sock == NULL || !loop_open) {
        return PyUnicode_FromFormat("<%s%s fd=%d %s>", name, state, t->reg.fd,
                                    t->sock == NULL ? "closed" : "open");
    }
    if (t->mode == MODE_READ_PIPE) {
        return PyUnicode_FromFormat("<%s%s fd=%d %s>", name, state, t->reg.fd, reading);
    }
    return PyUnicode_FromFormat("<%s%s fd=%d %s bufsize=%zd>", name, state, t->reg.fd, writing,
                                t->wsize);
}

/* ------------------------------------------------------------ type */

/* The module's definition, which finds a (sub)type's module in tp_new:
 * module.c's, kept by fa_stream_init (the same for every module instance). */

static PyObject *
stream_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", "sock", "protocol", "extra", "mode", "waiter", "server",
                             "watch_peer", NULL};
    PyObject *loop, *sock, *protocol, *extra, *waiter = Py_None, *server = Py_None;
    PyObject *fdobj = NULL, *cb = NULL, *r;
    fa_stream *t;
    fa_state *st;
    int mode = MODE_SOCKET, watch_peer = 0;
    long fd;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!|iOOp:StreamTransport", kwlist, &loop,
                                     &sock, &protocol, &PyDict_Type, &extra, &mode, &waiter,
                                     &server, &watch_peer)) {
        return NULL;
    }
    PyObject *mod = fa_module_of_type(type);
    if (mod == NULL) {
        return NULL;
    }
    st = fa_get_state(mod);
    if (!PyObject_TypeCheck(loop, st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "StreamTransport needs a flaskasync loop");
        return NULL;
    }
    if (mode < MODE_SOCKET || mode > MODE_WRITE_PIPE) {
        PyErr_SetString(PyExc_ValueError, "invalid transport mode");
        return NULL;
    }
    if (fa_loop_check_closed((fa_loop *)loop) < 0) {
        return NULL;
    }
    fdobj = PyObject_CallMethod(sock, "fileno", NULL);
    if (fdobj == NULL) {
        return NULL;
    }
    fd = PyLong_AsLong(fdobj);
    Py_DECREF(fdobj);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "the %s is closed (fd %ld)",
                     mode == MODE_SOCKET ? "socket" : "pipe", fd);
        return NULL;
    }

    t = (fa_stream *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    t->ops = &stream_ops;
    t->loop = (fa_loop *)Py_NewRef(loop);
    t->fd = (int)fd;
    t->mode = mode;
    t->high = FA_DEFAULT_HIGH_WATER;
    t->low = FA_DEFAULT_HIGH_WATER / 4;
    t->extra = Py_NewRef(extra);
    t->sock = Py_NewRef(sock);
    t->server = server == Py_None ? NULL : Py_NewRef(server);
    fa_transport_list_add(T(t));
    r = stream_set_protocol(t, protocol);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    /* As asyncio's transport __init__: tell the server first (a server
     * closed meanwhile refuses the connection before anything is
     * scheduled). */
    if (t->server != NULL && server_call(t, "_attach") < 0) {
        Py_CLEAR(t->server);
        goto error;
    }
    if (fa_transport_start(T(t), "_write_ready", mode != MODE_WRITE_PIPE || watch_peer, waiter) < 0) {
        goto error;
    }
    return (PyObject *)t;

error:
    if (t->server != NULL) {
        PyObject *exc = fa_fetch_exception();
        if (server_call(t, "_detach") < 0) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_CLEAR(t->server);
        if (exc != NULL) {
            fa_restore_exception(exc);
        }
    }
    Py_XDECREF(cb);
    /* Do not close the caller's socket: the caller still owns it.  A
     * callback already scheduled must not watch its fd either. */
    Py_CLEAR(t->sock);
    t->fd = -1;
    Py_DECREF(t);
    return NULL;
}

/* Everything happens in __new__; this replaces BaseTransport.__init__. */
static int
stream_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    return 0;
}

static int
stream_traverse(fa_stream *t, visitproc visit, void *arg)
{
    Py_VISIT(t->server);
    Py_VISIT(t->empty_waiter);
    for (Py_ssize_t i = 0; i < t->wlen; i++) {
        Py_VISIT(t->wbuf[(t->whead + i) % t->wcap].obj);
    }
    return fa_transport_traverse_head(T(t), visit, arg);
}

static int
stream_clear(fa_stream *t)
{
    fa_transport_clear_head(T(t));
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    return 0;
}

static void
stream_dealloc(fa_stream *t)
{
    if (fa_transport_dealloc_start(T(t), t->weakreflist) < 0) {
        return; /* resurrected */
    }
    wbuf_clear(t);
    PyMem_Free(t->wbuf);
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    fa_transport_dealloc_end(T(t));
}

/* tp_finalize: as asyncio's __del__, warn and close the socket of an
 * unclosed transport; from Python 3.13 on also tell its server it is gone
 * (Server._detach(transport)), so that wait_closed() does not wait for it. */
static void
stream_finalize(PyObject *self)
{
    fa_stream *t = (fa_stream *)self;
    int was_open = t->sock != NULL;
    fa_transport_finalize(self);
    if (was_open && t->server != NULL && t->loop != NULL &&
        t->loop->st->net.detach_takes_transport) {
        PyObject *exc = fa_fetch_exception();
        if (server_call(t, "_detach") < 0) {
            PyErr_WriteUnraisable(self);
        }
        Py_CLEAR(t->server);
        if (exc != NULL) {
            fa_restore_exception(exc);
        }
    }
}

static PyObject *
stream_get_fd(fa_stream *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->fd);
}

static PyObject *
stream_get_loop_attr(fa_stream *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->loop != NULL ? (PyObject *)t->loop : Py_None);
}

static PyObject *
stream_get_server(fa_stream *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->server != NULL ? t->server : Py_None);
}

static PyObject *
stream_get_buffer_attr(fa_stream *t, void *Py_UNUSED(c))
{
    /* For code that inspects asyncio's private _buffer: its length. */
    PyObject *b = PyByteArray_FromStringAndSize(NULL, 0);
    if (b == NULL || PyByteArray_Resize(b, t->wsize) < 0) {
        Py_XDECREF(b);
        return NULL;
    }
    char *p = PyByteArray_AS_STRING(b);
    for (Py_ssize_t i = 0; i < t->wlen; i++) {
        Py_buffer *v = &t->wbuf[(t->whead + i) % t->wcap];
        Py_ssize_t off = i == 0 ? t->woff : 0;
        memcpy(p, (char *)v->buf + off, (size_t)(v->len - off));
        p += v->len - off;
    }
    return b;
}

static PyGetSetDef stream_getset[] = {
    FA_TRANSPORT_GETSETS,
    {"_sock_fd", (getter)stream_get_fd, NULL, "the fd (-1 once closed)", NULL},
    {"_loop", (getter)stream_get_loop_attr, NULL, NULL, NULL},
    {"_server", (getter)stream_get_server, NULL, NULL, NULL},
    {"_buffer", (getter)stream_get_buffer_attr, NULL, "a copy of the unsent data", NULL},
    {NULL},
};

static PyMemberDef stream_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(fa_stream, weakreflist), Py_READONLY, NULL},
    {NULL},
};

static PyMethodDef stream_methods[] = {
    FA_TRANSPORT_METHODS,
    {"write", (PyCFunction)stream_write, METH_O,
     "Write bytes-like data; what the kernel does not take now is buffered."},
    {"writelines", (PyCFunction)stream_writelines, METH_O,
     "Write an iterable of bytes-like objects (one sendmsg when possible)."},
    {"write_eof", (PyCFunction)stream_write_eof, METH_NOARGS,
     "Close the write end after the buffered data is sent."},
    {"can_write_eof", (PyCFunction)stream_can_write_eof, METH_NOARGS, NULL},
    {"close", (PyCFunction)stream_close, METH_NOARGS,
     "Close after the buffered data is sent; connection_lost(None) follows."},
    {"pause_reading", (PyCFunction)stream_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)stream_resume_reading, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)stream_is_reading, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)stream_set_protocol, METH_O, NULL},
    {"_read_ready", (PyCFunction)stream_read_ready, METH_NOARGS, NULL},
    {"_write_ready", (PyCFunction)stream_write_ready, METH_NOARGS, NULL},
    {"_start_reading", (PyCFunction)stream_start_reading, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)stream_call_connection_lost, METH_O, NULL},
    {"_make_empty_waiter", (PyCFunction)stream_make_empty_waiter, METH_NOARGS, NULL},
    {"_reset_empty_waiter", (PyCFunction)stream_reset_empty_waiter, METH_NOARGS, NULL},
    {NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_new, stream_new},
    {Py_tp_init, stream_init},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_finalize, stream_finalize},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_repr, stream_repr},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {Py_tp_doc, "StreamTransport(loop, sock, protocol, extra, mode=0, waiter=None, server=None)\n"
                "--\n\nA socket or pipe transport of a flaskasync loop (internal: use\n"
                "loop.create_connection() and friends)."},
    {0, NULL},
};

static PyType_Spec fa_stream_spec = {
    .name = "flaskasync._core.StreamTransport",
    .basicsize = sizeof(fa_stream),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = stream_slots,
};

/* ------------------------------------------------------------ the type */

int
fa_stream_init(PyObject *module, fa_state *st)
{
    fa_net_state *n = &st->net;
    /* A stream transport of a server tells the server it is gone with
     * Server._detach(), which takes the transport from Python 3.13 on. */
    PyObject *server, *detach, *code, *argc;
    if (fa_import_attr(&server, "asyncio.base_events", "Server") < 0) {
        return -1;
    }
    detach = PyObject_GetAttrString(server, "_detach");
    Py_DECREF(server);
    code = detach ? PyObject_GetAttrString(detach, "__code__") : NULL;
    Py_XDECREF(detach);
    argc = code ? PyObject_GetAttrString(code, "co_argcount") : NULL;
    Py_XDECREF(code);
    if (argc == NULL) {
        return -1;
    }
    n->detach_takes_transport = PyLong_AsLong(argc) >= 2;
    Py_DECREF(argc);

    static const char *const stream_bases[] = {"_FlowControlMixin", "Transport"};
    n->StreamType = fa_transport_make_type(module, &fa_stream_spec, stream_bases, 2);
    if (n->StreamType == NULL ||
        PyModule_AddObjectRef(module, "StreamTransport", (PyObject *)n->StreamType) < 0) {
        return -1;
    }
    return 0;
}

int
fa_stream_traverse(fa_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->net.StreamType);
    return 0;
}

void
fa_stream_clear(fa_state *st)
{
    Py_CLEAR(st->net.StreamType);
}
