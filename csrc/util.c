/* flaskasync internal: the general helpers declared in util.h.  Depends on
 * nothing else in csrc/. */
#include "util.h"

#include <pthread.h>
#include <stdarg.h>
#include <uv.h>

atomic_ulong fa_fork_generation = 0;
static PyModuleDef *module_def;   /* written with the GIL held, before any type exists */

void
fa_set_module_def(PyModuleDef *def)
{
    module_def = def;
}

PyModuleDef *
fa_module_def_get(void)
{
    return module_def;
}
static atomic_int atfork_registered = 0;

int
fa_set_uv_error(int err, const char *what)
{
    PyObject *args, *exc;
    args = Py_BuildValue("(is)", -err, uv_strerror(err));
    if (args == NULL) {
        return -1;
    }
    exc = PyObject_Call(PyExc_OSError, args, NULL);
    Py_DECREF(args);
    if (exc == NULL) {
        return -1;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    (void)what;
    return -1;
}

int
fa_is_fatal_exception(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
           PyErr_ExceptionMatches(PyExc_SystemExit);
}

int
fa_call_exception_handler(PyObject *loop, PyObject *message, PyObject *exc, ...)
{
    PyObject *ctx, *r;
    const char *key;
    va_list ap;
    ctx = PyDict_New();
    if (ctx == NULL || PyDict_SetItemString(ctx, "message", message) < 0 ||
        (exc != NULL && PyDict_SetItemString(ctx, "exception", exc) < 0)) {
        Py_XDECREF(ctx);
        return -1;
    }
    va_start(ap, exc);
    while ((key = va_arg(ap, const char *)) != NULL) {
        PyObject *value = va_arg(ap, PyObject *);
        if (value != NULL && PyDict_SetItemString(ctx, key, value) < 0) {
            break;
        }
    }
    va_end(ap);
    if (key != NULL) {
        Py_DECREF(ctx);
        return -1;
    }
    r = PyObject_CallMethod(loop, "call_exception_handler", "(O)", ctx);
    Py_DECREF(ctx);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static void
after_fork_child(void)
{
    atomic_fetch_add(&fa_fork_generation, 1);
}

void
fa_register_atfork(void)
{
    if (atomic_exchange(&atfork_registered, 1) == 0) {
        pthread_atfork(NULL, NULL, after_fork_child);
    }
}

int
fa_import_attr(PyObject **out, const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) {
        *out = NULL;
        return -1;
    }
    *out = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return *out == NULL ? -1 : 0;
}

int
fa_parse_keywords(const char *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, PyObject **out, int n)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int j = 0;
        while (j < n && PyUnicode_CompareWithASCIIString(k, names[j]) != 0) {
            j++;
        }
        if (j == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", func, k);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", func, k);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    return 0;
}

int
fa_parse_args(const char *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              const char *const *names, int n_names, int min_required, int max_positional,
              PyObject **out)
{
    if (nargs > max_positional) {
        PyErr_Format(PyExc_TypeError, "%s() takes %s %d positional argument%s (%zd given)", func,
                     min_required == max_positional ? "exactly" : "at most", max_positional,
                     max_positional == 1 ? "" : "s", nargs);
        return -1;
    }
    for (int j = 0; j < n_names; j++) {
        out[j] = j < nargs ? args[j] : NULL;
    }
    if (kwnames != NULL &&
        fa_parse_keywords(func, args, nargs, kwnames, names, out, n_names) < 0) {
        return -1;
    }
    for (int j = (int)nargs; j < min_required; j++) {
        if (out[j] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)", func,
                         names[j], j + 1);
            return -1;
        }
    }
    return 0;
}
