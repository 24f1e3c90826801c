/* flaskasync internal: what the C transports (stream.c, udp.c) share
 * (transport.c). */
#ifndef FLASKASYNC_TRANSPORT_H
#define FLASKASYNC_TRANSPORT_H

#include "fa.h"
#include "ioset.h"    /* fa_reg, embedded; fa_ioset_sweeper */

typedef struct fa_loop fa_loop;
typedef struct fa_handle fa_handle;

/* transport.c: what the C transports share.  Every transport struct
 * starts with FA_TRANSPORT_HEAD.  The transports derive from asyncio's
 * _FlowControlMixin, as the selector loop's do, so the head reproduces the
 * slots of its Python bases (checked at import by fa_transport_make_type):
 * BaseTransport's `_extra` is our extra dict; _FlowControlMixin's four
 * slots are reserved and stay NULL, because getsets of the C types (which
 * come first in the MRO) answer `_loop`, `_protocol_paused`, `_high_water`
 * and `_low_water` from the C state. */
#define FA_TRANSPORT_HEAD                                                             \
    PyObject_HEAD                                                                     \
    PyObject *extra;             /* dict: BaseTransport's _extra slot */              \
    PyObject *fcm_reserved[4];   /* _FlowControlMixin's slots, unused */              \
    fa_loop *loop;                                                                    \
    PyObject *protocol;          /* NULL once connection_lost ran */                  \
    PyObject *sock;              /* socket or pipe object; NULL once closed */        \
    fa_handle *read_h;           /* Handle calling the read-ready method */           \
    fa_handle *write_h;          /* Handle calling the write-ready method */          \
    fa_reg reg;                  /* the fd's registration in the loop's set */        \
    int fd;                      /* -1 once closed (or lost) */                       \
    int events;                  /* UV_READABLE | UV_WRITABLE watched now */          \
    int fd_lost;                 /* FA_REG_CLOSED / FA_REG_REPLACED: fd gone behind our back */ \
    int self_ref;                /* holds a reference to itself while watching */     \
    int fd_lent;                 /* loop.sendfile() lent the fd to sock_sendfile */   \
    struct fa_transport *prev, *next; /* loop->transports, until the fd is released */ \
    const struct fa_transport_ops *ops; /* what each kind does its own way */          \
    int closing;                 /* asyncio's _closing */                              \
    int paused;                  /* pause_reading() */                                 \
    int started;                 /* reading started after connection_made */           \
    int protocol_paused;         /* pause_writing() called */                          \
    int conn_lost;               /* asyncio's _conn_lost counter */                    \
    int lost_scheduled;          /* _call_connection_lost is scheduled (or ran) */     \
    Py_ssize_t wsize;            /* bytes waiting to be sent */                        \
    Py_ssize_t high, low;        /* write-buffer limits */

typedef struct fa_transport {
    FA_TRANSPORT_HEAD
} fa_transport;

/* Where stream and datagram transports differ in the life cycle that
 * transport.c runs for both (asyncio's _SelectorTransport and the
 * methods its subclasses override). */
typedef struct fa_transport_ops {
    /* Watch the fd for what the transport waits for now
     * (fa_transport_watch).  Returns -1 with an exception. */
    int (*update_poll)(fa_transport *t);
    /* _force_close(exc): fa_transport_force_close, or the kind's own. */
    int (*force_close)(fa_transport *t, PyObject *exc);
    /* _fatal_error() got an OSError: 1 to report it to the exception
     * handler too, else 0 (after logging it, if the kind does). */
    int (*os_error_reported)(fa_transport *t, PyObject *exc, const char *message);
    /* Drop the data waiting to be sent, and stop waiting to send it. */
    void (*clear_buffer)(fa_transport *t);
} fa_transport_ops;

#define FA_DEFAULT_HIGH_WATER (64 * 1024)   /* asyncio's default high-water mark */
#define FA_RECV_BUF_SIZE (256 * 1024)       /* asyncio's max_size for one read */

void fa_transport_list_add(fa_transport *t);
void fa_transport_list_remove(fa_transport *t);
int fa_transport_check_fd(fa_loop *loop, int fd);
void fa_transport_unwatch(fa_transport *t);
void fa_transport_close_all(fa_loop *loop);
extern const fa_ioset_sweeper fa_transport_sweeper;   /* module.c registers it */
char *fa_transport_recv_buf(fa_loop *loop);
int fa_transport_watch(fa_transport *t, int want);
int fa_transport_live_fd(fa_transport *t);
int fa_transport_release_fd(fa_transport *t);
void fa_transport_report(fa_transport *t, const char *message, PyObject *exc);
void fa_transport_report_current(fa_transport *t);
void fa_transport_log_warning(fa_transport *t, const char *message);
void fa_transport_update_poll_or_report(fa_transport *t);
int fa_transport_schedule_lost(fa_transport *t, PyObject *exc);
int fa_transport_force_close(fa_transport *t, PyObject *exc);
int fa_transport_fatal_error(fa_transport *t, PyObject *exc, const char *message);
PyObject *fa_transport_abort(PyObject *self, PyObject *unused);
int fa_transport_call_protocol(fa_transport *t, const char *method, const char *message);

/* _FlowControlMixin's _maybe_pause_protocol / _maybe_resume_protocol:
 * protocol.pause_writing() once the unsent data passes the high-water
 * mark, resume_writing() once it falls to the low one.  Returns -1 only
 * for KeyboardInterrupt/SystemExit. */
static inline int
fa_transport_maybe_pause_protocol(fa_transport *t)
{
    if (t->wsize <= t->high || t->protocol_paused || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 1;
    return fa_transport_call_protocol(t, "pause_writing", "protocol.pause_writing() failed");
}

static inline int
fa_transport_maybe_resume_protocol(fa_transport *t)
{
    if (!t->protocol_paused || t->wsize > t->low || t->protocol == NULL) {
        return 0;
    }
    t->protocol_paused = 0;
    return fa_transport_call_protocol(t, "resume_writing", "protocol.resume_writing() failed");
}

/* The methods and attributes both kinds have, for their type's tables. */
PyObject *fa_transport_is_closing(PyObject *self, PyObject *unused);
PyObject *fa_transport_get_protocol(PyObject *self, PyObject *unused);
PyObject *fa_transport_get_write_buffer_size(PyObject *self, PyObject *unused);
PyObject *fa_transport_get_write_buffer_limits(PyObject *self, PyObject *unused);
PyObject *fa_transport_set_write_buffer_limits(PyObject *self, PyObject *const *args,
                                               Py_ssize_t nargs, PyObject *kwnames);
PyObject *fa_transport_maybe_pause_method(PyObject *self, PyObject *unused);
PyObject *fa_transport_maybe_resume_method(PyObject *self, PyObject *unused);
PyObject *fa_transport_get_high_water(PyObject *self, void *closure);
PyObject *fa_transport_get_low_water(PyObject *self, void *closure);
PyObject *fa_transport_get_protocol_paused(PyObject *self, void *closure);
PyObject *fa_transport_get_closing_attr(PyObject *self, void *closure);
PyObject *fa_transport_get_sock_attr(PyObject *self, void *closure);

#define FA_TRANSPORT_METHODS                                                                  \
    {"abort", fa_transport_abort, METH_NOARGS,                                                \
     "Close now, dropping the unsent data; connection_lost(None) follows."},                  \
    {"is_closing", fa_transport_is_closing, METH_NOARGS, NULL},                               \
    {"get_extra_info", (PyCFunction)(void (*)(void))fa_transport_get_extra_info,              \
     METH_FASTCALL | METH_KEYWORDS, "get_extra_info(name, default=None)"},                    \
    {"get_protocol", fa_transport_get_protocol, METH_NOARGS, NULL},                           \
    {"get_write_buffer_size", fa_transport_get_write_buffer_size, METH_NOARGS, NULL},         \
    {"get_write_buffer_limits", fa_transport_get_write_buffer_limits, METH_NOARGS, NULL},     \
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))fa_transport_set_write_buffer_limits, \
     METH_FASTCALL | METH_KEYWORDS, "set_write_buffer_limits(high=None, low=None)"},          \
    {"_maybe_pause_protocol", fa_transport_maybe_pause_method, METH_NOARGS, NULL},            \
    {"_maybe_resume_protocol", fa_transport_maybe_resume_method, METH_NOARGS, NULL},          \
    {"_force_close", fa_transport_force_close_method, METH_O, NULL},                          \
    {"_fatal_error", (PyCFunction)(void (*)(void))fa_transport_fatal_error_method,          \
     METH_FASTCALL, "_fatal_error(exc, message='Fatal error on transport', /)"}

#define FA_TRANSPORT_GETSETS                                                                  \
    {"_high_water", fa_transport_get_high_water, NULL, "the write buffer's high-water mark",  \
     NULL},                                                                                   \
    {"_low_water", fa_transport_get_low_water, NULL, "the write buffer's low-water mark",     \
     NULL},                                                                                   \
    {"_protocol_paused", fa_transport_get_protocol_paused, NULL,                              \
     "pause_writing() was called and resume_writing() not yet", NULL},                        \
    {"_closing", fa_transport_get_closing_attr, NULL, NULL, NULL},                            \
    {"_sock", fa_transport_get_sock_attr, NULL, "the socket or pipe (None once closed)", NULL}
PyObject *fa_transport_force_close_method(PyObject *self, PyObject *exc);
PyObject *fa_transport_fatal_error_method(PyObject *self, PyObject *const *args,
                                          Py_ssize_t nargs);
int fa_transport_parse_limits(PyObject *high, PyObject *low, Py_ssize_t *phigh, Py_ssize_t *plow);
PyTypeObject *fa_transport_make_type(PyObject *module, PyType_Spec *spec,
                                     const char *const *bases_names, int nbases);
int fa_transport_start(fa_transport *t, const char *write_ready, int start_reading,
                       PyObject *waiter);
PyObject *fa_transport_get_extra_info(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                      PyObject *kwnames);
int fa_transport_traverse_head(fa_transport *t, visitproc visit, void *arg);
void fa_transport_clear_head(fa_transport *t);
void fa_transport_finalize(PyObject *self);
int fa_transport_dealloc_start(fa_transport *t, PyObject *weakreflist);
void fa_transport_dealloc_end(fa_transport *t);

#endif /* FLASKASYNC_TRANSPORT_H */
