/* flaskasync internal header: the structs and prototypes shared by the C
 * files of the _core extension.  Nothing here is public API. */
#ifndef FLASKASYNC_FA_H
#define FLASKASYNC_FA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <uv.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"   /* the layer below everything: exceptions, uv errors, fork generation */

#ifdef FA_DEBUG
#define FA_ASSERT(x) assert(x)
#else
#define FA_ASSERT(x) ((void)0)
#endif

/* ------------------------------------------------ Python versions
 * What differs between the Pythons we build for (3.11 and newer) is here,
 * in one place: the C API bridges (the rest of csrc/ is written against
 * the current API; the exception ones are with the exception helpers in
 * util.h), then the asyncio/socket behaviours that changed with a
 * release, as FA_* constants that the code tests with plain C conditions.
 * What can be asked of the running interpreter instead (a function's
 * signature, an attribute that a release added) is asked at import, in
 * module.c. */

#if PY_VERSION_HEX < 0x030C0000
/* 3.12 moved the member types into Python.h, with a Py_ prefix, and
 * deprecated structmember.h. */
#include <structmember.h>
#define Py_T_BOOL T_BOOL
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

/* Whether this thread's async generator hooks are (firstiter, finalizer),
 * read from the thread state where 3.11 and 3.12 keep them: 1 or 0.  -1
 * where that cannot be known without a call (3.13 moved the fields out of
 * the public struct). */
static inline int
fa_asyncgen_hooks_are(PyObject *firstiter, PyObject *finalizer)
{
#if PY_VERSION_HEX < 0x030D0000
    PyThreadState *ts = PyThreadState_Get();
    return ts->async_gen_firstiter == firstiter && ts->async_gen_finalizer == finalizer;
#else
    (void)firstiter;
    (void)finalizer;
    return -1;
#endif
}

/* From 3.12 on (gh-74895), socket.getaddrinfo() hands an int port that does
 * not fit a C long to getaddrinfo() as its decimal digits (which then
 * fails with gaierror, or wraps), where 3.11 raises OverflowError. */
#define FA_GAI_BIG_PORT_AS_DIGITS (PY_VERSION_HEX >= 0x030C0000)

/* From 3.12 on, asyncio.gather() handles the children that are already done
 * when it is called (finished futures, eager tasks that completed) at once,
 * after creating the outer future, instead of through done callbacks a loop
 * iteration later: a gather of finished children is finished on return. */
#define FA_GATHER_DONE_CHILDREN_AT_ONCE (PY_VERSION_HEX >= 0x030C0000)

/* From 3.13 on (gh-82500), the Unix loop's sock_sendfile() clamps the
 * block size it hands to os.sendfile(), so a count beyond a C ssize_t means
 * "the whole file"; 3.11 and 3.12 pass it as is and os.sendfile() raises
 * OverflowError. */
#define FA_SENDFILE_BIG_COUNT_OK (PY_VERSION_HEX >= 0x030D0000)

/* From 3.13 on (gh-113812), DatagramTransport.sendto() sends an empty
 * datagram (3.11 and 3.12 drop it), and the write buffer size counts 8
 * bytes of header per queued datagram, so that empty ones count too.
 * (Early 3.13 releases forget to take the 8 bytes off again when the
 * datagram goes out, so resume_writing() never comes: gh-135444, fixed in
 * later 3.13 releases and 3.14.  The fixed accounting is the one here.) */
#define FA_DGRAM_SEND_EMPTY (PY_VERSION_HEX >= 0x030D0000)
#define FA_DGRAM_HEADER_SIZE (PY_VERSION_HEX >= 0x030D0000 ? 8 : 0)

/* From 3.12 on, the weak reference list of a class whose __slots__ name
 * __weakref__ lives before the object (Py_TPFLAGS_MANAGED_WEAKREF), not in
 * a slot after the others: asyncio.Handle's layout differs (handle.c). */
#define FA_MANAGED_WEAKREF (PY_VERSION_HEX >= 0x030C0000)

typedef struct fa_state fa_state;
typedef struct fa_loop fa_loop;
typedef struct fa_handle fa_handle;
typedef struct fa_op fa_op;

/* The runner: its per-loop state (embedded in struct fa_loop), its state
 * in the module (embedded in fa_state) and its functions. */
#include "runner.h"

/* State of the network methods (op.c, dns.c, sock.c), set up by
 * fa_net_init at import time. */
typedef struct {
    PyTypeObject *OpType;
    PyObject *gaierror;            /* socket.gaierror */
    PyObject *AddressFamily;       /* socket.AddressFamily */
    PyObject *SocketKind;          /* socket.SocketKind */
    PyObject *SSLSocket;           /* ssl.SSLSocket, looked up once ssl is imported */
    PyObject *UnsupportedOperation;   /* io.UnsupportedOperation */
    PyObject *SendfileNotAvailableError;
    PyObject *k_loop;              /* ("loop",): keyword names of Future(loop=) */
    PyObject *k_gai;               /* ("family", "type", "proto", "flags") */
    PyObject *s_recv, *s_recv_into, *s_recvfrom, *s_recvfrom_into, *s_send,
        *s_sendto, *s_connect, *s_accept, *s_fileno, *s_gettimeout,
        *s_getsockopt, *s_setblocking, *s_family, *s_type, *s_proto,
        *s_getaddrinfo, *s_throw, *s_close, *s_ssl, *s_mode, *s_readinto,
        *s_run_in_executor, *s_sock_sendall, *s_data_received, *s_get_buffer,
        *s_buffer_updated, *s_connection_lost;
    PyTypeObject *StreamType;      /* stream.c: StreamTransport */
    PyObject *BufferedProtocol;    /* asyncio.BufferedProtocol */
    PyObject *set_result_unless_cancelled; /* asyncio.futures._set_result_unless_cancelled */
    PyObject *logger;              /* asyncio's logger */
    PyObject *minus_one;           /* -1, get_buffer's argument */
    PyTypeObject *DatagramType;    /* udp.c: DatagramTransport */
    PyObject *s_datagram_received, *s_error_received; /* udp.c: interned names */
    PyObject *udp_max_size;        /* udp.c: 256 KiB, recvfrom()'s argument */
    int detach_takes_transport;    /* asyncio's Server._detach(transport) (3.13+) */
} fa_net_state;

/* asgi.c's interned environ keys (k_) and scope names (s_), and the
 * constant str values it puts in environs (v_): (field, text), the one list
 * that declares, makes and clears them. */
#define FA_ASGI_NAMES(X)                                                                   \
    X(k_method, "REQUEST_METHOD") X(k_script_name, "SCRIPT_NAME")                         \
    X(k_path_info, "PATH_INFO") X(k_query_string, "QUERY_STRING")                         \
    X(k_server_name, "SERVER_NAME") X(k_server_port, "SERVER_PORT")                       \
    X(k_server_protocol, "SERVER_PROTOCOL") X(k_remote_addr, "REMOTE_ADDR")               \
    X(k_remote_port, "REMOTE_PORT") X(k_wsgi_version, "wsgi.version")                     \
    X(k_url_scheme, "wsgi.url_scheme") X(k_input, "wsgi.input")                           \
    X(k_errors, "wsgi.errors") X(k_multithread, "wsgi.multithread")                       \
    X(k_multiprocess, "wsgi.multiprocess") X(k_run_once, "wsgi.run_once")                 \
    X(k_asgi_scope, "asgi.scope") X(k_http_cookie, "HTTP_COOKIE")                         \
    X(s_root_path, "root_path") X(s_path, "path") X(s_query_string, "query_string")       \
    X(s_server, "server") X(s_client, "client") X(s_http_version, "http_version")         \
    X(s_scheme, "scheme") X(s_headers, "headers") X(s_type, "type") X(s_status, "status") \
    X(s_start_type, "http.response.start") X(s_http, "http") X(s_empty, "")               \
    X(s_method, "method") X(v_localhost, "localhost")

/* State of the ASGI conversions (asgi.c), made by fa_asgi_init at module
 * exec. */
typedef struct {
#define FA_ASGI_FIELD(field, text) PyObject *field;
    FA_ASGI_NAMES(FA_ASGI_FIELD)
#undef FA_ASGI_FIELD
    PyObject *v_version;         /* (1, 0): wsgi.version */
} fa_asgi_state;

/* Per-module state.  Every type is a heap type owned by the module; every
 * asyncio object we call into is looked up once at import time. */
struct fa_state {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyTypeObject *WatcherType;
    PyTypeObject *GatherType;
    struct fa_gather_meths *gather_meths; /* gather.c: owned here, freed by module_free */
    PyTypeObject *WaiterType;
    PyTypeObject *ScopeType;       /* supervise.c: _Scope */
    PyTypeObject *AsyncToSyncType; /* supervise.c: _AsyncToSync */
    PyTypeObject *SyncCallType;    /* supervise.c: _SyncCall */

    PyObject *FutureType;          /* asyncio.Future (C) */
    PyObject *TaskType;            /* asyncio.Task (C) */
    PyObject *CancelledError;
    PyObject *set_running_loop;    /* _asyncio._set_running_loop */
    PyObject *get_running_loop;    /* _asyncio._get_running_loop */
    PyObject *get_event_loop;      /* asyncio.get_event_loop */
    PyObject *ensure_future;       /* asyncio.ensure_future */
    PyObject *iscoroutine;         /* asyncio.iscoroutine */
    PyObject *get_asyncgen_hooks;  /* sys.get_asyncgen_hooks */
    PyObject *set_asyncgen_hooks;  /* sys.set_asyncgen_hooks */
    PyObject *format_cb_source;    /* asyncio.format_helpers._format_callback_source */
    PyObject *kw_debug;            /* ("debug",) when format_cb_source takes debug=
                                    * (3.13: a callback's arguments are shown only in
                                    * debug mode), else NULL */
    PyObject *extract_stack;       /* asyncio.format_helpers.extract_stack */
    PyObject *isawaitable;         /* inspect.isawaitable */
    PyObject *set_wakeup_fd;       /* signal.set_wakeup_fd */
    PyObject *base_create_task;    /* asyncio.BaseEventLoop.create_task (a function) */
    PyObject *current_task;        /* asyncio.current_task */
    /* asyncio.futures.future_add_to_awaited_by / future_discard_from_awaited_by,
     * the call-graph bookkeeping of 3.14's asyncio; NULL before 3.14. */
    PyObject *add_awaited_by, *discard_awaited_by;
    /* Keyword names of Task(coro, loop=, name=, context=) and of
     * create_task(coro, name=, context=). */
    PyObject *kw_loop, *kw_loop_name, *kw_loop_context, *kw_loop_name_context;
    PyObject *kw_name, *kw_context, *kw_name_context;
    unsigned long main_ident;      /* thread id of the main thread */

    fa_runner_state runner;        /* runner.c's: the process's app loop */

    /* Interned method and keyword names. */
    PyObject *s_done, *s_result, *s_exception, *s_cancel,
        *s_cancelled, *s_add_done_callback, *s_remove_done_callback,
        *s_set_result, *s_set_exception, *s_make_cancelled_error,
        *s_get_loop, *s_create_task,
        *s_log_destroy_pending, *s_loop,
        *s_asyncgen_firstiter_hook, *s_asyncgen_finalizer_hook,
        *s_log_slow_callback, *s_slow_callback_duration,
        *s_msg, *s_qualname, *s_get, *s_config, *s_log_traceback;

    fa_net_state net;
    fa_asgi_state asgi;

    /* handle.c: deallocated Handles and TimerHandles kept for reuse (they
     * have the same size), linked through next_free; untracked, holding
     * no references. */
    fa_handle *free_handles;
    int n_free_handles;
    int handles_closed;          /* module cleared: free instead of keeping */
    Py_ssize_t live_handles;     /* Handles alive, for the leak tests (GIL-protected) */
};

/* Finding the module state: one rule for each situation, one helper each.
 *
 * - A module function (it is given the module object): fa_get_state(module).
 * - A loop's code, and the code of an object that holds a loop (handle,
 *   watcher, transport, network op, run() job): the loop's L->st, which
 *   the loop took from its type when it was made.  No lookup at all: this
 *   is the hot paths' way.
 * - A slot or method of one of our types that Python cannot subclass
 *   (Handle, TimerHandle, _GatheringFuture): the object's type is the type
 *   that defines them, whose module is ours: fa_state_of_own_type(Py_TYPE(self)).
 * - Code given a type that Python code may have subclassed (the tp_new of
 *   CLoop, StreamTransport, DatagramTransport; a subclass made by a class
 *   statement has no module of its own): fa_module_of_type(type), which
 *   looks through the type's MRO for the class our module defined.  An
 *   object that needs the state later keeps the module (a strong
 *   reference, which keeps the state alive) and the state pointer. */
static inline fa_state *
fa_get_state(PyObject *module)
{
    return (fa_state *)PyModule_GetState(module);
}

static inline fa_state *
fa_state_of_own_type(PyTypeObject *tp)
{
    return (fa_state *)PyType_GetModuleState(tp);
}

/* Borrowed reference, or NULL with TypeError. */
static inline PyObject *
fa_module_of_type(PyTypeObject *tp)
{
    return PyType_GetModuleByDef(tp, fa_module_def_get());
}

/* A callback scheduled on the loop.  The C types derive from
 * asyncio.Handle / asyncio.TimerHandle, so the struct starts with those
 * classes' __slots__, where CPython lays them out (in sorted name order,
 * then __weakref__; checked at import by handle.c).  Our fields reuse the
 * slots whose meaning they share; getsets of the C types answer the slot
 * names.  TimerHandle's two slots are reserved in both types, so that the
 * C fields after them sit at the same offset in a Handle and a
 * TimerHandle. */
struct fa_handle {
    PyObject_HEAD
    PyObject *args;              /* _args: tuple, or NULL for no arguments */
    PyObject *callback;          /* _callback (None once cancelled) */
    PyObject *cancelled_slot;    /* _cancelled: unused, see `cancelled` */
    PyObject *context;           /* _context: the Context the callback runs in,
                                  * or NULL while ctx_shared stands for it */
    fa_loop *loop;               /* _loop: strong reference */
    PyObject *repr;              /* _repr: kept by cancel() in debug mode, as asyncio */
    PyObject *source_traceback;  /* _source_traceback: debug mode only */
#if !FA_MANAGED_WEAKREF
    PyObject *weakreflist;       /* __weakref__ (3.12+ keeps it before the object) */
#endif
    PyObject *timer_slots[2];    /* TimerHandle's _scheduled and _when: unused */
    /* A one-shot callback scheduled without context=: a pristine copy of
     * the scheduling context, shared by the callbacks scheduled while that
     * context did not change and never entered.  The callback runs in a
     * copy of it, made when it runs (or when get_context() asks). */
    PyObject *ctx_shared;
    double when;                 /* timer: deadline on loop.time() */
    uint64_t seq;                /* timer: tie-break, FIFO among equal deadlines */
    Py_ssize_t heap_index;       /* timer: position in the heap, -1 if absent */
    char cancelled;
    char queued;                 /* fd handle: already in the ready queue */
    char is_timer;
    char scheduled;              /* timer: currently in the heap */
    /* fd handle of a sock_* call waiting for its fd (sock.c asks for it:
     * FA_IO_SOCK_WAIT): FA_FD_WAITING, then the reason (FA_REG_CLOSED,
     * FA_REG_REPLACED) once the watcher found the fd lost and queued the
     * handle, which must still run, to fail.  0 for any other handle. */
    int fd_wait;
    fa_handle *next_free;        /* in the free list */
};

/* An fd the loop watches for user code (add_reader & co., sock_*, a
 * transport), registered in the loop's own epoll set (ioset.c), never in
 * libuv's: libuv aborts the process when its deferred epoll_ctl meets a fd
 * that was closed since, and user code may close any fd at any time. */
typedef struct fa_reg fa_reg;

/* What a registration's owner (watcher.c, transport.c) does with what the
 * set finds, instead of the set knowing its owners: each owner points its
 * registrations at its own constant table (fa_reg_init). */
typedef struct fa_reg_ops {
    /* The fd is ready: the events as epoll reports them. */
    void (*on_events)(fa_reg *r, uint32_t events);
    /* The set found the fd closed or replaced (FA_REG_CLOSED,
     * FA_REG_REPLACED) and dropped the registration. */
    void (*lost)(fa_reg *r, int reason);
    /* A closed fd met when the registration is added to the set: 1 if that
     * is the owner's fd lost (a transport's socket closed behind its back:
     * told through lost, and fa_ioset_set() returns FA_REG_CLOSED), 0 if
     * the registration is refused with -EBADF (add_reader() on a closed fd
     * raises, as asyncio's). */
    int closed_is_lost;
} fa_reg_ops;

struct fa_reg {
    const fa_reg_ops *ops;       /* the owner's callbacks */
    int fd;                      /* the fd number, as it was watched */
    uint32_t events;             /* EPOLLIN | EPOLLOUT in the set; 0: not in it */
    uint32_t slot;               /* token slot while in the set */
    unsigned char has_id;        /* dev/ino: the file the fd referred to */
    dev_t dev;
    ino_t ino;
};

/* fa_ioset_set() results besides 0 and -errno: the fd no longer refers to
 * the file it was watched for.  The registration is dropped and its owner
 * told (its ops' lost). */
#define FA_REG_CLOSED (-100001)   /* the fd was closed */
#define FA_REG_REPLACED (-100002) /* the fd number now refers to another file */

/* The reader and writer of one fd (add_reader/add_writer, sock_*). */
typedef struct {
    PyObject_HEAD
    fa_loop *loop;
    fa_handle *reader;
    fa_handle *writer;
    fa_reg reg;
    int lost;                    /* 0, or FA_REG_CLOSED / FA_REG_REPLACED */
} fa_watcher;

struct fa_loop {
    PyObject_HEAD
    fa_state *st;
    PyObject *module;            /* keeps st alive */

    uv_loop_t uv;
    uv_async_t wakeup;           /* call_soon_threadsafe and pokes */
    uv_prepare_t prepare;        /* releases the GIL before a blocking poll */
    uv_check_t check;            /* re-takes it after the poll */
    uv_poll_t timer_poll;        /* watches timer_fd */
    int timer_fd;                /* timerfd for the earliest deadline */
    double armed_when;           /* deadline timer_fd is armed for, or -1 */
    PyThreadState *released;     /* non-NULL while the GIL is released */
    int blocking;                /* this uv_run may block */
    int uv_ready;                /* uv loop initialised */

    /* Ready queue: ring buffer of owned handle references. */
    fa_handle **ready;
    Py_ssize_t ready_head, ready_len, ready_cap;

    /* Timer heap ordered by (when, seq). Owned references. */
    fa_handle **heap;
    Py_ssize_t heap_len, heap_cap;
    uint64_t timer_seq;

    PyObject *watchers;          /* dict fd -> fa_watcher */
    Py_ssize_t n_io;             /* pending work only uv_run completes (DNS, signals) */
    Py_ssize_t n_closing;        /* uv handles waiting for their close callback */
    int io_dirty;                /* an internal uv handle changed since the last uv_run */

    /* The loop's own epoll set for user fds (ioset.c), itself watched by
     * libuv like the timerfd. */
    int ioset_fd;                /* -1 until first used */
    int ioset_poll_ready;
    uv_poll_t ioset_poll;
    int ioset_junk;              /* an event came for a registration we dropped */
    fa_reg **io_slot;            /* token slot -> registration (slot 0: the sweep) */
    uint32_t *io_gen;            /* token slot -> generation */
    uint32_t io_nslot, io_capslot;
    uint32_t *io_free;           /* free slots */
    uint32_t io_nfree;
    fa_reg **io_byfd;            /* fd number -> the registration in the set */
    int io_byfd_cap;
    Py_ssize_t n_watch;          /* registrations in the set */
    int sweep_fd;                /* timerfd in the set: the periodic liveness check */
    int sweep_armed;
    uint32_t sweep_cursor;
    double sweep_interval;       /* seconds between liveness checks */
    fa_handle *failed;           /* handle whose callback raised KeyboardInterrupt/SystemExit */
    fa_handle *current;          /* debug mode: the handle running now (borrowed) */

    /* Signals: a pipe set as Python's signal wakeup fd while the loop
     * blocks in the main thread, so a signal interrupts the poll. */
    int sig_rfd, sig_wfd;
    uv_poll_t sig_poll;
    int sig_poll_ready;
    int sig_dispatch;            /* loop-level signal handlers are installed */
    PyObject *wakeup_old;        /* wakeup fd to restore, or NULL */

    fa_op *requests;             /* libuv requests in flight (dns.c), cancelled by close */
    struct fa_transport *transports; /* transport.c: live transports (linked list) */
    char *recv_buf;              /* transport.c: receive buffer, lazily allocated */

    PyObject *task_factory;
    PyObject *sup_var;           /* supervise.c: the scope ContextVar, or NULL */
    PyObject *sup_hook;          /* supervise.c: record(task, scope, context) */
    PyObject *last_ctx;          /* pristine copy of the context the last one-shot
                                  * callback was scheduled in (see fa_handle) */
    PyObject *weakreflist;
    PyObject *dict;

    int closed;
    int stopping;
    int debug;
    unsigned long thread_id;     /* thread running the loop, 0 if none */
    PyObject *saved_hooks;       /* asyncgen hooks to restore after running */
    PyObject *hook_first;        /* cached bound _asyncgen_firstiter_hook */
    PyObject *hook_fin;          /* cached bound _asyncgen_finalizer_hook */

    unsigned long fork_gen;      /* fork generation the loop was created in */

    fa_runner runner;            /* runner.c's state (runner.h): read it through the
                                  * inline functions below, write it only in runner.c */
};

/* The loop's functions that only read its fields, inline: the fd set
 * (ioset.c), below the loop's own file, calls them without naming it. */

/* Was the loop made before a fork() that led to this process?  Then its
 * epoll sets, eventfd and timerfd belong to the parent: never touch them. */
static inline int
fa_loop_forked(fa_loop *self)
{
    return fa_forked(self->fork_gen);
}

/* Take the GIL back if the loop gave it up before a blocking poll (the GIL
 * protocol is written in loop.c, "GIL handling"). */
static inline void
fa_loop_gil_ensure(fa_loop *self)
{
    if (self->released != NULL) {
        PyThreadState *ts = self->released;
        self->released = NULL;
        PyEval_RestoreThread(ts);
    }
}

/* Wake whoever services an app loop that nobody is driving. */
static inline void
fa_loop_poke(fa_loop *self)
{
    if (self->uv_ready && !fa_loop_forked(self)) {
        uv_async_send(&self->wakeup);
    }
}

/* handle.c */
int fa_handle_init_types(PyObject *module, fa_state *st);
void fa_handle_clear_free_list(fa_state *st);
PyObject *fa_format_callback(fa_handle *h);
fa_handle *fa_handle_new(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
                         PyObject *args, PyObject *context);
fa_handle *fa_handle_new_oneshot(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
                                 PyObject *args, PyObject *context);
int fa_handle_run(fa_handle *h);
PyObject *fa_context_vars(PyObject *ctx);

/* loop.c */
extern PyMethodDef fa_loop_methods[];   /* the loop's own, null-terminated */
PyTypeObject *fa_loop_type_new(PyObject *module, PyMethodDef *methods);

/* What the layers above the loop do when it closes or creates a task:
 * loop.c calls them through this table, which module.c fills at exec
 * (fa_loop_set_hooks, before it makes the loop type), since loop.c cannot
 * name them.  Each list runs in its order, up to its first NULL:
 *   close():  closing, then `closed` is set and the ready queue and timers
 *             are dropped, then release, then cancel (loop.c then waits
 *             for the libuv requests still in flight);
 *   deallocation: closing, then, for a loop not closed yet (and not
 *             forked), `closed` is set and release runs; not cancel (a
 *             request in flight holds a reference to its loop). */
#define FA_LOOP_HOOKS_MAX 4
typedef void (*fa_loop_hook)(fa_loop *self);
typedef struct fa_loop_hooks {
    fa_loop_hook closing[FA_LOOP_HOOKS_MAX];  /* before the loop is marked closed */
    fa_loop_hook release[FA_LOOP_HOOKS_MAX];  /* let go of the fds and their callbacks */
    fa_loop_hook cancel[FA_LOOP_HOOKS_MAX];   /* close() only: cancel libuv requests */
    /* create_task() with supervision on (loop->sup_var set): record the
     * task; -1 with an exception. */
    int (*supervise)(fa_loop *self, PyObject *task, PyObject *context);
} fa_loop_hooks;
void fa_loop_set_hooks(const fa_loop_hooks *hooks);

int fa_loop_push_ready(fa_loop *self, fa_handle *h);
fa_handle *fa_loop_call_soon(fa_loop *self, PyObject *callback, PyObject *args,
                             PyObject *context);
int fa_loop_run_ready(fa_loop *self);
int fa_loop_collect(fa_loop *self, int may_block);
int fa_loop_enter(fa_loop *self);
void fa_loop_leave(fa_loop *self);
void fa_loop_arm_timer(fa_loop *self);
PyObject *fa_loop_create_task(fa_loop *self, PyObject *coro, PyObject *name,
                              PyObject *context);
PyObject *fa_loop_create_own_task(fa_loop *self, PyObject *coro, PyObject *name,
                                  PyObject *context);
double fa_now(void);
void fa_timer_remove(fa_loop *self, fa_handle *h);
int fa_loop_check_closed(fa_loop *self);
int fa_loop_failure_is_task_outcome(fa_loop *self);

/* watcher.c */
extern PyType_Spec fa_watcher_spec;
extern PyMethodDef fa_watcher_loop_methods[];   /* add_reader & co. */
/* events: UV_READABLE or UV_WRITABLE, plus FA_IO_UNCHECKED for asyncio's
 * internal _add_reader & co., which skip the "fd used by a transport" check,
 * and, for fa_loop_add_io, FA_IO_SOCK_WAIT for a sock_* call's wait (the
 * handle's fd_wait). */
#define FA_IO_UNCHECKED 0x100
#define FA_IO_SOCK_WAIT 0x200
#define FA_FD_WAITING 1
PyObject *fa_loop_add_io(fa_loop *self, PyObject *args, int events);
PyObject *fa_loop_remove_io(fa_loop *self, PyObject *fdobj, int events);
void fa_loop_close_watchers(fa_loop *self);

/* ioset.c: the loop's own epoll set for user fds. */
int fa_ioset_set(fa_loop *self, fa_reg *r, uint32_t events);
int fa_ioset_probe(fa_loop *self, fa_reg *r);
int fa_ioset_raise(fa_loop *self, fa_reg *r, int rc);
PyObject *fa_ioset_lost_error(int fd, int reason);
void fa_reg_init(fa_reg *r, int fd, const fa_reg_ops *ops, int identify);
int fa_reg_same_file(fa_reg *r);
void fa_ioset_harvest(fa_loop *self);
void fa_ioset_free(fa_loop *self);
int fa_ioset_init(fa_loop *self);
PyObject *fa_ioset_watched(fa_loop *self);
int fa_ioset_set_interval(fa_loop *self, double seconds);

/* What an owner watches for the sweep outside the set (transports whose
 * watch is stopped: reading paused, nothing to write), checked after each
 * batch of the set's registrations.  One for the process, registered by
 * module.c at exec (transport.c's fa_transport_sweeper), as the loop's
 * hooks are. */
typedef struct fa_ioset_sweeper {
    int (*any)(fa_loop *self);     /* anything to check: keeps the sweep going */
    void (*check)(fa_loop *self);  /* check it, telling owners of a lost fd */
} fa_ioset_sweeper;
void fa_ioset_set_sweeper(const fa_ioset_sweeper *sweeper);

/* runner.h: the inline entry points into the runner's state in a loop.
 * They read fa_loop, so they are here rather than in runner.h. */

/* Is L the app loop with nobody driving it (the baton free)?  Then only its
 * home thread (runner.c) will service it, and something that gives it work
 * from outside a driver (a callback, a timer, an fd to register) must wake
 * that thread.  seq_cst like every atomic of the runner.  GIL held.
 * Inline: call_soon pays for it on every call. */
static inline int
fa_app_idle(fa_loop *L)
{
    return L->runner.is_app && atomic_load(&L->runner.baton) == 0;
}

/* Is L the app loop of flaskasync.run()?  It is never run with
 * run_forever(), and the threads that drive it keep its asyncgen hooks. */
static inline int
fa_app_is(fa_loop *L)
{
    return L->runner.is_app;
}

/* Is L a server's running loop adopted as the app loop (ASGI mode)? */
static inline int
fa_app_adopted(fa_loop *L)
{
    return L->runner.adopted;
}

/* The one "work was added to the app loop: if it is idle, poke its home
 * thread" entry point.  No-op for other loops and while a driver holds the
 * baton (the runner's baton release pokes for what it leaves behind). */
static inline void
fa_app_wake(fa_loop *L)
{
    if (fa_app_idle(L)) {
        fa_loop_poke(L);
    }
}

/* asgi.c: ASGI mode's per-request conversions */
int fa_asgi_init(fa_state *st);
void fa_asgi_clear(fa_state *st);
PyObject *fa_asgi_environ(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fa_asgi_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

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
int fa_net_init(PyObject *module, fa_state *st);
int fa_net_traverse(fa_state *st, visitproc visit, void *arg);
void fa_net_clear(fa_state *st);
fa_op *fa_op_new(fa_loop *loop, const fa_op_kind *kind, PyObject *const *argv,
                 Py_ssize_t argc);
PyObject *fa_op_new_future(fa_op *op);
int fa_op_await(fa_op *op, PyObject *awaitable);
int fa_op_await_future(fa_op *op);
int fa_op_call_exception_handler(fa_loop *loop, const char *message, PyObject *exc);

/* dns.c */
extern PyMethodDef fa_dns_loop_methods[];   /* getaddrinfo, getnameinfo */
void fa_dns_cancel_all(fa_loop *self);
int fa_net_gaierror(fa_state *st, int status);

/* sock.c */
extern PyMethodDef fa_sock_loop_methods[];   /* sock_recv & co. */

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
PyObject *fa_transport_set_write_buffer_limits(PyObject *self, PyObject *args, PyObject *kwds);
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
     METH_VARARGS | METH_KEYWORDS, "get_extra_info(name, default=None)"},                     \
    {"get_protocol", fa_transport_get_protocol, METH_NOARGS, NULL},                           \
    {"get_write_buffer_size", fa_transport_get_write_buffer_size, METH_NOARGS, NULL},         \
    {"get_write_buffer_limits", fa_transport_get_write_buffer_limits, METH_NOARGS, NULL},     \
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))fa_transport_set_write_buffer_limits, \
     METH_VARARGS | METH_KEYWORDS, "set_write_buffer_limits(high=None, low=None)"},           \
    {"_maybe_pause_protocol", fa_transport_maybe_pause_method, METH_NOARGS, NULL},            \
    {"_maybe_resume_protocol", fa_transport_maybe_resume_method, METH_NOARGS, NULL},          \
    {"_force_close", fa_transport_force_close_method, METH_O, NULL},                          \
    {"_fatal_error", fa_transport_fatal_error_method, METH_VARARGS, NULL}

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
PyObject *fa_transport_fatal_error_method(PyObject *self, PyObject *args);
int fa_transport_parse_limits(PyObject *high, PyObject *low, Py_ssize_t *phigh, Py_ssize_t *plow);
PyTypeObject *fa_transport_make_type(PyObject *module, PyType_Spec *spec,
                                     const char *const *bases_names, int nbases);
int fa_transport_start(fa_transport *t, const char *write_ready, int start_reading,
                       PyObject *waiter);
PyObject *fa_transport_get_extra_info(PyObject *self, PyObject *args, PyObject *kwds);
int fa_transport_traverse_head(fa_transport *t, visitproc visit, void *arg);
void fa_transport_clear_head(fa_transport *t);
void fa_transport_finalize(PyObject *self);
int fa_transport_dealloc_start(fa_transport *t, PyObject *weakreflist);
void fa_transport_dealloc_end(fa_transport *t);

/* stream.c: the stream transport type (made at module exec) */
int fa_stream_init(PyObject *module, fa_state *st);
int fa_stream_traverse(fa_state *st, visitproc visit, void *arg);
void fa_stream_clear(fa_state *st);

/* udp.c */
int fa_udp_init(PyObject *module, fa_state *st);
int fa_udp_traverse(fa_state *st, visitproc visit, void *arg);
void fa_udp_clear(fa_state *st);

/* supervise.c: a task scope (the C part of flaskasync._tasks.Scope). */
typedef struct {
    PyObject_HEAD
    PyObject *owner;
    PyObject *what;
    PyObject *children;          /* list, or NULL before the first */
    PyObject *driver_context;    /* or NULL */
    int open;
    int cancel_leftovers;
} fa_scope;

int fa_supervise_init_types(PyObject *module, fa_state *st);
int fa_loop_supervise(fa_loop *loop, PyObject *task, PyObject *context);
extern PyMethodDef fa_supervise_loop_methods[];   /* _set_supervision */

/* gather.c */
int fa_gather_init_type(PyObject *module, fa_state *st);
void fa_gather_free_meths(fa_state *st);
PyObject *fa_gather(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames);

#endif
