/* flaskasync internal: the awaitable returned by the network methods
 * (op.c), a coroutine written in C, and what each method (dns.c, sock.c)
 * gives it. */
#ifndef FLASKASYNC_OP_H
#define FLASKASYNC_OP_H

#include "fa.h"

#include <uv.h>

typedef struct fa_loop fa_loop;
typedef struct fa_handle fa_handle;
typedef struct fa_op fa_op;

/* op.c: the awaitable returned by the network methods. */
typedef int (*fa_op_step_fn)(fa_op *op, PyObject *value);
typedef int (*fa_op_ready_fn)(fa_op *op);
typedef void (*fa_op_finish_fn)(fa_op *op);

typedef struct {
    const char *name;            /* method name, e.g. "sock_recv" */
    const char *qualname;        /* "Loop.sock_recv" */
    /* Run the operation: value is NULL when it starts, else the result of
     * the awaitable it waited for.  Returns FA_OP_DONE with op->result
     * set, FA_OP_AWAIT with op->inner set, or -1 with an exception. */
    fa_op_step_fn step;
    /* sock_*: retry the syscall once the fd is ready.  Returns 1 with
     * op->result set, 0 if it would still block, -1 with an exception. */
    fa_op_ready_fn ready;
    /* Called once when the coroutine returns or raises, with any exception
     * kept aside: the operation's `finally`.  May be NULL. */
    fa_op_finish_fn finish;
} fa_op_kind;

#define FA_OP_DONE 0
#define FA_OP_AWAIT 1
#define FA_OP_MAXARGS 6

/* One call of a network method.  It is a coroutine written in C: nothing
 * runs until it is awaited (or wrapped in a Task), as with asyncio's
 * `async def` methods, and it delegates to the futures it waits for. */
struct fa_op {
    PyObject_HEAD
    fa_loop *loop;
    const fa_op_kind *kind;
    PyObject *argv[FA_OP_MAXARGS]; /* the method's arguments, per kind */
    PyObject *inner;             /* iterator of the awaitable being awaited */
    PyObject *result;            /* return value once FA_OP_DONE */
    PyObject *fut;               /* future of the pending wait or request */
    int state;                   /* FA_OP_NEW, FA_OP_RUNNING, FA_OP_FINISHED */
    int executing;               /* inside send/throw: no re-entry */
    int phase;                   /* kind-specific position in the operation */

    /* sock.c: waiting for the fd to become ready. */
    fa_handle *handle;           /* reader/writer Handle registered for fd */
    int fd;
    int events;                  /* UV_READABLE or UV_WRITABLE */
    Py_buffer view;              /* sock_sendall: the data being sent */
    int has_view;
    Py_ssize_t pos;              /* sock_sendall: bytes sent; sendfile: total */
    long long offset;            /* sock_sendfile: file offset */
    long long count;             /* sock_sendfile: bytes to send, 0 for all */
    long long blocksize;         /* sock_sendfile: bytes per sendfile() or read */
    Py_ssize_t chunk;            /* sock_sendfile: bytes read, being sent */
    int in_fd;                   /* sock_sendfile: the file's fd */
    int filepos_done;            /* sock_sendfile: file position updated */

    /* dns.c: a libuv request in the threadpool (malloc'd: a
     * uv_getnameinfo_t is 1.3 KB, too big to carry in every sock op). */
    uv_req_t *req;
    int in_flight;               /* the request's callback is still to come */
    fa_op *prev, *next;          /* loop->requests, while in flight */
    PyObject *weakreflist;
};

#define FA_OP_NEW 0
#define FA_OP_RUNNING 1
#define FA_OP_FINISHED 2

extern PyType_Spec fa_op_spec;

fa_op *fa_op_new(fa_loop *loop, const fa_op_kind *kind, PyObject *const *argv,
                 Py_ssize_t argc);
PyObject *fa_op_new_future(fa_op *op);
int fa_op_await(fa_op *op, PyObject *awaitable);
int fa_op_await_future(fa_op *op);
int fa_op_call_exception_handler(fa_loop *loop, const char *message, PyObject *exc);

#endif /* FLASKASYNC_OP_H */
