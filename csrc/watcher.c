/* fd watching: add_reader/add_writer/remove_reader/remove_writer.  One
 * watcher per fd holds its reader and writer Handles; the fd is registered
 * in the loop's own epoll set (ioset.c) until both are removed, and each
 * time it is ready its Handles are appended to the ready queue, as
 * asyncio's selector loop does.
 *
 * A fd closed while watched (or closed and reused, or dup2()'d over) is
 * found by the set (watcher_lost): its watch is dropped.  A plain
 * callback then simply never runs again, as with asyncio's loop, and
 * remove_reader() still finds it; a sock_* call waiting on the fd ends
 * with an OSError where asyncio's would wait forever. */
#include "watcher.h"
#include "handle.h"
#include "ioset.h"
#include "loop.h"
#include "state.h"
#include "transport.h"

#include <sys/epoll.h>

static void
push(fa_loop *loop, fa_handle *h)
{
    if (h != NULL && !h->cancelled && !h->queued && fa_loop_push_ready(loop, h) == 0) {
        h->queued = 1;
    }
}

/* The fd is ready.  As selectors.EpollSelector reports it: anything but
 * EPOLLIN (EPOLLOUT, an error or a hang-up) makes it writable, anything
 * but EPOLLOUT readable, for the sides that are watched.  Level-triggered,
 * and uv_run may report the fd more than once before the ready queue runs:
 * each Handle is queued once, as a selector loop reports the fd once per
 * iteration. */
static inline fa_watcher *
watcher_of(fa_reg *r)
{
    return (fa_watcher *)((char *)r - offsetof(fa_watcher, reg));
}

static void
watcher_on_events(fa_reg *r, uint32_t events)
{
    fa_watcher *w = watcher_of(r);
    if (events & ~(uint32_t)EPOLLOUT) {
        push(w->loop, w->reader);
    }
    if (events & ~(uint32_t)EPOLLIN) {
        push(w->loop, w->writer);
    }
}

/* The set found the fd closed or replaced and dropped its registration.
 * A sock_* call waiting on it is woken to fail; a plain callback is left
 * registered but never runs again (asyncio's loop does not run it either:
 * epoll forgets a closed fd). */
static void
watcher_lost(fa_reg *r, int reason)
{
    fa_watcher *w = watcher_of(r);
    fa_handle *sides[2] = {w->reader, w->writer};
    w->lost = reason;
    for (int i = 0; i < 2; i++) {
        if (sides[i] != NULL && sides[i]->fd_wait) {
            sides[i]->fd_wait = reason;
            push(w->loop, sides[i]);
        }
    }
}

/* What the set tells a watcher.  A closed fd met when the watch is added
 * is refused: add_reader() raises, as asyncio's. */
static const fa_reg_ops watcher_reg_ops = {
    .on_events = watcher_on_events,
    .lost = watcher_lost,
    .closed_is_lost = 0,
};

/* Bring the registration in line with the Handles.  Returns 0, or a
 * fa_ioset_set() error code (no exception set). */
static int
watcher_update(fa_watcher *w)
{
    uint32_t events = 0;
    if (w->lost) {
        return w->lost;
    }
    if (w->reader != NULL) {
        events |= EPOLLIN;
    }
    if (w->writer != NULL) {
        events |= EPOLLOUT;
    }
    return fa_ioset_set(w->loop, &w->reg, events);
}

static void
watcher_close(fa_watcher *w)
{
    (void)fa_ioset_set(w->loop, &w->reg, 0);
}

/* fd from an int or an object with fileno(), with the errors asyncio's
 * selector loop gives (selectors._fileobj_to_fd). */
static int
to_fd(PyObject *fileobj)
{
    long fd;
    if (PyLong_Check(fileobj)) {
        fd = PyLong_AsLong(fileobj);
        if (fd == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    else {
        PyObject *r = PyObject_CallMethod(fileobj, "fileno", NULL);
        if (r == NULL || !PyLong_Check(r) ||
            ((fd = PyLong_AsLong(r)) == -1 && PyErr_Occurred())) {
            Py_XDECREF(r);
            if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_AttributeError) &&
                !PyErr_ExceptionMatches(PyExc_TypeError) &&
                !PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
            return -1;
        }
        Py_DECREF(r);
    }
    if (fd < 0 || fd > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -1;
    }
    return (int)fd;
}

static void
cancel_handle(fa_handle *h)
{
    if (h != NULL && !h->cancelled) {
        PyObject *r = PyObject_CallMethod((PyObject *)h, "cancel", NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)h);
        }
        Py_XDECREF(r);
    }
}

static fa_watcher *
watcher_new(fa_loop *self, int fd)
{
    fa_watcher *w = PyObject_GC_New(fa_watcher, self->st->WatcherType);
    if (w == NULL) {
        return NULL;
    }
    w->loop = (fa_loop *)Py_NewRef(self);
    w->reader = w->writer = NULL;
    w->lost = 0;
    fa_reg_init(&w->reg, fd, &watcher_reg_ops, 0);
    PyObject_GC_Track(w);
    return w;
}

/* Drop a watcher from the loop: its Handles are cancelled and its fd no
 * longer watched.  The caller holds a reference to w. */
static void
watcher_discard(fa_loop *self, fa_watcher *w, PyObject *key)
{
    fa_handle *sides[2] = {w->reader, w->writer};
    w->reader = w->writer = NULL;
    for (int i = 0; i < 2; i++) {
        /* A sock_* call whose fd was lost must still run its Handle, to
         * fail with OSError instead of waiting forever. */
        if (sides[i] != NULL && !(w->lost && sides[i]->fd_wait)) {
            cancel_handle(sides[i]);
        }
        Py_XDECREF(sides[i]);
    }
    watcher_close(w);
    if (PyDict_GetItemWithError(self->watchers, key) == (PyObject *)w) {
        if (PyDict_DelItem(self->watchers, key) < 0) {
            PyErr_Clear();
        }
    }
    else {
        PyErr_Clear();
    }
}

PyObject *
fa_loop_add_io(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, int events)
{
    int check = !(events & FA_IO_UNCHECKED);
    int sock_wait = events & FA_IO_SOCK_WAIT;
    events &= ~(FA_IO_UNCHECKED | FA_IO_SOCK_WAIT);
    const char *method = events == UV_READABLE ? "add_reader" : "add_writer";
    PyObject *fdobj, *cb, *cbargs = NULL, *key = NULL;
    fa_watcher *w = NULL;
    fa_handle *h = NULL, *old;
    int fd, rc;

    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %zd)", method,
                     nargs == 0 ? "fd" : "callback", nargs + 1);
        return NULL;
    }
    fdobj = args[0];
    cb = args[1];
    fd = to_fd(fdobj);
    if (fd < 0) {
        return NULL;
    }
    if (fa_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError, "a callable object was expected by %s(), got %R",
                     method, cb);
        return NULL;
    }
    cbargs = PyTuple_New(nargs - 2);
    if (cbargs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 2; i < nargs; i++) {
        PyTuple_SET_ITEM(cbargs, i - 2, Py_NewRef(args[i]));
    }
    h = fa_handle_new(self, self->st->HandleType, cb, cbargs, NULL);
    Py_CLEAR(cbargs);
    if (h == NULL) {
        return NULL;
    }
    if (sock_wait) {
        h->fd_wait = FA_FD_WAITING;
    }
    key = PyLong_FromLong(fd);
    if (key == NULL) {
        goto error;
    }
    w = (fa_watcher *)PyDict_GetItemWithError(self->watchers, key);
    if (w == NULL && PyErr_Occurred()) {
        goto error;
    }
    Py_XINCREF(w);
    if (w != NULL && !w->lost) {
        /* Is the watch still on the file this fd refers to?  (Closed and
         * reopened under the same number, the fd is another file now.) */
        (void)fa_ioset_probe(self, &w->reg);
    }
    if (w != NULL && w->lost) {
        /* The fd was closed since: its old Handles watched a file that is
         * gone.  Start afresh for the file the number refers to now. */
        watcher_discard(self, w, key);
        Py_CLEAR(w);
    }
    if (w == NULL) {
        if (check && fa_transport_check_fd(self, fd) < 0) {
            goto error;
        }
        w = watcher_new(self, fd);
        if (w == NULL || PyDict_SetItem(self->watchers, key, (PyObject *)w) < 0) {
            goto error;
        }
    }
    if (events == UV_READABLE) {
        old = w->reader;
        w->reader = h;
    }
    else {
        old = w->writer;
        w->writer = h;
    }
    h = NULL;
    rc = watcher_update(w);
    if (rc < 0) {
        /* As asyncio's selector: a registration that fails is undone and
         * raises (OSError EBADF for a closed fd, PermissionError for a
         * regular file), and nothing is left behind. */
        PyObject *exc;
        fa_ioset_raise(self, &w->reg, rc == FA_REG_CLOSED ? -EBADF : rc);
        exc = fa_fetch_exception();
        if (old != NULL) {
            cancel_handle(old);
            Py_DECREF(old);
        }
        watcher_discard(self, w, key);
        fa_restore_exception(exc);
        goto error;
    }
    if (old != NULL) {
        cancel_handle(old);
        Py_DECREF(old);
    }
    Py_DECREF(w);
    Py_DECREF(key);
    Py_RETURN_NONE;

error:
    Py_XDECREF(h);
    Py_XDECREF((PyObject *)w);
    Py_XDECREF(key);
    return NULL;
}

PyObject *
fa_loop_remove_io(fa_loop *self, PyObject *fdobj, int events)
{
    PyObject *key;
    fa_watcher *w;
    fa_handle *h;
    int check = !(events & FA_IO_UNCHECKED);
    int fd = to_fd(fdobj);
    events &= ~FA_IO_UNCHECKED;
    if (fd < 0) {
        return NULL;
    }
    if (self->closed) {
        Py_RETURN_FALSE;
    }
    if (check && fa_transport_check_fd(self, fd) < 0) {
        return NULL; /* asyncio: RuntimeError naming the transport */
    }
    key = PyLong_FromLong(fd);
    if (key == NULL) {
        return NULL;
    }
    w = (fa_watcher *)PyDict_GetItemWithError(self->watchers, key);
    if (w == NULL) {
        Py_DECREF(key);
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    Py_INCREF(w);
    if (events == UV_READABLE) {
        h = w->reader;
        w->reader = NULL;
    }
    else {
        h = w->writer;
        w->writer = NULL;
    }
    if (h == NULL) {
        Py_DECREF(w);
        Py_DECREF(key);
        Py_RETURN_FALSE;
    }
    cancel_handle(h);
    Py_DECREF(h);
    if (w->reader == NULL && w->writer == NULL) {
        watcher_discard(self, w, key);
    }
    else {
        /* Stop watching this side; a fd found gone here is dropped. */
        (void)watcher_update(w);
    }
    Py_DECREF(w);
    Py_DECREF(key);
    Py_RETURN_TRUE;
}

/* _check_fd_no_transport(fd): asyncio's _ensure_fd_no_transport. */
static PyObject *
loop_check_fd_no_transport(fa_loop *self, PyObject *fdobj)
{
    int fd = to_fd(fdobj);
    if (fd < 0 || fa_transport_check_fd(self, fd) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_add_reader(fa_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fa_loop_add_io(self, args, nargs, UV_READABLE);
}

static PyObject *
loop_add_writer(fa_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fa_loop_add_io(self, args, nargs, UV_WRITABLE);
}

static PyObject *
loop_remove_reader(fa_loop *self, PyObject *fd)
{
    return fa_loop_remove_io(self, fd, UV_READABLE);
}

static PyObject *
loop_remove_writer(fa_loop *self, PyObject *fd)
{
    return fa_loop_remove_io(self, fd, UV_WRITABLE);
}

/* asyncio's internal fd watching (listening sockets, pidfds): no check
 * that the fd belongs to no transport. */
static PyObject *
loop_add_reader_unchecked(fa_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fa_loop_add_io(self, args, nargs, UV_READABLE | FA_IO_UNCHECKED);
}

static PyObject *
loop_add_writer_unchecked(fa_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fa_loop_add_io(self, args, nargs, UV_WRITABLE | FA_IO_UNCHECKED);
}

static PyObject *
loop_remove_reader_unchecked(fa_loop *self, PyObject *fd)
{
    return fa_loop_remove_io(self, fd, UV_READABLE | FA_IO_UNCHECKED);
}

static PyObject *
loop_remove_writer_unchecked(fa_loop *self, PyObject *fd)
{
    return fa_loop_remove_io(self, fd, UV_WRITABLE | FA_IO_UNCHECKED);
}

/* The loop type's fd watching methods (module.c adds them to loop.c's
 * own). */
PyMethodDef fa_watcher_loop_methods[] = {
    {"add_reader", (PyCFunction)(void (*)(void))loop_add_reader, METH_FASTCALL,
     "add_reader(fd, callback, *args): call callback(*args) whenever fd is readable."},
    {"add_writer", (PyCFunction)(void (*)(void))loop_add_writer, METH_FASTCALL,
     "add_writer(fd, callback, *args): call callback(*args) whenever fd is writable."},
    {"remove_reader", (PyCFunction)loop_remove_reader, METH_O,
     "remove_reader(fd) -> bool: stop watching fd for reading."},
    {"remove_writer", (PyCFunction)loop_remove_writer, METH_O,
     "remove_writer(fd) -> bool: stop watching fd for writing."},
    {"_add_reader", (PyCFunction)(void (*)(void))loop_add_reader_unchecked, METH_FASTCALL,
     "add_reader() without the check that fd belongs to no transport (asyncio internal)."},
    {"_add_writer", (PyCFunction)(void (*)(void))loop_add_writer_unchecked, METH_FASTCALL,
     "add_writer() without the transport check (asyncio internal)."},
    {"_remove_reader", (PyCFunction)loop_remove_reader_unchecked, METH_O,
     "remove_reader() without the transport check (asyncio internal)."},
    {"_remove_writer", (PyCFunction)loop_remove_writer_unchecked, METH_O,
     "remove_writer() without the transport check (asyncio internal)."},
    {"_check_fd_no_transport", (PyCFunction)loop_check_fd_no_transport, METH_O,
     "Raise RuntimeError if fd belongs to a live transport."},
    {NULL, NULL, 0, NULL},
};

void
fa_loop_close_watchers(fa_loop *self)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    if (self->watchers == NULL) {
        return;
    }
    while (PyDict_Next(self->watchers, &pos, &key, &value)) {
        fa_watcher *w = (fa_watcher *)value;
        fa_handle *r = w->reader, *wr = w->writer;
        w->reader = w->writer = NULL;
        cancel_handle(r);
        cancel_handle(wr);
        Py_XDECREF(r);
        Py_XDECREF(wr);
        watcher_close(w); /* in a forked child: forgets, never touches the set */
    }
    PyDict_Clear(self->watchers);
}

static int
watcher_traverse(fa_watcher *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT((PyObject *)w->loop);
    Py_VISIT((PyObject *)w->reader);
    Py_VISIT((PyObject *)w->writer);
    return 0;
}

static int
watcher_clear(fa_watcher *w)
{
    Py_CLEAR(w->reader);
    Py_CLEAR(w->writer);
    return 0;
}

static void
watcher_dealloc(fa_watcher *w)
{
    PyTypeObject *tp = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    if (w->loop != NULL) {
        watcher_close(w);
    }
    watcher_clear(w);
    Py_CLEAR(w->loop);
    tp->tp_free(w);
    Py_DECREF(tp);
}

static PyType_Slot watcher_slots[] = {
    {Py_tp_dealloc, watcher_dealloc},
    {Py_tp_traverse, watcher_traverse},
    {Py_tp_clear, watcher_clear},
    {0, NULL},
};

PyType_Spec fa_watcher_spec = {
    .name = "flaskasync._core._Watcher",
    .basicsize = sizeof(fa_watcher),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = watcher_slots,
};
