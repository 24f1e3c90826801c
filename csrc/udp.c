/* Datagram transports in C: UDP (IPv4, IPv6) and Unix datagram sockets,
 * created by loop.create_datagram_endpoint() (flaskasync/_udp.py).
 *
 * The design is stream.c's: the transport watches its fd in the loop's own
 * epoll set (ioset.c), and a ready fd only appends the transport's cached
 * read or write Handle to the loop's ready queue.  The
 * protocol's datagram_received / error_received / connection_lost therefore
 * always run from the ready queue (running loop set, the loop's exception
 * routing, debug timing), never inside uv_run.
 *
 * The syscalls are made here: recvfrom() into the loop's 256 KiB receive buffer, with
 * the sender's address converted to the socket module's tuple for AF_INET,
 * AF_INET6 and AF_UNIX (the same strings and numbers socket.recvfrom gives);
 * send() on a connected socket; sendto() when the address is a numeric
 * (host, port[, flowinfo[, scope_id]]) tuple.  Anything else (host names,
 * "<broadcast>", "", Unix paths as destinations, other families) goes
 * through the socket object's own recvfrom/sendto, so what the socket
 * module accepts, and the errors it raises, stay exactly its own.
 *
 * Behaviour follows asyncio's _SelectorDatagramTransport (Python 3.11):
 *   - one datagram per readiness event; OSErrors of recvfrom/send/sendto
 *     (ConnectionRefusedError after an ICMP error, EMSGSIZE, ...) go to
 *     protocol.error_received(exc) and the endpoint stays open; other
 *     errors are fatal (exception handler, then connection_lost(exc));
 *   - exceptions raised by datagram_received / error_received propagate to
 *     the Handle, hence to the loop's exception handler;
 *   - sendto() tries the syscall at once; what the kernel refuses with
 *     EAGAIN is queued (data copied unless it is bytes) and sent when the
 *     fd is writable, with pause_writing/resume_writing around the limits;
 *   - close() waits for the queue to drain; abort() drops it;
 *     connection_lost is called exactly once, then the socket is closed;
 *   - sendto() after the connection is lost is dropped, with a warning
 *     from the fifth drop on.
 *
 * Lifetime: while its fd is watched the transport holds a reference to
 * itself, so an endpoint that is reading stays alive without user
 * references, as asyncio's selector keeps it.  loop.close() stops every
 * watch (fa_transport_close_all); a transport collected while still open warns
 * with a ResourceWarning and closes its socket. */
#include "net.h"
#include "handle.h"
#include "loop.h"
#include "state.h"
#include "transport.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_DATAGRAM FA_RECV_BUF_SIZE /* asyncio's max_size */
#define LOG_THRESHOLD 5              /* constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES */

typedef struct {
    PyObject *data;                  /* bytes */
    PyObject *addr;                  /* destination, or NULL for None */
} fa_dgram;

typedef struct {
    FA_TRANSPORT_HEAD
    PyObject *address;               /* remote_addr, or NULL */
    int sock_fd;                     /* the fd, kept for repr() and _sock_fd */
    int family;                      /* the socket's address family */
    int direct;                      /* recvfrom() here (AF_INET, AF_INET6, AF_UNIX) */
    int connected;                   /* extra['peername'] is set: send(), not sendto() */
    int write_armed;                 /* waiting for writability (asyncio's writer) */
    int lost;                        /* connection_lost was called */

    /* Send queue: a ring of datagrams. */
    fa_dgram *q;
    Py_ssize_t qhead, qlen, qcap;

    /* The last sender's address and its tuple: datagrams from the same
     * peer reuse the (immutable) tuple instead of building a new one. */
    struct sockaddr_storage last_ss;
    socklen_t last_len;
    PyObject *last_addr;

    PyObject *weakreflist;
} fa_udp;

#define T(t) ((fa_transport *)(t))


static inline fa_net_state *
net(fa_udp *t)
{
    return &t->loop->st->net;
}

/* ------------------------------------------------------------ helpers */


/* Watch the fd for what the transport waits for now (see
 * fa_transport_watch).  The caller must own a reference.  Returns -1 with
 * an exception. */
static int
update_poll(fa_udp *t)
{
    int want = 0;
    if (t->started && !t->closing && !t->paused) {
        want |= UV_READABLE;
    }
    if (t->write_armed) {
        want |= UV_WRITABLE;
    }
    return fa_transport_watch(T(t), want);
}

/* ------------------------------------------------------------ send queue */

static void
q_clear(fa_udp *t)
{
    while (t->qlen > 0) {
        fa_dgram *d = &t->q[t->qhead];
        Py_CLEAR(d->data);
        Py_CLEAR(d->addr);
        t->qhead = (t->qhead + 1) % t->qcap;
        t->qlen--;
    }
    t->qhead = 0;
    t->wsize = 0;
}

static int
q_grow(fa_udp *t)
{
    Py_ssize_t ncap = t->qcap ? t->qcap * 2 : 8;
    fa_dgram *nq = PyMem_New(fa_dgram, ncap);
    if (nq == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < t->qlen; i++) {
        nq[i] = t->q[(t->qhead + i) % t->qcap];
    }
    PyMem_Free(t->q);
    t->q = nq;
    t->qcap = ncap;
    t->qhead = 0;
    return 0;
}

/* Append (steals both references; addr may be NULL). */
static int
q_push(fa_udp *t, PyObject *data, PyObject *addr)
{
    if (t->qlen == t->qcap && q_grow(t) < 0) {
        Py_DECREF(data);
        Py_XDECREF(addr);
        return -1;
    }
    fa_dgram *d = &t->q[(t->qhead + t->qlen) % t->qcap];
    d->data = data;
    d->addr = addr;
    t->qlen++;
    t->wsize += PyBytes_GET_SIZE(data) + FA_DGRAM_HEADER_SIZE;
    return 0;
}

/* Put a datagram back at the front (steals both references). */
static int
q_push_front(fa_udp *t, PyObject *data, PyObject *addr)
{
    if (t->qlen == t->qcap && q_grow(t) < 0) {
        Py_DECREF(data);
        Py_XDECREF(addr);
        return -1;
    }
    t->qhead = (t->qhead + t->qcap - 1) % t->qcap;
    t->q[t->qhead].data = data;
    t->q[t->qhead].addr = addr;
    t->qlen++;
    t->wsize += PyBytes_GET_SIZE(data) + FA_DGRAM_HEADER_SIZE;
    return 0;
}

/* Take the first datagram (new references). */
static void
q_pop(fa_udp *t, PyObject **data, PyObject **addr)
{
    fa_dgram *d = &t->q[t->qhead];
    *data = d->data;
    *addr = d->addr;
    d->data = d->addr = NULL;
    t->qhead = (t->qhead + 1) % t->qcap;
    t->qlen--;
    t->wsize -= PyBytes_GET_SIZE(*data) + FA_DGRAM_HEADER_SIZE;
    if (t->qlen == 0) {
        t->qhead = 0;
    }
}

/* ------------------------------------------------------------ addresses */

/* The socket module's tuple for a sender's address (makesockaddr), for the
 * families read directly.  Returns a new reference, or NULL with an
 * exception. */
static PyObject *
make_addr(fa_udp *t, const struct sockaddr_storage *ss, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    PyObject *addr = NULL, *hostobj;

    if (len == 0) {
        Py_RETURN_NONE; /* what socket.recvfrom() gives when there is none */
    }
    if (t->last_addr != NULL && len == t->last_len && memcmp(ss, &t->last_ss, len) == 0) {
        return Py_NewRef(t->last_addr);
    }
    switch (ss->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host)) == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
            return NULL;
        }
        hostobj = PyUnicode_FromString(host);
        if (hostobj == NULL) {
            return NULL;
        }
        addr = Py_BuildValue("(Ni)", hostobj, (int)ntohs(a->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host)) == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
            return NULL;
        }
        hostobj = PyUnicode_FromString(host);
        if (hostobj == NULL) {
            return NULL;
        }
        addr = Py_BuildValue("(NiII)", hostobj, (int)ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)ss;
        Py_ssize_t plen = (Py_ssize_t)len - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
        if (plen > 0 && a->sun_path[0] == '\0') {
            /* Linux abstract namespace: bytes, as the socket module. */
            addr = PyBytes_FromStringAndSize(a->sun_path, plen);
        }
        else {
            /* A path (or "" for an unbound sender): NUL-terminated. */
            size_t n = plen > 0 ? strnlen(a->sun_path, (size_t)plen) : 0;
            addr = PyUnicode_DecodeFSDefaultAndSize(a->sun_path, (Py_ssize_t)n);
        }
        break;
    }
    default:
        PyErr_Format(PyExc_OSError, "unexpected address family %d", (int)ss->ss_family);
        return NULL;
    }
    if (addr != NULL) {
        Py_XSETREF(t->last_addr, Py_NewRef(addr));
        memcpy(&t->last_ss, ss, len);
        t->last_len = len;
    }
    return addr;
}

/* A host given as an ASCII str without NUL, as a C string, or NULL. */
static const char *
ascii_host(PyObject *o)
{
    Py_ssize_t n;
    const char *s;
    if (!PyUnicode_CheckExact(o) || !PyUnicode_IS_ASCII(o)) {
        return NULL;
    }
    s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (n == 0 || (size_t)n != strlen(s)) {
        return NULL; /* "" means INADDR_ANY to the socket module */
    }
    return s;
}

static int
small_int(PyObject *o, long lo, long hi, long *out)
{
    long v;
    if (!PyLong_CheckExact(o)) {
        return 0;
    }
    v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (v < lo || v > hi) {
        return 0;
    }
    *out = v;
    return 1;
}

/* The sockaddr the socket module would build for addr, for numeric hosts
 * only: an IPv4 (host, port) on an AF_INET socket, an IPv6 (host, port[,
 * flowinfo[, scope_id]]) without "%scope" on an AF_INET6 socket.  The
 * socket module parses those hosts with inet_pton too.  Returns 1 with
 * the address in ss and len, 0 when the socket module must do it (names, "",
 * "<broadcast>", out-of-range numbers, other types: it raises the errors). */
static int
fast_sockaddr(int family, PyObject *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *host;
    long port, flowinfo = 0, scope = 0;
    Py_ssize_t n;

    if (!PyTuple_CheckExact(addr)) {
        return 0;
    }
    n = PyTuple_GET_SIZE(addr);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (n != 2 || (host = ascii_host(PyTuple_GET_ITEM(addr, 0))) == NULL ||
            !small_int(PyTuple_GET_ITEM(addr, 1), 0, 65535, &port)) {
            return 0;
        }
        memset(a, 0, sizeof(*a));
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            return 0;
        }
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof(*a);
        return 1;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (n < 2 || n > 4 || (host = ascii_host(PyTuple_GET_ITEM(addr, 0))) == NULL ||
            strchr(host, '%') != NULL ||
            !small_int(PyTuple_GET_ITEM(addr, 1), 0, 65535, &port) ||
            (n > 2 && !small_int(PyTuple_GET_ITEM(addr, 2), 0, 0xfffff, &flowinfo)) ||
            (n > 3 && !small_int(PyTuple_GET_ITEM(addr, 3), 0, (long)UINT32_MAX, &scope))) {
            return 0;
        }
        memset(a, 0, sizeof(*a));
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            return 0;
        }
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_flowinfo = htonl((uint32_t)flowinfo);
        a->sin6_scope_id = (uint32_t)scope;
        *len = sizeof(*a);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ errors, closing */

/* asyncio's datagram transport logs an OSError in debug mode only. */
static int
os_error_reported(fa_transport *tt, PyObject *exc, const char *message)
{
    fa_udp *t = (fa_udp *)tt;
    if (t->loop->debug) {
        PyObject *kw = Py_BuildValue("{sO}", "exc_info", exc);
        PyObject *args = kw == NULL ? NULL : Py_BuildValue("(sOs)", "%r: %s", (PyObject *)t,
                                                           message);
        PyObject *meth = args == NULL ? NULL : PyObject_GetAttrString(net(t)->logger, "debug");
        PyObject *r = meth == NULL ? NULL : PyObject_Call(meth, args, kw);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
        Py_XDECREF(meth);
        Py_XDECREF(args);
        Py_XDECREF(kw);
    }
    return 0;
}

static int
update_poll_op(fa_transport *t)
{
    return update_poll((fa_udp *)t);
}

static void
clear_buffer_op(fa_transport *t)
{
    q_clear((fa_udp *)t);
    ((fa_udp *)t)->write_armed = 0;
}

static const fa_transport_ops udp_ops = {
    .update_poll = update_poll_op,
    .force_close = fa_transport_force_close,
    .os_error_reported = os_error_reported,
    .clear_buffer = clear_buffer_op,
};

/* The current exception came from a syscall or socket method: OSErrors go
 * to protocol.error_received (whose own exception propagates: returns -1),
 * KeyboardInterrupt/SystemExit propagate, anything else is fatal. */
static int
io_failed(fa_udp *t, const char *fatal_message)
{
    PyObject *exc, *r;
    if (fa_is_fatal_exception()) {
        return -1;
    }
    exc = fa_fetch_exception();
    if (exc == NULL) {
        return -1;
    }
    if (PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        if (t->protocol == NULL) {
            Py_DECREF(exc);
            return 0;
        }
        r = PyObject_CallMethodOneArg(t->protocol, net(t)->s_error_received, exc);
        Py_DECREF(exc);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        return 0;
    }
    int res = fa_transport_fatal_error(T(t), exc, fatal_message);
    Py_DECREF(exc);
    return res;
}

static PyObject *
udp_call_connection_lost(fa_udp *t, PyObject *exc)
{
    PyObject *r, *err = NULL;
    if (t->lost) {
        Py_RETURN_NONE; /* already done: connection_lost runs once */
    }
    t->lost = 1;
    Py_INCREF(t);
    r = PyObject_CallMethodOneArg(t->protocol, t->loop->st->net.s_connection_lost, exc);
    if (r == NULL) {
        err = fa_fetch_exception();
    }
    Py_XDECREF(r);
    /* finally: */
    t->closing = 1;
    t->write_armed = 0;
    if (t->conn_lost == 0) {
        t->conn_lost = 1; /* later sendto() calls are dropped */
    }
    Py_CLEAR(t->protocol);
    if (fa_transport_release_fd(T(t)) < 0 && err == NULL) {
        err = fa_fetch_exception();
    }
    q_clear(t);
    if (t->read_h != NULL) {
        t->read_h->cancelled = 1;
    }
    if (t->write_h != NULL) {
        t->write_h->cancelled = 1;
    }
    Py_CLEAR(t->read_h);
    Py_CLEAR(t->write_h);
    Py_CLEAR(t->last_addr);
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

/* ------------------------------------------------------------ reading */

static int
read_direct(fa_udp *t)
{
    struct sockaddr_storage ss;
    socklen_t len;
    Py_ssize_t n;
    PyObject *data, *addr, *r;

    char *recv_buf = fa_transport_recv_buf(t->loop);
    if (recv_buf == NULL) {
        return io_failed(t, "Fatal read error on datagram transport");
    }
    if (t->family == AF_UNIX) {
        /* The socket module zeroes its address buffer: what follows the
         * returned length reads as the end of a path. */
        memset(&ss, 0, sizeof(ss));
    }
    int fd = fa_transport_live_fd(T(t));
    do {
        len = sizeof(ss);
        n = fd < 0 ? -1 : recvfrom(fd, recv_buf, MAX_DATAGRAM, 0, (struct sockaddr *)&ss, &len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return io_failed(t, "Fatal read error on datagram transport");
    }
    data = PyBytes_FromStringAndSize(recv_buf, n);
    if (data == NULL) {
        return io_failed(t, "Fatal read error on datagram transport");
    }
    addr = make_addr(t, &ss, len);
    if (addr == NULL) {
        Py_DECREF(data);
        return io_failed(t, "Fatal read error on datagram transport");
    }
    r = PyObject_CallMethodObjArgs(t->protocol, net(t)->s_datagram_received, data, addr, NULL);
    Py_DECREF(data);
    Py_DECREF(addr);
    if (r == NULL) {
        return -1; /* to the Handle, hence the loop's exception handler */
    }
    Py_DECREF(r);
    return 0;
}

/* Other families: the socket object's recvfrom(). */
static int
read_socket(fa_udp *t)
{
    PyObject *args[2] = {t->sock, net(t)->udp_max_size};
    PyObject *res, *r;
    res = PyObject_VectorcallMethod(net(t)->s_recvfrom, args,
                                    2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (res == NULL) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
            PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            return 0;
        }
        return io_failed(t, "Fatal read error on datagram transport");
    }
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "socket.recvfrom() did not return (data, address)");
        return io_failed(t, "Fatal read error on datagram transport");
    }
    r = PyObject_CallMethodObjArgs(t->protocol, net(t)->s_datagram_received,
                                   PyTuple_GET_ITEM(res, 0), PyTuple_GET_ITEM(res, 1), NULL);
    Py_DECREF(res);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *
udp_read_ready(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    int r;
    if (t->conn_lost || t->closing || t->paused || t->fd < 0 || t->lost) {
        Py_RETURN_NONE;
    }
    Py_INCREF(t);
    r = t->direct ? read_direct(t) : read_socket(t);
    /* Restart the watch if an error condition stopped it (see
     * transport_on_events, transport.c): the syscall above took the socket
     * error. */
    if (r < 0) {
        PyObject *exc = fa_fetch_exception();
        fa_transport_update_poll_or_report(T(t));
        fa_restore_exception(exc);
    }
    else {
        fa_transport_update_poll_or_report(T(t));
    }
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ writing */

/* Send one datagram.  Returns 1 if sent, 0 if it would block, -1 with an
 * exception (an OSError from the syscall, or whatever the socket module
 * raised for the address). */
static int
send_one(fa_udp *t, PyObject *data, PyObject *addr)
{
    Py_buffer view;
    Py_ssize_t n;
    struct sockaddr_storage ss;
    socklen_t sslen = 0;

    if (t->fd < 0) {
        /* The socket is closed: asyncio fails on its None socket here. */
        PyErr_SetString(PyExc_RuntimeError, "the datagram transport's socket is closed");
        return -1;
    }
    if (!t->connected && (addr == NULL || !fast_sockaddr(t->family, addr, &ss, &sslen))) {
        /* Let the socket module parse the address and raise its errors. */
        PyObject *args[3] = {t->sock, data, addr != NULL ? addr : Py_None};
        PyObject *res = PyObject_VectorcallMethod(net(t)->s_sendto, args,
                                                  3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (res == NULL) {
            if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
                PyErr_ExceptionMatches(PyExc_InterruptedError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        Py_DECREF(res);
        return 1;
    }
    if (!t->connected && PySys_Audit("socket.sendto", "OO", t->sock, addr) < 0) {
        return -1; /* the event socket.sendto() raises */
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    int fd = fa_transport_live_fd(T(t));
    do {
        if (fd < 0) {
            n = -1;
        }
        else if (t->connected) {
            n = send(fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
        }
        else {
            n = sendto(fd, view.buf, (size_t)view.len, MSG_NOSIGNAL,
                       (struct sockaddr *)&ss, sslen);
        }
    } while (n < 0 && errno == EINTR);
    int saved = errno;
    PyBuffer_Release(&view);
    if (n < 0) {
        if (saved == EAGAIN || saved == EWOULDBLOCK) {
            return 0;
        }
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 1;
}

static PyObject *
udp_sendto_ready(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *data, *addr;
    int r = 0;
    if (!t->write_armed || t->fd < 0) {
        Py_RETURN_NONE;
    }
    Py_INCREF(t);
    while (t->qlen > 0) {
        q_pop(t, &data, &addr);
        int s = send_one(t, data, addr);
        if (s == 0) {
            if (q_push_front(t, data, addr) < 0) { /* try again later */
                r = -1;
            }
            break;
        }
        Py_DECREF(data);
        Py_XDECREF(addr);
        if (s < 0) {
            /* error_received: the rest waits for the next event. */
            r = io_failed(t, "Fatal write error on datagram transport");
            goto done;
        }
    }
    if (r == 0) {
        r = fa_transport_maybe_resume_protocol(T(t)); /* may queue more */
    }
    if (r == 0 && t->qlen == 0) {
        t->write_armed = 0;
        if (t->closing && !t->lost) {
            PyObject *res = udp_call_connection_lost(t, Py_None);
            if (res == NULL) {
                r = -1;
            }
            Py_XDECREF(res);
        }
    }
done:
    if (r < 0) {
        PyObject *exc = fa_fetch_exception();
        fa_transport_update_poll_or_report(T(t));
        fa_restore_exception(exc);
    }
    else {
        fa_transport_update_poll_or_report(T(t));
    }
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* An immutable copy of data for the queue (a new reference). */
static PyObject *
own_bytes(PyObject *data)
{
    if (PyBytes_CheckExact(data)) {
        return Py_NewRef(data);
    }
    return PyBytes_FromObject(data);
}

static PyObject *
udp_sendto(fa_udp *t, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "addr"};
    PyObject *kw[2]; /* data, addr */
    PyObject *data, *addr;
    int truth;

    if (fa_parse_args("sendto", args, nargs, kwnames, names, 2, 1, 2, kw) < 0) {
        return NULL;
    }
    data = kw[0];
    addr = kw[1] != NULL ? kw[1] : Py_None;

    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.200s'",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (!FA_DGRAM_SEND_EMPTY) {
        truth = PyObject_IsTrue(data);
        if (truth <= 0) {
            return truth < 0 ? NULL : Py_NewRef(Py_None); /* before 3.13: nothing for b"" */
        }
    }
    if (t->address != NULL) {
        if (addr != Py_None) {
            int eq = PyObject_RichCompareBool(addr, t->address, Py_EQ);
            if (eq < 0) {
                return NULL;
            }
            if (!eq) {
                PyErr_Format(PyExc_ValueError, "Invalid address: must be None or %S", t->address);
                return NULL;
            }
        }
        addr = t->address;
    }
    /* After the connection is lost: dropped, with a warning from the fifth
     * on.  asyncio only drops for an endpoint with a remote address (the
     * others fail on the closed socket); both drop here. */
    if (t->conn_lost && (t->address != NULL || t->fd < 0)) {
        if (t->conn_lost >= LOG_THRESHOLD) {
            fa_transport_log_warning(T(t), "socket.send() raised exception.");
        }
        t->conn_lost++;
        Py_RETURN_NONE;
    }

    Py_INCREF(t);
    if (t->qlen == 0) {
        /* Try to send it right away. */
        int s = send_one(t, data, addr == Py_None ? NULL : addr);
        if (s != 0) {
            int r = s > 0 ? 0 : io_failed(t, "Fatal write error on datagram transport");
            Py_DECREF(t);
            return r < 0 ? NULL : Py_NewRef(Py_None);
        }
        /* EAGAIN: wait for the fd to be writable. */
        t->write_armed = 1;
        if (update_poll(t) < 0) {
            Py_DECREF(t);
            return NULL;
        }
    }
    PyObject *copy = own_bytes(data);
    if (copy == NULL ||
        q_push(t, copy, addr == Py_None ? NULL : Py_NewRef(addr)) < 0 ||
        fa_transport_maybe_pause_protocol(T(t)) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    Py_DECREF(t);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ closing */

static PyObject *
udp_close(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    int r = 0;
    if (t->closing) {
        Py_RETURN_NONE;
    }
    t->closing = 1;
    Py_INCREF(t);
    if (t->qlen == 0) {
        t->conn_lost++;
        t->write_armed = 0;
        r = update_poll(t);
        if (r == 0) {
            r = fa_transport_schedule_lost(T(t), NULL);
        }
    }
    else {
        r = update_poll(t); /* stop reading; connection_lost once drained */
    }
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Called soon after connection_made, as asyncio adds its reader then. */
static PyObject *
udp_start_reading(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    if (t->started || t->sock == NULL || t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->started = 1;
    if (update_poll(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ reading control */

/* Python 3.11.3+ gives datagram transports pause_reading/resume_reading. */
static PyObject *
udp_is_reading(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->closing && !t->paused);
}

static void
debug_log(fa_udp *t, const char *what)
{
    if (t->loop->debug) {
        PyObject *r = PyObject_CallMethod(net(t)->logger, "debug", "sO", what, (PyObject *)t);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
    }
}

static PyObject *
udp_pause_reading(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    Py_INCREF(t);
    int r = update_poll(t);
    if (r == 0) {
        debug_log(t, "%r pauses reading");
    }
    Py_DECREF(t);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
udp_resume_reading(fa_udp *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 0;
    t->started = 1; /* asyncio adds its reader here, even before connection_made's turn */
    if (update_poll(t) < 0) {
        return NULL;
    }
    debug_log(t, "%r resumes reading");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ misc API */

static PyObject *
udp_set_protocol(fa_udp *t, PyObject *protocol)
{
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_RETURN_NONE;
}

static PyObject *
udp_repr(fa_udp *t)
{
    const char *state = t->sock == NULL ? " closed" : (t->closing ? " closing" : "");
    if (t->loop == NULL || t->loop->closed || t->lost) {
        return PyUnicode_FromFormat("<%s%s fd=%d>", Py_TYPE(t)->tp_name, state, t->sock_fd);
    }
    return PyUnicode_FromFormat("<%s%s fd=%d read=%s write=<%s, bufsize=%zd>>",
                                Py_TYPE(t)->tp_name, state, t->sock_fd,
                                t->events & UV_READABLE ? "polling" : "idle",
                                t->events & UV_WRITABLE ? "polling" : "idle", t->wsize);
}

/* ------------------------------------------------------------ type */

/* The module's definition, which finds a (sub)type's module in tp_new:
 * module.c's, kept by fa_udp_init (the same for every module instance). */

static PyObject *
udp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", "sock", "protocol", "extra", "address", "waiter", NULL};
    PyObject *loop, *sock, *protocol, *extra, *address = Py_None, *waiter = Py_None;
    PyObject *fdobj, *cb = NULL, *peer;
    fa_udp *t;
    fa_state *st;
    long fd;
    int family = 0;
    socklen_t flen = sizeof(family);

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!|OO:DatagramTransport", kwlist, &loop,
                                     &sock, &protocol, &PyDict_Type, &extra, &address, &waiter)) {
        return NULL;
    }
    PyObject *mod = fa_module_of_type(type);
    if (mod == NULL) {
        return NULL;
    }
    st = fa_get_state(mod);
    if (!PyObject_TypeCheck(loop, st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "DatagramTransport needs a flaskasync loop");
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
        PyErr_Format(PyExc_ValueError, "the socket is closed (fd %ld)", fd);
        return NULL;
    }
    if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &family, &flen) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    peer = PyDict_GetItemString(extra, "peername"); /* borrowed, no error */

    t = (fa_udp *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    t->ops = &udp_ops;
    t->loop = (fa_loop *)Py_NewRef(loop);
    t->fd = t->sock_fd = (int)fd;
    t->family = family;
    t->direct = family == AF_INET || family == AF_INET6 || family == AF_UNIX;
    t->high = FA_DEFAULT_HIGH_WATER;
    t->low = FA_DEFAULT_HIGH_WATER / 4;
    t->extra = Py_NewRef(extra);
    t->sock = Py_NewRef(sock);
    t->protocol = Py_NewRef(protocol);
    t->address = address == Py_None ? NULL : Py_NewRef(address);
    fa_transport_list_add(T(t));
    if (peer != NULL) {
        int c = PyObject_IsTrue(peer);
        if (c < 0) {
            goto error;
        }
        t->connected = c;
    }

    if (fa_transport_start(T(t), "_sendto_ready", 1, waiter) < 0) {
        goto error;
    }
    return (PyObject *)t;

error:
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
udp_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    return 0;
}

static int
udp_traverse(fa_udp *t, visitproc visit, void *arg)
{
    Py_VISIT(t->address);
    Py_VISIT(t->last_addr);
    for (Py_ssize_t i = 0; i < t->qlen; i++) {
        fa_dgram *d = &t->q[(t->qhead + i) % t->qcap];
        Py_VISIT(d->data);
        Py_VISIT(d->addr);
    }
    return fa_transport_traverse_head(T(t), visit, arg);
}

static int
udp_clear(fa_udp *t)
{
    fa_transport_clear_head(T(t));
    Py_CLEAR(t->address);
    Py_CLEAR(t->last_addr);
    q_clear(t);
    return 0;
}

static void
udp_dealloc(fa_udp *t)
{
    if (fa_transport_dealloc_start(T(t), t->weakreflist) < 0) {
        return; /* resurrected */
    }
    udp_clear(t);
    PyMem_Free(t->q);
    fa_transport_dealloc_end(T(t));
}

static PyObject *
udp_get_fd(fa_udp *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->sock_fd);
}

static PyObject *
udp_get_loop_attr(fa_udp *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->loop != NULL && t->protocol != NULL ? (PyObject *)t->loop : Py_None);
}

static PyObject *
udp_get_protocol_attr(fa_udp *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->protocol != NULL ? t->protocol : Py_None);
}

static PyObject *
udp_get_address(fa_udp *t, void *Py_UNUSED(c))
{
    return Py_NewRef(t->address != NULL ? t->address : Py_None);
}

static PyObject *
udp_get_buffer_size(fa_udp *t, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(t->wsize);
}

static PyObject *
udp_get_conn_lost(fa_udp *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->conn_lost);
}

static PyObject *
udp_get_buffer(fa_udp *t, void *Py_UNUSED(c))
{
    /* A copy of asyncio's private deque of (data, addr), as a list. */
    PyObject *list = PyList_New(t->qlen);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < t->qlen; i++) {
        fa_dgram *d = &t->q[(t->qhead + i) % t->qcap];
        PyObject *item = PyTuple_Pack(2, d->data, d->addr != NULL ? d->addr : Py_None);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyGetSetDef udp_getset[] = {
    FA_TRANSPORT_GETSETS,
    {"_sock_fd", (getter)udp_get_fd, NULL, "the socket's fd (kept after closing)", NULL},
    {"_loop", (getter)udp_get_loop_attr, NULL, "the loop (None once connection_lost ran)", NULL},
    {"_protocol", (getter)udp_get_protocol_attr, NULL, NULL, NULL},
    {"_address", (getter)udp_get_address, NULL, "remote_addr, or None", NULL},
    {"_buffer_size", (getter)udp_get_buffer_size, NULL, "bytes waiting to be sent", NULL},
    {"_conn_lost", (getter)udp_get_conn_lost, NULL, NULL, NULL},
    {"_buffer", (getter)udp_get_buffer, NULL, "a copy of the queued (data, addr) pairs", NULL},
    {NULL},
};

static PyMemberDef udp_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(fa_udp, weakreflist), Py_READONLY, NULL},
    {NULL},
};

static PyMethodDef udp_methods[] = {
    FA_TRANSPORT_METHODS,
    {"sendto", (PyCFunction)(void (*)(void))udp_sendto, METH_FASTCALL | METH_KEYWORDS,
     "sendto(data, addr=None)\n--\n\nSend a datagram to addr (the remote address when the "
     "endpoint has one); queued if the kernel cannot take it now."},
    {"close", (PyCFunction)udp_close, METH_NOARGS,
     "Close after the queued datagrams are sent; connection_lost(None) follows."},
    {"is_reading", (PyCFunction)udp_is_reading, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)udp_pause_reading, METH_NOARGS,
     "Stop calling datagram_received until resume_reading()."},
    {"resume_reading", (PyCFunction)udp_resume_reading, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)udp_set_protocol, METH_O, NULL},
    {"_read_ready", (PyCFunction)udp_read_ready, METH_NOARGS, NULL},
    {"_sendto_ready", (PyCFunction)udp_sendto_ready, METH_NOARGS, NULL},
    {"_start_reading", (PyCFunction)udp_start_reading, METH_NOARGS, NULL},
    {"_call_connection_lost", (PyCFunction)udp_call_connection_lost, METH_O, NULL},
    {NULL},
};

static PyType_Slot udp_slots[] = {
    {Py_tp_new, udp_new},
    {Py_tp_init, udp_init},
    {Py_tp_dealloc, udp_dealloc},
    {Py_tp_finalize, fa_transport_finalize},
    {Py_tp_traverse, udp_traverse},
    {Py_tp_clear, udp_clear},
    {Py_tp_repr, udp_repr},
    {Py_tp_methods, udp_methods},
    {Py_tp_getset, udp_getset},
    {Py_tp_members, udp_members},
    {Py_tp_doc, "DatagramTransport(loop, sock, protocol, extra, address=None, waiter=None)\n"
                "--\n\nA datagram (UDP or Unix datagram) transport of a flaskasync loop\n"
                "(internal: use loop.create_datagram_endpoint())."},
    {0, NULL},
};

static PyType_Spec udp_spec = {
    .name = "flaskasync._core.DatagramTransport",
    .basicsize = sizeof(fa_udp),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = udp_slots,
};

/* ------------------------------------------------------------ module */

/* Create and register the datagram transport type on the module.
 * Returns 0, or -1 with an exception. */
int
fa_udp_init(PyObject *module, fa_state *st)
{
    fa_net_state *n = &st->net;
    /* asyncio's own datagram transport is a Transport too. */
    static const char *const bases[] = {"_FlowControlMixin", "DatagramTransport"};
    n->DatagramType = fa_transport_make_type(module, &udp_spec, bases, 2);
    if (n->DatagramType == NULL ||
        PyModule_AddObjectRef(module, "DatagramTransport", (PyObject *)n->DatagramType) < 0) {
        return -1;
    }
    n->s_datagram_received = PyUnicode_InternFromString("datagram_received");
    n->s_error_received = PyUnicode_InternFromString("error_received");
    n->udp_max_size = PyLong_FromLong(MAX_DATAGRAM);
    if (n->s_datagram_received == NULL || n->s_error_received == NULL ||
        n->udp_max_size == NULL) {
        return -1;
    }
    return 0;
}

int
fa_udp_traverse(fa_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->net.DatagramType);
    return 0;
}

void
fa_udp_clear(fa_state *st)
{
    fa_net_state *n = &st->net;
    Py_CLEAR(n->DatagramType);
    Py_CLEAR(n->s_datagram_received);
    Py_CLEAR(n->s_error_received);
    Py_CLEAR(n->udp_max_size);
}
