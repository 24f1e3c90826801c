/* flaskasync internal: fd watching for user code (watcher.c):
 * add_reader & co., and the sock_* methods' waits. */
#ifndef FLASKASYNC_WATCHER_H
#define FLASKASYNC_WATCHER_H

#include "fa.h"
#include "ioset.h"    /* fa_reg, embedded */

typedef struct fa_loop fa_loop;
typedef struct fa_handle fa_handle;

/* The reader and writer of one fd (add_reader/add_writer, sock_*). */
typedef struct {
    PyObject_HEAD
    fa_loop *loop;
    fa_handle *reader;
    fa_handle *writer;
    fa_reg reg;
    int lost;                    /* 0, or FA_REG_CLOSED / FA_REG_REPLACED */
} fa_watcher;

/* watcher.c */
extern PyType_Spec fa_watcher_spec;
extern PyMethodDef fa_watcher_loop_methods[];   /* add_reader & co. */
/* events: UV_READABLE or UV_WRITABLE, plus FA_IO_UNCHECKED for asyncio's
 * internal _add_reader & co., which skip the "fd used by a transport" check,
 * and, for fa_loop_add_io, FA_IO_SOCK_WAIT for a sock_* call's wait (the
 * handle's fd_wait).  args[0..nargs): fd, callback, *args, as add_reader()
 * takes them (METH_FASTCALL). */
#define FA_IO_UNCHECKED 0x100
#define FA_IO_SOCK_WAIT 0x200
#define FA_FD_WAITING 1
PyObject *fa_loop_add_io(fa_loop *self, PyObject *const *args, Py_ssize_t nargs, int events);
PyObject *fa_loop_remove_io(fa_loop *self, PyObject *fdobj, int events);
void fa_loop_close_watchers(fa_loop *self);

#endif /* FLASKASYNC_WATCHER_H */
