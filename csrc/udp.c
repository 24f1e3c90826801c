/* Datagram (UDP and Unix datagram) transports in C.  Being written: see
 * flaskasync/_udp.py for create_datagram_endpoint. */
#include "fa.h"

/* Create and register the datagram transport type(s) on the module.
 * Returns 0, or -1 with an exception. */
int
fa_udp_init(PyObject *module, fa_state *st)
{
    (void)module;
    (void)st;
    return 0;
}
