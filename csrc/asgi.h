/* flaskasync internal: ASGI mode's per-request conversions (asgi.c) and
 * their state in the module. */
#ifndef FLASKASYNC_ASGI_H
#define FLASKASYNC_ASGI_H

#include "fa.h"

typedef struct fa_state fa_state;

/* asgi.c's interned environ keys (k_) and scope names (s_), and the
 * constant str values it puts in environs (v_): (field, text), the one list
 * that declares, makes and clears them. */
#define FA_ASGI_NAMES(X)                                                                   \
    X(k_method, "REQUEST_METHOD") X(k_script_name, "SCRIPT_NAME")                         \
    X(k_path_info, "PATH_INFO") X(k_query_string, "QUERY_STRING")                         \
    X(k_server_name, "SERVER_NAME") X(k_server_port, "SERVER_PORT")                       \
    X(k_server_protocol, "SERVER_PROTOCOL") X(k_remote_addr, "REMOTE_ADDR")               \
    X(k_remote_port, "REMOTE_PORT") X(k_wsgi_version, "wsgi.version")                     \
    X(k_url_scheme, "wsgi.url_scheme") X(k_input, "wsgi.input")                           \
    X(k_errors, "wsgi.errors") X(k_multithread, "wsgi.multithread")                       \
    X(k_multiprocess, "wsgi.multiprocess") X(k_run_once, "wsgi.run_once")                 \
    X(k_asgi_scope, "asgi.scope") X(k_http_cookie, "HTTP_COOKIE")                         \
    X(s_root_path, "root_path") X(s_path, "path") X(s_query_string, "query_string")       \
    X(s_server, "server") X(s_client, "client") X(s_http_version, "http_version")         \
    X(s_scheme, "scheme") X(s_headers, "headers") X(s_type, "type") X(s_status, "status") \
    X(s_start_type, "http.response.start") X(s_http, "http") X(s_empty, "")               \
    X(s_method, "method") X(v_localhost, "localhost")

/* State of the ASGI conversions (asgi.c), made by fa_asgi_init at module
 * exec. */
typedef struct {
#define FA_ASGI_FIELD(field, text) PyObject *field;
    FA_ASGI_NAMES(FA_ASGI_FIELD)
#undef FA_ASGI_FIELD
    PyObject *v_version;         /* (1, 0): wsgi.version */
} fa_asgi_state;

/* asgi.c: ASGI mode's per-request conversions */
int fa_asgi_init(fa_state *st);
void fa_asgi_clear(fa_state *st);
PyObject *fa_asgi_environ(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *fa_asgi_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif /* FLASKASYNC_ASGI_H */
