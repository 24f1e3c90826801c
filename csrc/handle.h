/* flaskasync internal: the callbacks scheduled on a loop (handle.c):
 * Handle and TimerHandle. */
#ifndef FLASKASYNC_HANDLE_H
#define FLASKASYNC_HANDLE_H

#include "fa.h"

#include <stdint.h>

typedef struct fa_state fa_state;
typedef struct fa_loop fa_loop;
typedef struct fa_handle fa_handle;

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

/* handle.c */
int fa_handle_init_types(PyObject *module, fa_state *st);
void fa_handle_clear_free_list(fa_state *st);
PyObject *fa_format_callback(fa_handle *h);
fa_handle *fa_handle_new(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
                         PyObject *args, PyObject *context);
fa_handle *fa_handle_new_oneshot(fa_loop *loop, PyTypeObject *tp, PyObject *callback,
                                 PyObject *args, PyObject *context);
int fa_handle_run(fa_handle *h);
/* The variable mapping ctx holds: borrowed, to compare with a later one;
 * NULL (no exception) if this interpreter's contexts cannot be read so. */
PyObject *fa_context_vars(PyObject *ctx);

#endif /* FLASKASYNC_HANDLE_H */
