/* flaskasync internal: task scopes and supervision (supervise.c). */
#ifndef FLASKASYNC_SUPERVISE_H
#define FLASKASYNC_SUPERVISE_H

#include "fa.h"

typedef struct fa_state fa_state;
typedef struct fa_loop fa_loop;

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

#endif /* FLASKASYNC_SUPERVISE_H */
