/* ASGI mode's per-request conversions (flaskasync/_asgi.py): an ASGI http
 * scope to a WSGI environ, and WSGI's status and headers to an ASGI
 * http.response.start message.  flaskasync/_asgi.py keeps the same two
 * functions in Python (build_environ, _start_message) as the reference the
 * tests compare these with.
 *
 * Strings are "WSGI native strings": bytes as latin-1, as PEP 3333 says. */
#include "asgi.h"
#include "state.h"

#include <string.h>

/* The interned names and constant values (fa_asgi_state, listed by
 * FA_ASGI_NAMES in asgi.h), made at module exec. */
int
fa_asgi_init(fa_state *st)
{
    fa_asgi_state *a = &st->asgi;
#define FA_ASGI_MAKE(field, text)                                                          \
    if ((a->field = PyUnicode_InternFromString(text)) == NULL) {                          \
        return -1;                                                                        \
    }
    FA_ASGI_NAMES(FA_ASGI_MAKE)
#undef FA_ASGI_MAKE
    a->v_version = Py_BuildValue("(ii)", 1, 0);
    return a->v_version == NULL ? -1 : 0;
}

void
fa_asgi_clear(fa_state *st)
{
    fa_asgi_state *a = &st->asgi;
#define FA_ASGI_CLEAR(field, text) Py_CLEAR(a->field);
    FA_ASGI_NAMES(FA_ASGI_CLEAR)
#undef FA_ASGI_CLEAR
    Py_CLEAR(a->v_version);
}

/* scope[key] as a new reference, or a new reference to dflt if absent (NULL
 * without an exception when dflt is NULL); NULL with an exception on error.
 * Every value taken from the scope is held while it is used: looking keys up
 * and converting values can run Python code (a key's __eq__, a value's
 * __str__), which could drop the scope's last reference to a value. */
static PyObject *
scope_get(PyObject *scope, PyObject *key, PyObject *dflt)
{
    PyObject *v = PyDict_GetItemWithError(scope, key);
    if (v == NULL) {
        return PyErr_Occurred() ? NULL : Py_XNewRef(dflt);
    }
    return Py_NewRef(v);
}

/* A str of the scope as a WSGI string: ASCII as it is, otherwise its UTF-8
 * bytes decoded as latin-1.  New reference. */
static PyObject *
wsgi_str(PyObject *s)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "ASGI scope: expected a str, got %R", s);
        return NULL;
    }
    if (PyUnicode_IS_ASCII(s)) {
        return Py_NewRef(s);
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    if (utf8 == NULL) {
        return NULL;
    }
    return PyUnicode_DecodeLatin1(utf8, n, NULL);
}

static PyObject *
latin1(PyObject *b)
{
    if (PyBytes_Check(b)) {
        return PyUnicode_DecodeLatin1(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), NULL);
    }
    if (PyByteArray_Check(b)) {
        return PyUnicode_DecodeLatin1(PyByteArray_AS_STRING(b), PyByteArray_GET_SIZE(b), NULL);
    }
    PyErr_Format(PyExc_TypeError, "ASGI scope: expected bytes, got %R", b);
    return NULL;
}

/* The environ key of a header name: HTTP_<NAME> with '-' as '_', upper
 * case; CONTENT_TYPE and CONTENT_LENGTH without the prefix.  New ref. */
static PyObject *
header_key(const char *name, Py_ssize_t n)
{
    char stack[128];
    char *buf = stack;
    Py_ssize_t off = 5;
    PyObject *key;
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((unsigned char)name[i] >= 0x80) {
            /* Not a token (RFC 9110), but servers pass what they get: upper
             * case as str.upper() does, as the Python twin and WSGI servers. */
            PyObject *text = PyUnicode_DecodeLatin1(name, n, NULL), *up, *key2;
            if (text == NULL) {
                return NULL;
            }
            up = PyObject_CallMethod(text, "upper", NULL);
            Py_DECREF(text);
            if (up == NULL) {
                return NULL;
            }
            key2 = PyObject_CallMethod(up, "replace", "ss", "-", "_");
            Py_DECREF(up);
            if (key2 == NULL) {
                return NULL;
            }
            key = PyUnicode_FromFormat("HTTP_%U", key2);
            Py_DECREF(key2);
            return key;
        }
    }
    if (n + 5 > (Py_ssize_t)sizeof(stack)) {
        buf = PyMem_Malloc(n + 5);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
    }
    memcpy(buf, "HTTP_", 5);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'a' && c <= 'z') {
            c = (unsigned char)(c - 'a' + 'A');
        }
        else if (c == '-') {
            c = '_';
        }
        buf[5 + i] = (char)c;
    }
    if ((n == 12 && memcmp(buf + 5, "CONTENT_TYPE", 12) == 0) ||
        (n == 14 && memcmp(buf + 5, "CONTENT_LENGTH", 14) == 0)) {
        off = 0;
    }
    key = PyUnicode_DecodeLatin1(buf + 5 - off, n + off, NULL);
    if (buf != stack) {
        PyMem_Free(buf);
    }
    return key;
}

static int
is_blank_or_zero(const char *s, Py_ssize_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    return n == 0 || (n == 1 && s[0] == '0');
}

static int
set_str_of(PyObject *environ, PyObject *key, PyObject *v)
{
    PyObject *s = PyUnicode_Check(v) ? Py_NewRef(v) : PyObject_Str(v);
    int r;
    if (s == NULL) {
        return -1;
    }
    r = PyDict_SetItem(environ, key, s);
    Py_DECREF(s);
    return r;
}

static int
set_new(PyObject *environ, PyObject *key, PyObject *value)
{
    int r;
    if (value == NULL) {
        return -1;
    }
    r = PyDict_SetItem(environ, key, value);
    Py_DECREF(value);
    return r;
}

/* One header into the environ.  name and value are held by the caller:
 * hashing a bytes subclass (the cache lookup) runs Python code, which could
 * drop the header pair they came from. */
static int
add_header(const fa_asgi_state *a, PyObject *environ, PyObject *cache, PyObject *name,
           PyObject *value)
{
    PyObject *key, *text, *old;
    int r;
    key = PyDict_GetItemWithError(cache, name);
    if (key != NULL) {
        Py_INCREF(key);
    }
    else {
        if (PyErr_Occurred()) {
            return -1;
        }
        key = header_key(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name));
        if (key == NULL) {
            return -1;
        }
        if (PyDict_GET_SIZE(cache) < 1024 && PyDict_SetItem(cache, name, key) < 0) {
            Py_DECREF(key);
            return -1;
        }
    }
    if (!PyUnicode_CheckExact(key)) {
        PyErr_Format(PyExc_TypeError, "_asgi_environ(): header_cache values must be str, got %R",
                     key);
        Py_DECREF(key);
        return -1;
    }
    text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL);
    if (text == NULL) {
        Py_DECREF(key);
        return -1;
    }
    old = PyDict_GetItemWithError(environ, key);
    if (old != NULL) {
        /* Repeated headers are joined, cookies with "; " (RFC 6265). */
        PyObject *sep = PyUnicode_FromString(
            PyUnicode_Compare(key, a->k_http_cookie) == 0 ? "; " : ",");
        PyObject *joined = NULL;
        Py_INCREF(old);
        if (sep != NULL) {
            PyObject *tmp = PyUnicode_Concat(old, sep);
            if (tmp != NULL) {
                joined = PyUnicode_Concat(tmp, text);
                Py_DECREF(tmp);
            }
            Py_DECREF(sep);
        }
        Py_DECREF(old);
        Py_SETREF(text, joined);
        if (text == NULL) {
            Py_DECREF(key);
            return -1;
        }
    }
    else if (PyErr_Occurred()) {
        Py_DECREF(key);
        Py_DECREF(text);
        return -1;
    }
    r = PyDict_SetItem(environ, key, text);
    Py_DECREF(key);
    Py_DECREF(text);
    return r;
}

/* Headers into the environ; *has_body / *chunked from Content-Length and
 * Transfer-Encoding (the first of the two that appears decides).  The pair,
 * name and value of each header are held while it is converted (see
 * add_header); a list of headers changed meanwhile is read on from the
 * same index, never past its end. */
static int
add_headers(const fa_asgi_state *a, PyObject *environ, PyObject *headers, PyObject *cache,
            int *has_body, int *chunked)
{
    PyObject *seq = PySequence_Fast(headers, "ASGI scope: headers must be iterable");
    int decided = 0;
    if (seq == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *pair = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        PyObject *name, *value;
        int r;
        if ((!PyTuple_Check(pair) && !PyList_Check(pair)) || PySequence_Fast_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError, "ASGI scope: a header must be a pair, got %R", pair);
            Py_DECREF(pair);
            goto error;
        }
        name = Py_NewRef(PySequence_Fast_GET_ITEM(pair, 0));
        value = Py_NewRef(PySequence_Fast_GET_ITEM(pair, 1));
        if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
            PyErr_Format(PyExc_TypeError, "ASGI scope: header names and values must be bytes, "
                         "got %R", pair);
            r = -1;
        }
        else {
            if (!decided) {
                const char *nm = PyBytes_AS_STRING(name);
                Py_ssize_t nn = PyBytes_GET_SIZE(name);
                if (nn == 14 && memcmp(nm, "content-length", 14) == 0) {
                    *has_body = !is_blank_or_zero(PyBytes_AS_STRING(value),
                                                  PyBytes_GET_SIZE(value));
                    decided = 1;
                }
                else if (nn == 17 && memcmp(nm, "transfer-encoding", 17) == 0) {
                    *has_body = *chunked = 1;
                    decided = 1;
                }
            }
            r = add_header(a, environ, cache, name, value);
        }
        Py_DECREF(name);
        Py_DECREF(value);
        Py_DECREF(pair);
        if (r < 0) {
            goto error;
        }
    }
    Py_DECREF(seq);
    return 0;
error:
    Py_DECREF(seq);
    return -1;
}

/* _asgi_environ(scope, body, errors, header_cache) ->
 *     (environ, has_body, chunked)
 * The WSGI environ of an ASGI http scope (see _asgi.build_environ, its
 * Python twin), and what the headers say about the request body. */
PyObject *
fa_asgi_environ(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *scope, *body, *errors, *cache, *environ = NULL, *v = NULL, *root = NULL;
    PyObject *path = NULL, *server = NULL, *client = NULL;
    const fa_asgi_state *a = &fa_get_state(module)->asgi;
    int has_body = 0, chunked = 0;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_asgi_environ(scope, body, errors, header_cache)");
        return NULL;
    }
    scope = args[0];
    body = args[1];
    errors = args[2];
    cache = args[3];
    if (!PyDict_Check(scope) || !PyDict_Check(cache)) {
        PyErr_SetString(PyExc_TypeError, "_asgi_environ(): scope and header_cache must be dicts");
        return NULL;
    }
    environ = PyDict_New();
    if (environ == NULL) {
        return NULL;
    }

    v = scope_get(scope, a->s_method, NULL);
    if (v == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "method");
        }
        goto error;
    }
    if (PyDict_SetItem(environ, a->k_method, v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    root = scope_get(scope, a->s_root_path, a->s_empty);
    if (root == NULL) {
        goto error;
    }
    path = scope_get(scope, a->s_path, NULL);
    if (path == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "path");
        }
        goto error;
    }
    if (!PyUnicode_Check(root) || !PyUnicode_Check(path)) {
        PyErr_SetString(PyExc_TypeError, "ASGI scope: path and root_path must be str");
        goto error;
    }
    if (set_new(environ, a->k_script_name, wsgi_str(root)) < 0) {
        goto error;
    }
    if (PyUnicode_GET_LENGTH(root) > 0 && PyUnicode_Tailmatch(path, root, 0, PY_SSIZE_T_MAX, -1) == 1) {
        PyObject *rest = PyUnicode_Substring(path, PyUnicode_GET_LENGTH(root),
                                             PyUnicode_GET_LENGTH(path));
        if (rest == NULL) {
            goto error;
        }
        v = wsgi_str(rest);
        Py_DECREF(rest);
        if (set_new(environ, a->k_path_info, v) < 0) {
            v = NULL;
            goto error;
        }
        v = NULL;
    }
    else if (set_new(environ, a->k_path_info, wsgi_str(path)) < 0) {
        goto error;
    }
    Py_CLEAR(root);
    Py_CLEAR(path);
    v = scope_get(scope, a->s_query_string, NULL);
    if (v == NULL && PyErr_Occurred()) {
        goto error;
    }
    if (set_new(environ, a->k_query_string, v == NULL ? Py_NewRef(a->s_empty) : latin1(v)) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    server = scope_get(scope, a->s_server, Py_None);
    if (server == NULL) {
        goto error;
    }
    if (server != Py_None) {
        PyObject *host, *port;
        int r;
        /* The list's or tuple's own size (a subclass's __len__ is not asked). */
        if ((!PyTuple_Check(server) && !PyList_Check(server)) ||
            PySequence_Fast_GET_SIZE(server) != 2) {
            PyErr_SetString(PyExc_TypeError, "ASGI scope: server must be a (host, port) pair");
            goto error;
        }
        host = Py_NewRef(PySequence_Fast_GET_ITEM(server, 0));
        port = Py_NewRef(PySequence_Fast_GET_ITEM(server, 1));
        r = set_str_of(environ, a->k_server_name, host);
        if (r == 0) {
            r = port == Py_None ? PyDict_SetItem(environ, a->k_server_port, a->s_empty)
                                : set_str_of(environ, a->k_server_port, port);
        }
        Py_DECREF(host);
        Py_DECREF(port);
        if (r < 0) {
            goto error;
        }
    }
    else {
        if (PyDict_SetItem(environ, a->k_server_name, a->v_localhost) < 0 ||
            set_new(environ, a->k_server_port, PyUnicode_FromString("80")) < 0) {
            goto error;
        }
    }
    Py_CLEAR(server);
    v = scope_get(scope, a->s_http_version, NULL);
    if (v == NULL && PyErr_Occurred()) {
        goto error;
    }
    if (set_new(environ, a->k_server_protocol,
                v == NULL ? PyUnicode_FromString("HTTP/1.1")
                          : PyUnicode_FromFormat("HTTP/%S", v)) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    client = scope_get(scope, a->s_client, Py_None);
    if (client == NULL) {
        goto error;
    }
    if ((PyTuple_Check(client) || PyList_Check(client)) && PySequence_Fast_GET_SIZE(client) == 2) {
        PyObject *addr = Py_NewRef(PySequence_Fast_GET_ITEM(client, 0));
        PyObject *port = Py_NewRef(PySequence_Fast_GET_ITEM(client, 1));
        int r = set_str_of(environ, a->k_remote_addr, addr);
        if (r == 0) {
            r = set_str_of(environ, a->k_remote_port, port);
        }
        Py_DECREF(addr);
        Py_DECREF(port);
        if (r < 0) {
            goto error;
        }
    }
    else if (PyDict_SetItem(environ, a->k_remote_addr, a->s_empty) < 0 ||
             PyDict_SetItem(environ, a->k_remote_port, a->s_empty) < 0) {
        goto error;
    }
    Py_CLEAR(client);
    v = scope_get(scope, a->s_scheme, a->s_http);
    if (v == NULL || PyDict_SetItem(environ, a->k_url_scheme, v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    if (PyDict_SetItem(environ, a->k_wsgi_version, a->v_version) < 0 ||
        PyDict_SetItem(environ, a->k_input, body) < 0 ||
        PyDict_SetItem(environ, a->k_errors, errors) < 0 ||
        PyDict_SetItem(environ, a->k_multithread, Py_True) < 0 ||
        PyDict_SetItem(environ, a->k_multiprocess, Py_True) < 0 ||
        PyDict_SetItem(environ, a->k_run_once, Py_False) < 0 ||
        PyDict_SetItem(environ, a->k_asgi_scope, scope) < 0) {
        goto error;
    }
    v = scope_get(scope, a->s_headers, NULL);
    if (v == NULL && PyErr_Occurred()) {
        goto error;
    }
    if (v != NULL && add_headers(a, environ, v, cache, &has_body, &chunked) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    return Py_BuildValue("(NOO)", environ, has_body ? Py_True : Py_False,
                         chunked ? Py_True : Py_False);
error:
    Py_XDECREF(v);
    Py_XDECREF(root);
    Py_XDECREF(path);
    Py_XDECREF(server);
    Py_XDECREF(client);
    Py_XDECREF(environ);
    return NULL;
}

/* _asgi_start(status, headers) -> (message, content_length or None)
 * WSGI's start_response arguments as an ASGI http.response.start message
 * (see _asgi._start_message, its Python twin). */
PyObject *
fa_asgi_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *status, *headers, *seq = NULL, *list = NULL, *msg = NULL, *code = NULL;
    PyObject *length = Py_None;
    const fa_asgi_state *a = &fa_get_state(module)->asgi;
    const char *st;
    Py_ssize_t stn;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_asgi_start(status, headers)");
        return NULL;
    }
    status = args[0];
    headers = args[1];
    if (!PyUnicode_Check(status)) {
        PyErr_Format(PyExc_TypeError, "WSGI status must be a str, got %R", status);
        return NULL;
    }
    st = PyUnicode_AsUTF8AndSize(status, &stn);
    if (st == NULL) {
        return NULL;
    }
    if (stn < 3 || st[0] < '1' || st[0] > '9' || st[1] < '0' || st[1] > '9' || st[2] < '0' ||
        st[2] > '9' || (stn > 3 && st[3] != ' ')) {
        PyErr_Format(PyExc_ValueError, "invalid WSGI status %R", status);
        return NULL;
    }
    code = PyLong_FromLong((st[0] - '0') * 100 + (st[1] - '0') * 10 + (st[2] - '0'));
    if (code == NULL) {
        return NULL;
    }
    /* A tuple: a list could be changed by the Python code that str
     * subclasses' lower() runs while the pairs are converted. */
    seq = PySequence_Fast(headers, "WSGI headers must be a list of (name, value) pairs");
    if (seq != NULL && PyList_Check(seq)) {
        Py_SETREF(seq, PyList_AsTuple(seq));
    }
    if (seq == NULL) {
        goto error;
    }
    list = PyList_New(PySequence_Fast_GET_SIZE(seq));
    if (list == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name, *value, *lname, *bname, *bvalue, *item;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_Format(PyExc_TypeError, "WSGI headers must be (str, str) pairs, got %R", pair);
            goto error;
        }
        name = PyTuple_GET_ITEM(pair, 0);
        value = PyTuple_GET_ITEM(pair, 1);
        lname = PyObject_CallMethod(name, "lower", NULL);
        if (lname == NULL) {
            goto error;
        }
        if (!PyUnicode_Check(lname)) {
            PyErr_Format(PyExc_TypeError, "WSGI header name %R: lower() returned %R", name, lname);
            Py_DECREF(lname);
            goto error;
        }
        bname = PyUnicode_AsLatin1String(lname);
        bvalue = bname == NULL ? NULL : PyUnicode_AsLatin1String(value);
        if (bvalue == NULL) {
            Py_DECREF(lname);
            Py_XDECREF(bname);
            goto error;
        }
        if (length == Py_None && PyBytes_GET_SIZE(bname) == 14 &&
            memcmp(PyBytes_AS_STRING(bname), "content-length", 14) == 0) {
            PyObject *n = PyLong_FromUnicodeObject(value, 10);
            if (n == NULL) {
                PyErr_Clear(); /* not a number: the server decides */
            }
            else {
                length = n;
            }
        }
        Py_DECREF(lname);
        item = PyTuple_New(2);
        if (item == NULL) {
            Py_DECREF(bname);
            Py_DECREF(bvalue);
            goto error;
        }
        PyTuple_SET_ITEM(item, 0, bname);
        PyTuple_SET_ITEM(item, 1, bvalue);
        PyList_SET_ITEM(list, i, item);
    }
    msg = PyDict_New();
    if (msg == NULL || PyDict_SetItem(msg, a->s_type, a->s_start_type) < 0 ||
        PyDict_SetItem(msg, a->s_status, code) < 0 || PyDict_SetItem(msg, a->s_headers, list) < 0) {
        goto error;
    }
    Py_DECREF(seq);
    Py_DECREF(list);
    Py_DECREF(code);
    return Py_BuildValue("(NN)", msg, length == Py_None ? Py_NewRef(Py_None) : length);
error:
    if (length != Py_None) {
        Py_DECREF(length);
    }
    Py_XDECREF(msg);
    Py_XDECREF(list);
    Py_XDECREF(seq);
    Py_XDECREF(code);
    return NULL;
}
