/* DNS: loop.getaddrinfo() and loop.getnameinfo() on libuv's threadpool.
 *
 * asyncio runs socket.getaddrinfo() in its default executor.  We hand the
 * same libc call to libuv (uv_getaddrinfo, uv_getnameinfo), whose worker
 * threads never touch Python, so a lookup never blocks the loop and costs
 * no Python thread.  Arguments are converted as the socket module converts
 * them (IDNA for str hosts, "%ld" for int ports), and results and errors
 * are built as it builds them: both loops return equal lists and raise the
 * same socket.gaierror.
 *
 * A request in flight holds a reference to its op, which owns the libuv
 * request, and counts in the loop's n_io so that iterations that do not
 * block still run uv_run to collect it.  Cancelling the future calls
 * uv_cancel().  libuv calls our callback in every case (with
 * UV_EAI_CANCELED, or with the result if a worker had already started the
 * lookup), and that callback is where the reference is dropped. */
#include "loop.h"
#include "net.h"
#include "op.h"
#include "state.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>

/* The libuv request of a DNS op. */
typedef union {
    uv_req_t req;
    uv_getaddrinfo_t gai;
    uv_getnameinfo_t gni;
} dns_req;

/* Argument slots of the ops (fa_op.argv). */
enum { GAI_HOST, GAI_PORT, GAI_FAMILY, GAI_TYPE, GAI_PROTO, GAI_FLAGS };
enum { GNI_SOCKADDR, GNI_FLAGS };

/* ------------------------------------------------------------- errors */

/* libuv's UV_EAI_* back to the EAI_* code that socket.gaierror carries;
 * 0 when status is a plain -errno (libuv's form of EAI_SYSTEM). */
static int
eai_from_uv(int status)
{
    switch (status) {
#ifdef EAI_ADDRFAMILY
    case UV_EAI_ADDRFAMILY:
        return EAI_ADDRFAMILY;
#endif
    case UV_EAI_AGAIN:
        return EAI_AGAIN;
    case UV_EAI_BADFLAGS:
        return EAI_BADFLAGS;
#ifdef EAI_CANCELED
    case UV_EAI_CANCELED:
        return EAI_CANCELED;
#endif
    case UV_EAI_FAIL:
        return EAI_FAIL;
    case UV_EAI_FAMILY:
        return EAI_FAMILY;
    case UV_EAI_MEMORY:
        return EAI_MEMORY;
#ifdef EAI_NODATA
    case UV_EAI_NODATA:
        return EAI_NODATA;
#endif
    case UV_EAI_NONAME:
        return EAI_NONAME;
    case UV_EAI_OVERFLOW:
        return EAI_OVERFLOW;
    case UV_EAI_SERVICE:
        return EAI_SERVICE;
    case UV_EAI_SOCKTYPE:
        return EAI_SOCKTYPE;
    default:
        return 0;
    }
}

/* The socket module's set_gaierror(): gaierror(code, gai_strerror(code)),
 * or for EAI_SYSTEM an OSError from errno.  Always returns -1. */
static int
set_gaierror(fa_state *st, int eai)
{
    PyObject *v;
    if (eai == EAI_SYSTEM) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    v = Py_BuildValue("(is)", eai, gai_strerror(eai));
    if (v != NULL) {
        PyErr_SetObject(st->net.gaierror, v);
        Py_DECREF(v);
    }
    return -1;
}

/* A libuv DNS status as the socket module would raise it.  A system error
 * becomes OSError(errno, strerror(errno)) rather than going through
 * fa_set_uv_error, whose libuv messages differ from the socket module's.
 * Always returns -1. */
int
fa_net_gaierror(fa_state *st, int status)
{
    int eai = eai_from_uv(status);
    if (eai == 0) {
        errno = -status;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return set_gaierror(st, eai);
}


/* ------------------------------------------------------------ results */

/* socket module's _intenum_converter(): enum_type(value), or the plain
 * int when the enum has no such member. */
static PyObject *
intenum(PyObject *enum_type, int value)
{
    PyObject *v = PyLong_FromLong(value), *r;
    if (v == NULL) {
        return NULL;
    }
    r = PyObject_CallOneArg(enum_type, v);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        return v;
    }
    Py_DECREF(v);
    return r;
}

/* A sockaddr as the socket module's makesockaddr() builds it. */
static PyObject *
make_sockaddr(const struct sockaddr *sa, socklen_t len)
{
    char buf[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(si)", buf, ntohs(a->sin_port));
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(siII)", buf, ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    return Py_BuildValue("(iy#)", sa->sa_family, sa->sa_data, (Py_ssize_t)sizeof(sa->sa_data));
}

/* socket.getaddrinfo()'s list of (family, type, proto, canonname, sockaddr). */
static PyObject *
addrinfo_list(fa_net_state *net, const struct addrinfo *res)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        PyObject *fam = NULL, *kind = NULL, *addr = NULL, *item = NULL;
        int r = -1;
        addr = make_sockaddr(ai->ai_addr, ai->ai_addrlen);
        if (addr != NULL) {
            fam = intenum(net->AddressFamily, ai->ai_family);
        }
        if (fam != NULL) {
            kind = intenum(net->SocketKind, ai->ai_socktype);
        }
        if (kind != NULL) {
            item = Py_BuildValue("(OOisO)", fam, kind, ai->ai_protocol,
                                 ai->ai_canonname ? ai->ai_canonname : "", addr);
        }
        if (item != NULL) {
            r = PyList_Append(list, item);
        }
        Py_XDECREF(item);
        Py_XDECREF(kind);
        Py_XDECREF(fam);
        Py_XDECREF(addr);
        if (r < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

/* ------------------------------------------------------------ requests */

/* Done callback of the op's future: a cancelled lookup that no worker has
 * started yet is dropped from libuv's queue.  uv_cancel fails harmlessly
 * (UV_EBUSY) once a worker has it; its result is then ignored. */
static PyObject *
dns_fut_done(PyObject *self, PyObject *Py_UNUSED(fut))
{
    fa_op *op = (fa_op *)self;
    if (op->in_flight && !fa_loop_forked(op->loop)) {
        (void)uv_cancel(op->req);
    }
    Py_RETURN_NONE;
}

static PyMethodDef dns_fut_done_def = {"_dns_done", dns_fut_done, METH_O, NULL};

/* Allocate the request, and create the op's future with the done
 * callback that cancels the request. */
static int
dns_prepare(fa_op *op)
{
    PyObject *fut, *cb, *r;
    if (op->req == NULL) {
        op->req = PyMem_RawCalloc(1, sizeof(dns_req));
        if (op->req == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        op->req->data = op;
    }
    fut = fa_op_new_future(op);
    if (fut == NULL) {
        return -1;
    }
    cb = PyCFunction_New(&dns_fut_done_def, (PyObject *)op);
    if (cb == NULL) {
        return -1;
    }
    r = PyObject_CallMethodOneArg(fut, op->loop->st->s_add_done_callback, cb);
    Py_DECREF(cb);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The request was submitted: keep the op alive and the loop polling until
 * its callback, then await the future. */
static int
dns_submitted(fa_op *op)
{
    fa_loop *loop = op->loop;
    Py_INCREF(op);
    op->in_flight = 1;
    op->prev = NULL;
    op->next = loop->requests;
    if (op->next != NULL) {
        op->next->prev = op;
    }
    loop->requests = op;
    loop->n_io++;
    return fa_op_await_future(op);
}

/* In the libuv callback: the request is over.  Returns 1 if its outcome
 * should go to the future (the loop is open, nobody cancelled it). */
static int
dns_completed(fa_op *op)
{
    fa_loop *loop = op->loop;
    PyObject *done;
    int deliver;

    op->in_flight = 0;
    loop->n_io--;
    if (op->prev != NULL) {
        op->prev->next = op->next;
    }
    else {
        loop->requests = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    op->prev = op->next = NULL;
    if (loop->closed || op->fut == NULL) {
        return 0;
    }
    done = PyObject_CallMethodNoArgs(op->fut, loop->st->s_done);
    if (done == NULL) {
        PyObject *exc = fa_fetch_exception();
        fa_op_call_exception_handler(loop, "Exception in a DNS request callback", exc);
        Py_XDECREF(exc);
        return 0;
    }
    deliver = done == Py_False;
    Py_DECREF(done);
    return deliver;
}

/* Complete the future with `result`, or with the exception set when
 * result is NULL.  Never leaves an exception set: we are in a libuv
 * callback. */
static void
dns_deliver(fa_op *op, PyObject *result)
{
    fa_state *st = op->loop->st;
    PyObject *r;
    if (result != NULL) {
        r = PyObject_CallMethodOneArg(op->fut, st->s_set_result, result);
    }
    else {
        PyObject *exc = fa_fetch_exception();
        r = exc ? PyObject_CallMethodOneArg(op->fut, st->s_set_exception, exc) : NULL;
        Py_XDECREF(exc);
    }
    if (r == NULL) {
        PyObject *exc = fa_fetch_exception();
        fa_op_call_exception_handler(op->loop, "Exception in a DNS request callback", exc);
        Py_XDECREF(exc);
        PyErr_Clear();
    }
    Py_XDECREF(r);
}

void
fa_dns_cancel_all(fa_loop *self)
{
    if (fa_loop_forked(self)) {
        return;
    }
    for (fa_op *op = self->requests; op != NULL; op = op->next) {
        (void)uv_cancel(op->req);
    }
}

/* ------------------------------------------------------- getaddrinfo */

/* The request's callback is done with it: libuv no longer touches it. */
static void
dns_release(fa_op *op)
{
    PyMem_RawFree(op->req);
    op->req = NULL;
    Py_DECREF(op); /* the request's reference */
}

static void
on_getaddrinfo(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    fa_op *op = (fa_op *)req->data;
    fa_loop_gil_ensure(op->loop);
    if (dns_completed(op)) {
        PyObject *list = NULL;
        if (status == 0) {
            list = addrinfo_list(&op->loop->st->net, res);
        }
        else {
            fa_net_gaierror(op->loop->st, status);
        }
        dns_deliver(op, list);
        Py_XDECREF(list);
    }
    if (res != NULL) {
        uv_freeaddrinfo(res);
    }
    dns_release(op);
}

/* A C int from an argument, with the "i" converter's errors. */
static int
as_int(PyObject *o, int *out)
{
    *out = 0;
    if (o == NULL) {
        return 0;
    }
    return PyArg_Parse(o, "i", out) ? 0 : -1;
}

static int
gai_step(fa_op *op, PyObject *value)
{
    fa_loop *loop = op->loop;
    fa_state *st = loop->st;
    PyObject *hobj = op->argv[GAI_HOST], *pobj = op->argv[GAI_PORT];
    PyObject *idna = NULL, *pdigits = NULL;
    const char *host = NULL, *port = NULL;
    char pbuf[32];
    int family, type, proto, flags, r;
    struct addrinfo hints;

    if (value != NULL) {
        op->result = Py_NewRef(value);
        return FA_OP_DONE;
    }
    if (fa_loop_check_closed(loop) < 0 || as_int(op->argv[GAI_FAMILY], &family) < 0 ||
        as_int(op->argv[GAI_TYPE], &type) < 0 || as_int(op->argv[GAI_PROTO], &proto) < 0 ||
        as_int(op->argv[GAI_FLAGS], &flags) < 0) {
        return -1;
    }
    /* The socket module's conversions, in its order. */
    if (hobj == Py_None) {
        host = NULL;
    }
    else if (PyUnicode_Check(hobj)) {
        idna = PyUnicode_AsEncodedString(hobj, "idna", NULL);
        if (idna == NULL) {
            return -1;
        }
        host = PyBytes_AS_STRING(idna);
    }
    else if (PyBytes_Check(hobj)) {
        host = PyBytes_AS_STRING(hobj);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "getaddrinfo() argument 1 must be string or None");
        return -1;
    }
    if (PyLong_CheckExact(pobj)) {
        long v = PyLong_AsLong(pobj);
        if (v == -1 && PyErr_Occurred()) {
            if (!FA_GAI_BIG_PORT_AS_DIGITS || !PyErr_ExceptionMatches(PyExc_OverflowError)) {
                goto error;
            }
            PyErr_Clear();
            pdigits = PyObject_Str(pobj);
            port = pdigits != NULL ? PyUnicode_AsUTF8(pdigits) : NULL;
            if (port == NULL) {
                goto error;
            }
        }
        else {
            PyOS_snprintf(pbuf, sizeof(pbuf), "%ld", v);
            port = pbuf;
        }
    }
    else if (PyUnicode_Check(pobj)) {
        port = PyUnicode_AsUTF8(pobj);
        if (port == NULL) {
            goto error;
        }
    }
    else if (PyBytes_Check(pobj)) {
        port = PyBytes_AS_STRING(pobj);
    }
    else if (pobj == Py_None) {
        port = NULL;
    }
    else {
        PyErr_SetString(PyExc_OSError, "Int or String expected");
        goto error;
    }
    if (PySys_Audit("socket.getaddrinfo", "OOiii", hobj, pobj, family, type, proto) < 0) {
        goto error;
    }
    if (host == NULL && port == NULL) {
        /* libuv refuses this outright; getaddrinfo() says EAI_NONAME. */
        set_gaierror(st, EAI_NONAME);
        goto error;
    }
    if (dns_prepare(op) < 0) {
        goto error;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = type;
    hints.ai_protocol = proto;
    hints.ai_flags = flags;
    /* libuv copies host, port and hints: they need not outlive this call. */
    r = uv_getaddrinfo(&loop->uv, (uv_getaddrinfo_t *)op->req, on_getaddrinfo, host, port,
                       &hints);
    Py_CLEAR(idna);
    Py_CLEAR(pdigits);
    if (r < 0) {
        /* UV_EINVAL here comes from libuv's IDNA step, which rejects names
         * longer than 255 bytes and bytes that are not UTF-8; getaddrinfo()
         * fails on such names with EAI_NONAME. */
        if (r == UV_EINVAL && host != NULL) {
            return set_gaierror(st, EAI_NONAME);
        }
        return fa_net_gaierror(st, r);
    }
    return dns_submitted(op);

error:
    Py_XDECREF(idna);
    Py_XDECREF(pdigits);
    return -1;
}

static const fa_op_kind gai_kind = {"getaddrinfo", "Loop.getaddrinfo", gai_step, NULL, NULL};

static PyObject *
loop_getaddrinfo(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* host and port positional or keyword; the rest keyword-only. */
    static const char *const names[] = {"host", "port", "family", "type", "proto", "flags"};
    PyObject *argv[6];
    if (fa_parse_args("getaddrinfo", args, nargs, kwnames, names, 6, 2, 2, argv) < 0) {
        return NULL;
    }
    return (PyObject *)fa_op_new(self, &gai_kind, argv, 6);
}

/* ------------------------------------------------------- getnameinfo */

static void
on_getnameinfo(uv_getnameinfo_t *req, int status, const char *hostname, const char *service)
{
    fa_op *op = (fa_op *)req->data;
    fa_loop_gil_ensure(op->loop);
    if (dns_completed(op)) {
        PyObject *res = NULL;
        if (status == 0) {
            res = Py_BuildValue("(ss)", hostname, service);
        }
        else {
            fa_net_gaierror(op->loop->st, status);
        }
        dns_deliver(op, res);
        Py_XDECREF(res);
    }
    dns_release(op);
}

static int
gni_step(fa_op *op, PyObject *value)
{
    fa_loop *loop = op->loop;
    fa_state *st = loop->st;
    PyObject *sa = op->argv[GNI_SOCKADDR];
    const char *hostp;
    int port, flags, error, r;
    unsigned int flowinfo = 0, scope_id = 0;
    char pbuf[32];
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage addr;

    if (value != NULL) {
        op->result = Py_NewRef(value);
        return FA_OP_DONE;
    }
    if (fa_loop_check_closed(loop) < 0 || as_int(op->argv[GNI_FLAGS], &flags) < 0) {
        return -1;
    }
    /* socket.getnameinfo()'s checks and messages. */
    if (!PyTuple_Check(sa)) {
        PyErr_SetString(PyExc_TypeError, "getnameinfo() argument 1 must be a tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(sa, "si|II;getnameinfo(): illegal sockaddr argument", &hostp, &port,
                          &flowinfo, &scope_id)) {
        return -1;
    }
    if (flowinfo > 0xfffff) {
        PyErr_SetString(PyExc_OverflowError, "getnameinfo(): flowinfo must be 0-1048575.");
        return -1;
    }
    if (PySys_Audit("socket.getnameinfo", "(O)", sa) < 0) {
        return -1;
    }
    PyOS_snprintf(pbuf, sizeof(pbuf), "%d", port);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM; /* make numeric port happy */
    hints.ai_flags = AI_NUMERICHOST; /* numeric only: this never blocks */
    error = getaddrinfo(hostp, pbuf, &hints, &res);
    if (error) {
        return set_gaierror(st, error);
    }
    if (res->ai_next != NULL) {
        PyErr_SetString(PyExc_OSError, "sockaddr resolved to multiple addresses");
        goto error;
    }
    memset(&addr, 0, sizeof(addr));
    memcpy(&addr, res->ai_addr, res->ai_addrlen < sizeof(addr) ? res->ai_addrlen : sizeof(addr));
    switch (res->ai_family) {
    case AF_INET:
        if (PyTuple_GET_SIZE(sa) != 2) {
            PyErr_SetString(PyExc_OSError, "IPv4 sockaddr must be 2 tuple");
            goto error;
        }
        break;
    case AF_INET6: {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr;
        sin6->sin6_flowinfo = htonl(flowinfo);
        sin6->sin6_scope_id = scope_id;
        break;
    }
    }
    freeaddrinfo(res);
    res = NULL;
    if (dns_prepare(op) < 0) {
        return -1;
    }
    /* libuv copies the address into the request. */
    r = uv_getnameinfo(&loop->uv, (uv_getnameinfo_t *)op->req, on_getnameinfo,
                       (struct sockaddr *)&addr, flags);
    if (r < 0) {
        return fa_net_gaierror(st, r);
    }
    return dns_submitted(op);

error:
    if (res != NULL) {
        freeaddrinfo(res);
    }
    return -1;
}

static const fa_op_kind gni_kind = {"getnameinfo", "Loop.getnameinfo", gni_step, NULL, NULL};

static PyObject *
loop_getnameinfo(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"sockaddr", "flags"};
    PyObject *argv[2];
    if (fa_parse_args("getnameinfo", args, nargs, kwnames, names, 2, 1, 2, argv) < 0) {
        return NULL;
    }
    return (PyObject *)fa_op_new(self, &gni_kind, argv, 2);
}

/* The loop type's lookups (module.c adds them to loop.c's own methods). */
PyMethodDef fa_dns_loop_methods[] = {
    {"getaddrinfo", (PyCFunction)(void (*)(void))loop_getaddrinfo,
     METH_FASTCALL | METH_KEYWORDS,
     "getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0)\n\n"
     "Coroutine: socket.getaddrinfo() on libuv's threadpool."},
    {"getnameinfo", (PyCFunction)(void (*)(void))loop_getnameinfo,
     METH_FASTCALL | METH_KEYWORDS,
     "getnameinfo(sockaddr, flags=0)\n\nCoroutine: socket.getnameinfo() on libuv's threadpool."},
    {NULL, NULL, 0, NULL},
};
