/* flaskasync internal: the general helpers every other C file may use.
 * This layer depends on nothing else in csrc/ (only Python, libuv and
 * libc): exceptions in flight, the libuv error -> OSError mapping, and the
 * fork generation. */
#ifndef FLASKASYNC_UTIL_H
#define FLASKASYNC_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>

/* ---------------------------------------------------------- exceptions */

/* The exception being raised, taken out of the error indicator (which is
 * left clear): a new reference, normalized, its traceback attached; NULL
 * if none was set.  PyErr_GetRaisedException() from 3.12 on; 3.11 has only
 * the (type, value, traceback) triple, deprecated since. */
static inline PyObject *
fa_fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Make exc (a reference taken by fa_fetch_exception, stolen) the exception
 * being raised again, with its traceback.  NULL clears the indicator, as
 * PyErr_SetRaisedException(NULL) does: the usual save/restore around code
 * that must not disturb an exception in flight is
 *     PyObject *exc = fa_fetch_exception(); ...; fa_restore_exception(exc); */
static inline void
fa_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc == NULL) {
        PyErr_Restore(NULL, NULL, NULL);
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Is the exception being raised one that must not be swallowed by a
 * callback's error handling (KeyboardInterrupt, SystemExit)?  1 or 0. */
int fa_is_fatal_exception(void);

/* loop.call_exception_handler(context), the one place that builds such a
 * context: {'message': message, 'exception': exc, key: value, ...}, with
 * the (const char *key, PyObject *value) pairs that follow exc up to a
 * NULL key; a NULL exc or value leaves its key out.  Borrows everything.
 * Returns 0, or -1 with an exception set (the context could not be built,
 * or the handler raised): the caller decides where that goes. */
int fa_call_exception_handler(PyObject *loop, PyObject *message, PyObject *exc, ...)
    __attribute__((sentinel));

/* Raise the libuv error err (negative errno) as the OSError subclass for
 * its errno, like the stdlib's own socket errors.  Always returns -1. */
int fa_set_uv_error(int err, const char *what);

/* *out = getattr(import_module(module), name), a new reference; -1 with an
 * exception set on failure. */
int fa_import_attr(PyObject **out, const char *module, const char *name);

/* The keyword arguments of a METH_FASTCALL | METH_KEYWORDS function that
 * takes a few named ones: the value passed as names[j] goes to out[j].
 * The caller sets out[] first: NULL for not given, the positional argument
 * where one was passed, which a keyword for the same name then meets as
 * "multiple values".  A name not in names[] is an "unexpected keyword
 * argument".  0, or -1 with TypeError naming func.  (The loop's call_soon
 * family parses its one keyword, context, itself: loop.c, parse_cb_args.)
 * Called only when kwnames is not NULL: a call without keywords costs its
 * caller one test, not a call. */
int fa_parse_keywords(const char *func, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, const char *const *names, PyObject **out, int n);

/* The arguments of a METH_FASTCALL | METH_KEYWORDS function whose
 * parameters are all named (no *args), as a Python def would take them:
 * out[j] is the value for names[j], NULL where none was given (its default
 * is the caller's to apply).  The first max_positional names may be passed
 * positionally, the rest only as keywords; the first min_required must be
 * given.  0, or -1 with a TypeError naming func (too many positional
 * arguments, a missing required one, an unexpected keyword, multiple
 * values): the keyword half is fa_parse_keywords.  Every parse of such
 * arguments in csrc/ goes through here or fa_parse_keywords; tp_new slots
 * keep PyArg_ParseTupleAndKeywords, whose signature CPython fixes. */
int fa_parse_args(const char *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, int n_names, int min_required, int max_positional,
                  PyObject **out);

/* ------------------------------------------------------ the module's definition
 * The identity of _core's PyModuleDef, registered by module exec before
 * any type is made, so that code below module.c can find the module of a
 * type Python may have subclassed (fa_module_of_type in state.h) without
 * naming module.c.  The same pointer for every module instance. */
void fa_set_module_def(PyModuleDef *def);
PyModuleDef *fa_module_def_get(void);

/* ------------------------------------------------------ fork generation
 * Counts the fork()s that led to this process (a pthread_atfork child
 * handler adds one).  Whatever remembers the generation it was made in
 * (a loop, the app loop in the module state) can tell it was inherited
 * from a parent: its epoll set, eventfd, timerfd and threads then belong
 * to the parent and must not be used. */
extern atomic_ulong fa_fork_generation;

/* The current generation, to remember. */
static inline unsigned long
fa_fork_gen(void)
{
    return atomic_load(&fa_fork_generation);
}

/* Was something remembered in generation gen made before a fork() that
 * led to this process? */
static inline int
fa_forked(unsigned long gen)
{
    return gen != atomic_load(&fa_fork_generation);
}

/* Install the atfork handler that counts generations (once per process;
 * module init calls it). */
void fa_register_atfork(void);

#endif /* FLASKASYNC_UTIL_H */
