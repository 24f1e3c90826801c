/* flaskasync internal: the loop's own epoll set for user fds (ioset.c),
 * and the registrations its owners (watcher.c, transport.c) keep in it. */
#ifndef FLASKASYNC_IOSET_H
#define FLASKASYNC_IOSET_H

#include "fa.h"

#include <stdint.h>
#include <sys/types.h>

typedef struct fa_loop fa_loop;

/* An fd the loop watches for user code (add_reader & co., sock_*, a
 * transport), registered in the loop's own epoll set (ioset.c), never in
 * libuv's: libuv aborts the process when its deferred epoll_ctl meets a fd
 * that was closed since, and user code may close any fd at any time. */
typedef struct fa_reg fa_reg;

/* What a registration's owner (watcher.c, transport.c) does with what the
 * set finds, instead of the set knowing its owners: each owner points its
 * registrations at its own constant table (fa_reg_init). */
typedef struct fa_reg_ops {
    /* The fd is ready: the events as epoll reports them. */
    void (*on_events)(fa_reg *r, uint32_t events);
    /* The set found the fd closed or replaced (FA_REG_CLOSED,
     * FA_REG_REPLACED) and dropped the registration. */
    void (*lost)(fa_reg *r, int reason);
    /* A closed fd met when the registration is added to the set: 1 if that
     * is the owner's fd lost (a transport's socket closed behind its back:
     * told through lost, and fa_ioset_set() returns FA_REG_CLOSED), 0 if
     * the registration is refused with -EBADF (add_reader() on a closed fd
     * raises, as asyncio's). */
    int closed_is_lost;
} fa_reg_ops;

struct fa_reg {
    const fa_reg_ops *ops;       /* the owner's callbacks */
    int fd;                      /* the fd number, as it was watched */
    uint32_t events;             /* EPOLLIN | EPOLLOUT in the set; 0: not in it */
    uint32_t slot;               /* token slot while in the set */
    unsigned char has_id;        /* dev/ino: the file the fd referred to */
    dev_t dev;
    ino_t ino;
};

/* fa_ioset_set() results besides 0 and -errno: the fd no longer refers to
 * the file it was watched for.  The registration is dropped and its owner
 * told (its ops' lost). */
#define FA_REG_CLOSED (-100001)   /* the fd was closed */
#define FA_REG_REPLACED (-100002) /* the fd number now refers to another file */

/* ioset.c: the loop's own epoll set for user fds. */
int fa_ioset_set(fa_loop *self, fa_reg *r, uint32_t events);
int fa_ioset_probe(fa_loop *self, fa_reg *r);
int fa_ioset_raise(fa_loop *self, fa_reg *r, int rc);
PyObject *fa_ioset_lost_error(int fd, int reason);
void fa_reg_init(fa_reg *r, int fd, const fa_reg_ops *ops, int identify);
int fa_reg_same_file(fa_reg *r);
void fa_ioset_harvest(fa_loop *self);
void fa_ioset_free(fa_loop *self);
int fa_ioset_init(fa_loop *self);
PyObject *fa_ioset_watched(fa_loop *self);
int fa_ioset_set_interval(fa_loop *self, double seconds);

/* What an owner watches for the sweep outside the set (transports whose
 * watch is stopped: reading paused, nothing to write), checked after each
 * batch of the set's registrations.  One for the process, registered by
 * module.c at exec (transport.c's fa_transport_sweeper), as the loop's
 * hooks are. */
typedef struct fa_ioset_sweeper {
    int (*any)(fa_loop *self);     /* anything to check: keeps the sweep going */
    void (*check)(fa_loop *self);  /* check it, telling owners of a lost fd */
} fa_ioset_sweeper;
void fa_ioset_set_sweeper(const fa_ioset_sweeper *sweeper);

#endif /* FLASKASYNC_IOSET_H */
