/* Task supervision, and the sync caller of the Flask integration: the
 * bookkeeping of flaskasync/_tasks.py's task scopes done in C, so that a
 * request pays for no Python frame it does not need.
 *
 * A scope (_Scope, subclassed in Python by _tasks.Scope, which adds
 * close() and cancel_children()) records the tasks created while one
 * supervised call runs: a loop with supervision installed
 * (loop._set_supervision(var, record)) looks up the scope in the context
 * variable `var` of every task it creates and appends the task to an open
 * scope's children; the cases that need Python (no scope but a running
 * task, a closed scope: background tasks) go to record(task, scope,
 * context).  A task created by the runner for its caller is not
 * supervised: the caller holds it.
 *
 * _AsyncToSync(owner, policy) is what the integration installs as
 * app.async_to_sync: called with an async function it returns a
 * _SyncCall, which runs the function's coroutine with flaskasync.run in a
 * new scope, the one Python-free path for the common case (no timeout, no
 * cancelling of leftover tasks); everything else goes to the policy's
 * Python code, which does what it did before. */
#include "supervise.h"
#include "loop.h"
#include "runner.h"
#include "state.h"
#include "util.h"

/* ------------------------------------------------------------ _Scope */

static int
scope_traverse(fa_scope *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s));
    Py_VISIT(s->owner);
    Py_VISIT(s->what);
    Py_VISIT(s->children);
    Py_VISIT(s->driver_context);
    return 0;
}

static int
scope_clear(fa_scope *s)
{
    Py_CLEAR(s->owner);
    Py_CLEAR(s->what);
    Py_CLEAR(s->children);
    Py_CLEAR(s->driver_context);
    return 0;
}

static void
scope_dealloc(fa_scope *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    (void)scope_clear(s);
    tp->tp_free(s);
    Py_DECREF(tp);
}

/* A scope of type tp (the C type or a subclass): the fields set, no
 * __init__ run.  New reference. */
static fa_scope *
scope_alloc(PyTypeObject *tp, PyObject *owner, PyObject *what, int cancel_leftovers, int open)
{
    fa_scope *s = (fa_scope *)tp->tp_alloc(tp, 0);
    if (s == NULL) {
        return NULL;
    }
    s->owner = Py_NewRef(owner);
    s->what = Py_NewRef(what);
    s->children = NULL;
    s->driver_context = NULL;
    s->open = open;
    s->cancel_leftovers = cancel_leftovers;
    return s;
}

/* _Scope(owner, cancel_leftovers=False, detached=False, what=None) */
static PyObject *
scope_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"owner", "cancel_leftovers", "detached", "what", NULL};
    PyObject *owner, *what = Py_None;
    int cancel_leftovers = 0, detached = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|ppO:Scope", kwlist, &owner,
                                     &cancel_leftovers, &detached, &what)) {
        return NULL;
    }
    return (PyObject *)scope_alloc(tp, owner, what, cancel_leftovers, !detached);
}

/* Accept the arguments tp_new took (subclasses need not define __init__). */
static int
scope_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    (void)args;
    (void)kwds;
    return 0;
}

static PyObject *
scope_get_children(fa_scope *s, void *Py_UNUSED(c))
{
    if (s->children == NULL) {
        s->children = PyList_New(0);
        if (s->children == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(s->children);
}

static int
scope_set_children(fa_scope *s, PyObject *value, void *Py_UNUSED(c))
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "children must be a list");
        return -1;
    }
    Py_XSETREF(s->children, Py_NewRef(value));
    return 0;
}

static PyObject *
scope_get_object(PyObject *field)
{
    return Py_NewRef(field != NULL ? field : Py_None);
}

static int
scope_set_object(PyObject **field, PyObject *value, const char *name)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", name);
        return -1;
    }
    Py_XSETREF(*field, value == Py_None && strcmp(name, "driver_context") == 0
                           ? NULL : Py_NewRef(value));
    return 0;
}

#define SCOPE_OBJECT(field)                                                              \
    static PyObject *scope_get_##field(fa_scope *s, void *Py_UNUSED(c))                  \
    {                                                                                    \
        return scope_get_object(s->field);                                               \
    }                                                                                    \
    static int scope_set_##field(fa_scope *s, PyObject *v, void *Py_UNUSED(c))           \
    {                                                                                    \
        return scope_set_object(&s->field, v, #field);                                   \
    }
SCOPE_OBJECT(owner)
SCOPE_OBJECT(what)
SCOPE_OBJECT(driver_context)
#undef SCOPE_OBJECT

#define SCOPE_FLAG(field)                                                                \
    static PyObject *scope_get_##field(fa_scope *s, void *Py_UNUSED(c))                  \
    {                                                                                    \
        return PyBool_FromLong(s->field);                                                \
    }                                                                                    \
    static int scope_set_##field(fa_scope *s, PyObject *v, void *Py_UNUSED(c))           \
    {                                                                                    \
        int b = v != NULL ? PyObject_IsTrue(v) : -1;                                     \
        if (b < 0) {                                                                     \
            if (v == NULL) {                                                             \
                PyErr_SetString(PyExc_AttributeError, "cannot delete " #field);          \
            }                                                                            \
            return -1;                                                                   \
        }                                                                                \
        s->field = b;                                                                    \
        return 0;                                                                        \
    }
SCOPE_FLAG(open)
SCOPE_FLAG(cancel_leftovers)
#undef SCOPE_FLAG

static PyGetSetDef scope_getset[] = {
    {"owner", (getter)scope_get_owner, (setter)scope_set_owner,
     "Whose logger reports the scope's tasks (a Flask app, or None).", NULL},
    {"what", (getter)scope_get_what, (setter)scope_set_what,
     "The function the supervised call runs (or a str describing it).", NULL},
    {"children", (getter)scope_get_children, (setter)scope_set_children,
     "The tasks recorded while the scope is open (a list).", NULL},
    {"driver_context", (getter)scope_get_driver_context, (setter)scope_set_driver_context,
     "The Context flaskasync.run(context=) runs the scope's calls in, or None.", NULL},
    {"open", (getter)scope_get_open, (setter)scope_set_open,
     "Whether tasks created now are recorded as children.", NULL},
    {"cancel_leftovers", (getter)scope_get_cancel_leftovers, (setter)scope_set_cancel_leftovers,
     "Cancel the unfinished children when the call returns.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static void scope_finish(PyObject *scope, fa_state *st);

/* _Scope.finish(): scope_finish from Python (flaskasync._tasks.run_in_scope). */
static PyObject *
scope_finish_method(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *module = fa_module_of_type(Py_TYPE(self));
    if (module == NULL) {
        return NULL;
    }
    scope_finish(self, fa_get_state(module));
    Py_RETURN_NONE;
}

static PyMethodDef scope_methods[] = {
    {"finish", scope_finish_method, METH_NOARGS,
     "finish()\n--\n\nThe supervised call is over (on the loop): close the scope, in C when "
     "every child finished and nothing is to be reported, else with close().  Never "
     "raises: an error in close() is unraisable."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot scope_slots[] = {
    {Py_tp_doc, "The C part of flaskasync._tasks.Scope: the tasks one supervised call "
                "creates."},
    {Py_tp_methods, scope_methods},
    {Py_tp_new, scope_new},
    {Py_tp_init, scope_init},
    {Py_tp_dealloc, scope_dealloc},
    {Py_tp_traverse, scope_traverse},
    {Py_tp_clear, scope_clear},
    {Py_tp_getset, scope_getset},
    {0, NULL},
};

static PyType_Spec scope_spec = {
    .name = "flaskasync._core._Scope",
    .basicsize = sizeof(fa_scope),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = scope_slots,
};

/* Whether closing the scope needs its Python close(): a child is still
 * running (it becomes a background task), or finished with an exception
 * nobody retrieved (it is reported), or is not an asyncio.Task (whose
 * flags are not known).  1, 0, or -1 with an exception. */
static int
scope_close_needs_python(fa_state *st, PyObject *children)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(children); i++) {
        PyObject *task = PyList_GET_ITEM(children, i), *r;
        int v;
        if (!PyObject_TypeCheck(task, (PyTypeObject *)st->TaskType)) {
            return 1;
        }
        r = PyObject_CallMethodNoArgs(task, st->s_done);
        if (r == NULL) {
            return -1;
        }
        v = r == Py_True;
        Py_DECREF(r);
        if (!v) {
            return 1;
        }
        /* Done: reported only if its exception was never retrieved (a
         * result, a cancellation or a retrieved exception clear it). */
        r = PyObject_GetAttr(task, st->s_log_traceback);
        if (r == NULL) {
            return -1;
        }
        v = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (v != 0) {
            return v;
        }
    }
    return 0;
}

/* The supervised call of scope is over (on the loop): close it.  When
 * every child finished and nothing is to be reported, that is two flags;
 * otherwise the Python close() makes the unfinished children background
 * tasks and reports the failed ones.  Never raises (an error in close() is
 * unraisable: the call's own outcome stands); a pending exception is
 * preserved. */
static void
scope_finish(PyObject *scope, fa_state *st)
{
    fa_scope *s = (fa_scope *)scope;
    PyObject *exc, *r;
    int slow;
    if (s->children == NULL || PyList_GET_SIZE(s->children) == 0) {
        s->open = 0;
        return;
    }
    exc = fa_fetch_exception();
    slow = scope_close_needs_python(st, s->children);
    if (slow == 0) {
        s->open = 0;
        Py_CLEAR(s->children);
    }
    else {
        r = slow < 0 ? NULL : PyObject_CallMethod(scope, "close", NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable(scope);
        }
        Py_XDECREF(r);
    }
    fa_restore_exception(exc);
}

/* ------------------------------------------------------ the loop's side */

static PyObject *
current_task_of(fa_loop *loop)
{
    return PyObject_CallOneArg(loop->st->current_task, (PyObject *)loop);
}

/* Record a task the loop created (see the top of the file).  context: the
 * create_task(context=) argument, or NULL.  0, or -1 with an exception
 * (the caller drops the task: it was not started... it was: the caller
 * cancels it). */
int
fa_loop_supervise(fa_loop *loop, PyObject *task, PyObject *context)
{
    PyObject *var = loop->sup_var, *scope = NULL, *cur, *r;
    int rec = 0;

    if (var == NULL) {
        return 0;
    }
    if (context != NULL && context != Py_None) {
        /* Not PyContextVar_Get: context may be another task's, entered. */
        scope = PyObject_CallMethodOneArg(context, loop->st->s_get, var);
    }
    else {
        context = NULL;
        if (PyContextVar_Get(var, Py_None, &scope) < 0) {
            return -1;
        }
    }
    if (scope == NULL) {
        return -1;
    }
    if (scope == Py_None) {
        /* No scope: a task created by a running task is a background task
         * of the owner current in its context. */
        cur = current_task_of(loop);
        if (cur == NULL) {
            Py_DECREF(scope);
            return -1;
        }
        rec = cur != Py_None;
        Py_DECREF(cur);
    }
    else if (PyObject_TypeCheck(scope, loop->st->ScopeType)) {
        fa_scope *s = (fa_scope *)scope;
        if (context != NULL && context == s->driver_context) {
            /* flaskasync.run(context=) running one call of a scope that
             * spans several (a streamed response): its caller holds it. */
            cur = current_task_of(loop);
            if (cur == NULL) {
                Py_DECREF(scope);
                return -1;
            }
            rec = cur != Py_None;
            Py_DECREF(cur);
            if (!rec) {
                Py_DECREF(scope);
                return 0;
            }
        }
        if (s->open) {
            int err = 0;
            if (s->children == NULL) {
                s->children = PyList_New(0);
                err = s->children == NULL;
            }
            if (!err) {
                err = PyList_Append(s->children, task) < 0;
            }
            Py_DECREF(scope);
            return err ? -1 : 0;
        }
        rec = 1;
    }
    /* else: not a scope (the variable is private): not supervised. */
    if (rec) {
        PyObject *argv[3] = {task, scope, context != NULL ? context : Py_None};
        r = PyObject_Vectorcall(loop->sup_hook, argv, 3, NULL);
        if (r == NULL) {
            Py_DECREF(scope);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(scope);
    return 0;
}

/* loop._set_supervision(var, record): supervise the tasks this loop
 * creates; (None, None) turns it off. */
static PyObject *
loop_set_supervision(fa_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_set_supervision(var, record) takes 2 arguments");
        return NULL;
    }
    if (args[0] == Py_None) {
        Py_CLEAR(self->sup_var);
        Py_CLEAR(self->sup_hook);
        Py_RETURN_NONE;
    }
    if (!PyContextVar_CheckExact(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "_set_supervision() needs a ContextVar and a callable");
        return NULL;
    }
    Py_XSETREF(self->sup_var, Py_NewRef(args[0]));
    Py_XSETREF(self->sup_hook, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* The loop type's supervision switch (module.c adds it to loop.c's own
 * methods). */
PyMethodDef fa_supervise_loop_methods[] = {
    {"_set_supervision", (PyCFunction)(void (*)(void))loop_set_supervision, METH_FASTCALL,
     "_set_supervision(var, record): record the tasks this loop creates in the task\n"
     "scope found in the ContextVar var (flaskasync._tasks); (None, None): stop."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------ _AsyncToSync */

/* The policy tuple, in this order:
 *   scope_class       a subclass of _Scope, for the scopes of fast calls
 *   slow(func, owner) the Python sync caller of func (timeouts, cancelled
 *                     leftovers): called with the call's arguments
 *   other(value, func, owner)  func returned something else than a
 *                     coroutine object: the Python path from there
 *   nested(func)      the RuntimeError for a call inside a running loop
 *   install()         put the supervision on the app loop
 *   inline(coro, scope)  the app loop is a server's (ASGI mode) and this is
 *                     its thread, in a request's greenlet: run coro there
 *                     with scope current and return its result
 *   timeout_key, background_key   the two configuration keys read per call
 *                     from owner.config: fast when the first is None and
 *                     the second true (or missing) */
enum { P_SCOPE, P_SLOW, P_OTHER, P_NESTED, P_INSTALL, P_INLINE, P_KTIMEOUT, P_KBACKGROUND,
       P_N };

typedef struct {
    PyObject_HEAD
    fa_state *st;
    PyObject *module;
    PyObject *owner;
    PyObject *p[P_N];
    vectorcallfunc vectorcall;
} fa_a2s;

typedef struct {
    PyObject_HEAD
    fa_a2s *parent;
    PyObject *func;
    vectorcallfunc vectorcall;
} fa_synccall;

static PyObject *synccall_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames);

static PyObject *
a2s_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    fa_a2s *p = (fa_a2s *)self;
    fa_synccall *c;
    PyObject *func;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "async_to_sync() takes one argument (func)");
        return NULL;
    }
    func = args[0];
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError, "async_to_sync() expects an async callable, got %R", func);
        return NULL;
    }
    c = PyObject_GC_New(fa_synccall, p->st->SyncCallType);
    if (c == NULL) {
        return NULL;
    }
    c->parent = (fa_a2s *)Py_NewRef(self);
    c->func = Py_NewRef(func);
    c->vectorcall = synccall_vectorcall;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* The module's definition, which finds a (sub)type's module in tp_new:
 * module.c's, kept by fa_supervise_init_types (the same for every module instance). */

static PyObject *
a2s_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    PyObject *owner, *policy, *module;
    fa_a2s *p;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "_AsyncToSync() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!:_AsyncToSync", &owner, &PyTuple_Type, &policy)) {
        return NULL;
    }
    module = fa_module_of_type(tp);
    if (module == NULL) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(policy) != P_N) {
        PyErr_Format(PyExc_TypeError, "_AsyncToSync(): the policy has %d items", P_N);
        return NULL;
    }
    if (!PyType_Check(PyTuple_GET_ITEM(policy, P_SCOPE)) ||
        !PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(policy, P_SCOPE),
                          fa_get_state(module)->ScopeType)) {
        PyErr_SetString(PyExc_TypeError, "_AsyncToSync(): the scope class must derive from _Scope");
        return NULL;
    }
    p = (fa_a2s *)tp->tp_alloc(tp, 0);
    if (p == NULL) {
        return NULL;
    }
    p->module = Py_NewRef(module);
    p->st = fa_get_state(module);
    p->owner = Py_NewRef(owner);
    for (int i = 0; i < P_N; i++) {
        p->p[i] = Py_NewRef(PyTuple_GET_ITEM(policy, i));
    }
    p->vectorcall = a2s_vectorcall;
    return (PyObject *)p;
}

static int
a2s_traverse(fa_a2s *p, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(p));
    Py_VISIT(p->module);
    Py_VISIT(p->owner);
    for (int i = 0; i < P_N; i++) {
        Py_VISIT(p->p[i]);
    }
    return 0;
}

static int
a2s_clear(fa_a2s *p)
{
    Py_CLEAR(p->owner);
    for (int i = 0; i < P_N; i++) {
        Py_CLEAR(p->p[i]);
    }
    return 0;
}

static void
a2s_dealloc(fa_a2s *p)
{
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    (void)a2s_clear(p);
    Py_CLEAR(p->module);
    tp->tp_free(p);
    Py_DECREF(tp);
}

static PyMemberDef a2s_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(fa_a2s, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* The app it was installed on, as a bound method's __self__. */
static PyObject *
a2s_get_self(fa_a2s *p, void *Py_UNUSED(c))
{
    return Py_NewRef(p->owner != NULL ? p->owner : Py_None);
}

static PyGetSetDef a2s_getset[] = {
    {"__self__", (getter)a2s_get_self, NULL, "The owner (app) it runs calls for.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot a2s_slots[] = {
    {Py_tp_doc, "_AsyncToSync(owner, policy): app.async_to_sync of the Flask integration."},
    {Py_tp_new, a2s_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_dealloc, a2s_dealloc},
    {Py_tp_traverse, a2s_traverse},
    {Py_tp_clear, a2s_clear},
    {Py_tp_members, a2s_members},
    {Py_tp_getset, a2s_getset},
    {0, NULL},
};

static PyType_Spec a2s_spec = {
    .name = "flaskasync._core._AsyncToSync",
    .basicsize = sizeof(fa_a2s),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = a2s_slots,
};

/* ------------------------------------------------------ _SyncCall */

/* d.get(key) for a dict (Flask's Config is one), else d.get(key) called:
 * a new reference, None if missing. */
static PyObject *
config_get(PyObject *config, PyObject *key)
{
    if (PyDict_Check(config)) {
        PyObject *v = PyDict_GetItemWithError(config, key);
        if (v == NULL) {
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        }
        return Py_NewRef(v);
    }
    return PyObject_CallMethod(config, "get", "O", key);
}

/* Whether a call for this owner takes the fast path: 1, 0, -1 on error. */
static int
fast_config(fa_a2s *p)
{
    PyObject *config, *v;
    int fast;
    if (p->owner == Py_None) {
        return 1;
    }
    config = PyObject_GetAttr(p->owner, p->st->s_config);
    if (config == NULL) {
        return -1;
    }
    v = config_get(config, p->p[P_KTIMEOUT]);
    if (v == NULL) {
        Py_DECREF(config);
        return -1;
    }
    fast = v == Py_None;
    Py_DECREF(v);
    if (fast) {
        v = config_get(config, p->p[P_KBACKGROUND]);
        if (v == NULL) {
            Py_DECREF(config);
            return -1;
        }
        /* Missing: True (the default). */
        fast = v == Py_None ? 1 : PyObject_IsTrue(v);
        Py_DECREF(v);
    }
    Py_DECREF(config);
    return fast;
}

static PyObject *
synccall_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    fa_synccall *c = (fa_synccall *)self;
    fa_a2s *p = c->parent;
    fa_state *st = p->st;
    PyObject *running, *coro, *name, *res;
    fa_loop *L;
    fa_scope *scope;
    int fast;

    /* Refuse before calling func, as the Python sync caller does. */
    running = PyObject_CallNoArgs(st->get_running_loop);
    if (running == NULL) {
        return NULL;
    }
    Py_DECREF(running);
    if (running != Py_None) {
        PyObject *exc = PyObject_CallOneArg(p->p[P_NESTED], c->func);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    fast = fast_config(p);
    if (fast < 0) {
        return NULL;
    }
    if (fast) {
        L = (fa_loop *)fa_app_loop(st);
        if (L == NULL) {
            return NULL;
        }
        /* The app loop is a server's (the ASGI mode): on its own thread
         * (a request's greenlet) the coroutine runs inline, through
         * inline(); from another thread the Python caller submits it. */
        if (fa_app_adopted(L)) {
            fast = L->thread_id == PyThread_get_thread_ident() ? 2 : 0;
        }
        if (fast && L->sup_var == NULL) {
            PyObject *r = PyObject_CallNoArgs(p->p[P_INSTALL]);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
    }
    if (!fast) {
        PyObject *caller = PyObject_CallFunctionObjArgs(p->p[P_SLOW], c->func, p->owner, NULL);
        if (caller == NULL) {
            return NULL;
        }
        res = PyObject_Vectorcall(caller, args, nargsf, kwnames);
        Py_DECREF(caller);
        return res;
    }
    coro = PyObject_Vectorcall(c->func, args, nargsf, kwnames);
    if (coro == NULL) {
        return NULL;
    }
    if (!PyCoro_CheckExact(coro)) {
        res = PyObject_CallFunctionObjArgs(p->p[P_OTHER], coro, c->func, p->owner, NULL);
        Py_DECREF(coro);
        return res;
    }
    if (fast == 2) {
        scope = scope_alloc((PyTypeObject *)p->p[P_SCOPE], p->owner, c->func, 0, 1);
        if (scope == NULL) {
            goto close_coro;
        }
        res = PyObject_CallFunctionObjArgs(p->p[P_INLINE], coro, (PyObject *)scope, NULL);
        Py_DECREF(scope);
        Py_DECREF(coro);
        return res;
    }
    /* run_job checks the app loop again (the call above ran user code). */
    scope = scope_alloc((PyTypeObject *)p->p[P_SCOPE], p->owner, c->func, 0, 1);
    if (scope == NULL) {
        goto close_coro;
    }
    /* The task is named after the function ("index", "Items.get"). */
    name = PyObject_GetAttr(c->func, st->s_qualname);
    if (name == NULL || !PyUnicode_Check(name)) {
        PyErr_Clear();
        Py_CLEAR(name);
    }
    res = fa_run_coro(st, coro, name, (PyObject *)scope, scope_finish);
    Py_XDECREF(name);
    Py_DECREF(scope);
    Py_DECREF(coro);
    return res;

close_coro:
    {
        /* Never started: close it so it is not reported as never awaited. */
        PyObject *exc = fa_fetch_exception();
        PyObject *r = PyObject_CallMethod(coro, "close", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        fa_restore_exception(exc);
    }
    Py_DECREF(coro);
    return NULL;
}

static int
synccall_traverse(fa_synccall *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT((PyObject *)c->parent);
    Py_VISIT(c->func);
    return 0;
}

static int
synccall_clear(fa_synccall *c)
{
    Py_CLEAR(c->parent);
    Py_CLEAR(c->func);
    return 0;
}

static void
synccall_dealloc(fa_synccall *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    (void)synccall_clear(c);
    tp->tp_free(c);
    Py_DECREF(tp);
}

static PyObject *
synccall_get_wrapped(fa_synccall *c, void *Py_UNUSED(x))
{
    return Py_NewRef(c->func != NULL ? c->func : Py_None);
}

static PyObject *
synccall_repr(fa_synccall *c)
{
    return PyUnicode_FromFormat("<flaskasync sync caller of %R>", c->func);
}

static PyMemberDef synccall_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(fa_synccall, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef synccall_getset[] = {
    {"__wrapped__", (getter)synccall_get_wrapped, NULL, "The async function called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot synccall_slots[] = {
    {Py_tp_doc, "A sync function running an async function's coroutine on the app loop."},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_repr, synccall_repr},
    {Py_tp_dealloc, synccall_dealloc},
    {Py_tp_traverse, synccall_traverse},
    {Py_tp_clear, synccall_clear},
    {Py_tp_members, synccall_members},
    {Py_tp_getset, synccall_getset},
    {0, NULL},
};

static PyType_Spec synccall_spec = {
    .name = "flaskasync._core._SyncCall",
    .basicsize = sizeof(fa_synccall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = synccall_slots,
};

int
fa_supervise_init_types(PyObject *module, fa_state *st)
{
    PyObject *t;
    t = PyType_FromModuleAndSpec(module, &scope_spec, NULL);
    if (t == NULL) {
        return -1;
    }
    st->ScopeType = (PyTypeObject *)t;
    if (PyModule_AddObjectRef(module, "_Scope", t) < 0) {
        return -1;
    }
    t = PyType_FromModuleAndSpec(module, &a2s_spec, NULL);
    if (t == NULL) {
        return -1;
    }
    st->AsyncToSyncType = (PyTypeObject *)t;
    if (PyModule_AddObjectRef(module, "_AsyncToSync", t) < 0) {
        return -1;
    }
    t = PyType_FromModuleAndSpec(module, &synccall_spec, NULL);
    if (t == NULL) {
        return -1;
    }
    st->SyncCallType = (PyTypeObject *)t;
    return PyModule_AddObjectRef(module, "_SyncCall", t);
}
