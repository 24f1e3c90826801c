/* fd watching: add_reader/add_writer/remove_reader/remove_writer on one
 * uv_poll_t per fd.  The handle stays registered until removed; each time
 * the fd is ready its Handle is appended to the ready queue, as asyncio's
 * selector loop does. */
#include "fa.h"

static void
watcher_on_close(uv_handle_t *h)
{
    fa_watcher *w = (fa_watcher *)h->data;
    fa_loop *loop = w->loop;
    fa_loop_gil_ensure(loop);
    PyMem_RawFree(h);
    w->poll = NULL;
    loop->n_closing--;
    Py_DECREF(w); /* the reference taken when the close started */
}

static void
watcher_on_io(uv_poll_t *p, int status, int events)
{
    fa_watcher *w = (fa_watcher *)p->data;
    fa_loop *loop = w->loop;
    fa_loop_gil_ensure(loop);
    if (status < 0) {
        /* An error on the fd: wake both sides so they see it on their next
         * read or write, as a selector reports the fd ready. */
        events = UV_READABLE | UV_WRITABLE;
    }
    /* Level-triggered: a fd stays ready until read, and uv_run may be
     * called more than once before the ready queue runs; queue the handle
     * once, as a selector loop reports the fd once per iteration. */
    if ((events & UV_READABLE) && w->reader != NULL && !w->reader->cancelled &&
        !w->reader->queued) {
        if (fa_loop_push_ready(loop, w->reader) == 0) {
            w->reader->queued = 1;
        }
    }
    if ((events & (UV_WRITABLE | UV_DISCONNECT)) && w->writer != NULL &&
        !w->writer->cancelled && !w->writer->queued) {
        if (fa_loop_push_ready(loop, w->writer) == 0) {
            w->writer->queued = 1;
        }
    }
    if (PyErr_Occurred()) {
        /* Growing the ready queue failed (MemoryError).  We are in a libuv
         * callback and must not return with an exception set: report it;
         * the fd is level-triggered, so it is queued again next iteration. */
        PyErr_WriteUnraisable((PyObject *)w);
    }
}

/* Bring the uv_poll in line with the registered handles; close it when
 * nothing is left.  Returns -1 with an exception on failure. */
static int
watcher_update(fa_watcher *w)
{
    fa_loop *loop = w->loop;
    int events = 0;
    int r;
    if (w->reader != NULL) {
        events |= UV_READABLE;
    }
    if (w->writer != NULL) {
        events |= UV_WRITABLE;
    }
    if (events == w->events || w->poll == NULL) {
        return 0;
    }
    if (events) {
        r = uv_poll_start(w->poll, events, watcher_on_io);
        if (r < 0) {
            return fa_set_uv_error(r, "uv_poll_start");
        }
        if (w->events == 0) {
            loop->n_io++;
        }
    }
    else {
        uv_poll_stop(w->poll);
        loop->n_io--;
    }
    w->events = events;
    loop->io_dirty = 1;
    if (loop->is_app && atomic_load(&loop->baton) == 0) {
        /* Nobody drives the app loop: the home thread must register the
         * change with epoll (it runs uv_run when woken). */
        fa_loop_poke(loop);
    }
    return 0;
}

static void
watcher_close(fa_watcher *w)
{
    if (w->poll == NULL || uv_is_closing((uv_handle_t *)w->poll)) {
        return;
    }
    if (w->events) {
        w->loop->n_io--;
        w->events = 0;
    }
    w->loop->n_closing++;
    Py_INCREF(w);
    uv_close((uv_handle_t *)w->poll, watcher_on_close);
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

PyObject *
fa_loop_add_io(fa_loop *self, PyObject *args, int events)
{
    int check = !(events & FA_IO_UNCHECKED);
    events &= ~FA_IO_UNCHECKED;
    const char *method = events == UV_READABLE ? "add_reader" : "add_writer";
    PyObject *fdobj, *cb, *cbargs = NULL, *key = NULL;
    fa_watcher *w = NULL;
    fa_handle *h = NULL, *old;
    int fd, r;

    if (PyTuple_GET_SIZE(args) < 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes at least 2 arguments (fd, callback)", method);
        return NULL;
    }
    fdobj = PyTuple_GET_ITEM(args, 0);
    cb = PyTuple_GET_ITEM(args, 1);
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
    cbargs = PyTuple_GetSlice(args, 2, PyTuple_GET_SIZE(args));
    if (cbargs == NULL) {
        return NULL;
    }
    h = fa_handle_new(self, self->st->HandleType, cb, cbargs, NULL);
    Py_CLEAR(cbargs);
    if (h == NULL) {
        return NULL;
    }
    key = PyLong_FromLong(fd);
    if (key == NULL) {
        goto error;
    }
    w = (fa_watcher *)PyDict_GetItemWithError(self->watchers, key);
    if (w == NULL && PyErr_Occurred()) {
        goto error;
    }
    if (w == NULL || w->poll == NULL || uv_is_closing((uv_handle_t *)w->poll)) {
        if (check && fa_transport_check_fd(self, fd) < 0) {
            w = NULL;
            goto error;
        }
        if (w != NULL && PyDict_DelItem(self->watchers, key) < 0) {
            w = NULL;
            goto error;
        }
        w = PyObject_GC_New(fa_watcher, self->st->WatcherType);
        if (w == NULL) {
            goto error;
        }
        w->loop = (fa_loop *)Py_NewRef(self);
        w->reader = w->writer = NULL;
        w->fd = fd;
        w->events = 0;
        w->poll = PyMem_RawMalloc(sizeof(uv_poll_t));
        PyObject_GC_Track(w);
        if (w->poll == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        r = uv_poll_init(&self->uv, w->poll, fd);
        if (r < 0) {
            PyMem_RawFree(w->poll);
            w->poll = NULL;
            fa_set_uv_error(r, method);
            goto error;
        }
        w->poll->data = w;
        if (PyDict_SetItem(self->watchers, key, (PyObject *)w) < 0) {
            watcher_close(w);
            goto error;
        }
    }
    else {
        Py_INCREF(w);
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
    if (old != NULL) {
        cancel_handle(old);
        Py_DECREF(old);
    }
    if (watcher_update(w) < 0) {
        goto error;
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
    if (watcher_update(w) < 0) {
        PyErr_Clear(); /* stopping a poll does not fail; be safe */
    }
    if (w->reader == NULL && w->writer == NULL) {
        watcher_close(w);
        if (PyDict_DelItem(self->watchers, key) < 0) {
            PyErr_Clear();
        }
    }
    Py_DECREF(w);
    Py_DECREF(key);
    Py_RETURN_TRUE;
}

/* _check_fd_no_transport(fd): asyncio's _ensure_fd_no_transport. */
PyObject *
fa_loop_check_fd_no_transport(fa_loop *self, PyObject *fdobj)
{
    int fd = to_fd(fdobj);
    if (fd < 0 || fa_transport_check_fd(self, fd) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

void
fa_loop_close_watchers(fa_loop *self)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    if (self->watchers == NULL) {
        return;
    }
    if (fa_loop_forked(self)) {
        /* The uv loop belongs to the parent: drop the Python side only. */
        PyDict_Clear(self->watchers);
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
        watcher_close(w);
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
    /* A live poll holds a reference to us while closing, so poll is NULL
     * here unless the uv loop is already gone (fork child, close). */
    if (w->poll != NULL) {
        PyMem_RawFree(w->poll);
        w->poll = NULL;
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
