/* flaskasync internal: the C gather (gather.c). */
#ifndef FLASKASYNC_GATHER_H
#define FLASKASYNC_GATHER_H

#include "fa.h"

typedef struct fa_state fa_state;

/* gather.c */
int fa_gather_init_type(PyObject *module, fa_state *st);
void fa_gather_free_meths(fa_state *st);
PyObject *fa_gather(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames);

#endif /* FLASKASYNC_GATHER_H */
