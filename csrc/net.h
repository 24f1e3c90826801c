/* flaskasync internal: the network layer's shared state (op.c, dns.c,
 * sock.c, and the transports' names and types), kept in the module state,
 * and what module.c takes from each of its files (op.c, dns.c, sock.c,
 * stream.c, udp.c). */
#ifndef FLASKASYNC_NET_H
#define FLASKASYNC_NET_H

#include "fa.h"

typedef struct fa_state fa_state;
typedef struct fa_loop fa_loop;

/* State of the network methods (op.c, dns.c, sock.c), set up by
 * fa_net_init at import time. */
typedef struct {
    PyTypeObject *OpType;
    PyObject *gaierror;            /* socket.gaierror */
    PyObject *AddressFamily;       /* socket.AddressFamily */
    PyObject *SocketKind;          /* socket.SocketKind */
    PyObject *SSLSocket;           /* ssl.SSLSocket, looked up once ssl is imported */
    PyObject *UnsupportedOperation;   /* io.UnsupportedOperation */
    PyObject *SendfileNotAvailableError;
    PyObject *k_loop;              /* ("loop",): keyword names of Future(loop=) */
    PyObject *k_gai;               /* ("family", "type", "proto", "flags") */
    PyObject *s_recv, *s_recv_into, *s_recvfrom, *s_recvfrom_into, *s_send,
        *s_sendto, *s_connect, *s_accept, *s_fileno, *s_gettimeout,
        *s_getsockopt, *s_setblocking, *s_family, *s_type, *s_proto,
        *s_getaddrinfo, *s_throw, *s_close, *s_ssl, *s_mode, *s_readinto,
        *s_run_in_executor, *s_sock_sendall, *s_data_received, *s_get_buffer,
        *s_buffer_updated, *s_connection_lost;
    PyTypeObject *StreamType;      /* stream.c: StreamTransport */
    PyObject *BufferedProtocol;    /* asyncio.BufferedProtocol */
    PyObject *set_result_unless_cancelled; /* asyncio.futures._set_result_unless_cancelled */
    PyObject *logger;              /* asyncio's logger */
    PyObject *minus_one;           /* -1, get_buffer's argument */
    PyTypeObject *DatagramType;    /* udp.c: DatagramTransport */
    PyObject *s_datagram_received, *s_error_received; /* udp.c: interned names */
    PyObject *udp_max_size;        /* udp.c: 256 KiB, recvfrom()'s argument */
    int detach_takes_transport;    /* asyncio's Server._detach(transport) (3.13+) */
} fa_net_state;

/* op.c: set up and drop the state above, at module exec and clear. */
int fa_net_init(PyObject *module, fa_state *st);
int fa_net_traverse(fa_state *st, visitproc visit, void *arg);
void fa_net_clear(fa_state *st);

/* dns.c */
extern PyMethodDef fa_dns_loop_methods[];   /* getaddrinfo, getnameinfo */
void fa_dns_cancel_all(fa_loop *self);
int fa_net_gaierror(fa_state *st, int status);

/* sock.c */
extern PyMethodDef fa_sock_loop_methods[];   /* sock_recv & co. */

/* stream.c: the stream transport type (made at module exec) */
int fa_stream_init(PyObject *module, fa_state *st);
int fa_stream_traverse(fa_state *st, visitproc visit, void *arg);
void fa_stream_clear(fa_state *st);

/* udp.c */
int fa_udp_init(PyObject *module, fa_state *st);
int fa_udp_traverse(fa_state *st, visitproc visit, void *arg);
void fa_udp_clear(fa_state *st);

#endif /* FLASKASYNC_NET_H */
