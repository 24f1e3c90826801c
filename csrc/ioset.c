/* The loop's own epoll set for the fds user code hands it.
 *
 * libuv registers a watched fd with epoll lazily, inside the next uv_run,
 * and calls abort() when that epoll_ctl fails: on a fd closed since (EBADF),
 * or reused by a file epoll refuses (EPERM).  And it can only remove a
 * registration by fd number, so a stale watch on a number that was closed
 * and reused removes the new file's registration.  User code may close
 * any fd at any time (a socket closed while sock_recv waits on it, a
 * library closing the wrong fd, dup2() over a watched fd), and no user
 * mistake may take the whole process down.
 *
 * So libuv never sees a user fd.  Every fd watched for user code (by
 * add_reader & co., the sock_* methods, transports, servers, pipes and the
 * pidfds of subprocesses) is registered here, in an epoll set the loop owns
 * (ioset_fd), with epoll_ctl called at once and its errors handled, as
 * asyncio's EpollSelector does.  libuv watches that set's fd like any
 * other internal fd (the timerfd, the signal pipe): when the set has ready
 * fds, the loop collects them with epoll_wait(ioset_fd, timeout 0).
 *
 * - Tokens.  An event carries (generation << 32 | slot), not the fd
 *   number: an event for a registration dropped since (a fd closed while
 *   another process or a dup still holds its file, so the kernel keeps it
 *   in the set and the number can no longer remove it) is recognised and
 *   never delivered to the fd number's new owner.  If such events come,
 *   the set is rebuilt with only the live registrations.
 * - One registration per fd number (io_byfd).  Registering a number held
 *   by another registration first checks that one with EPOLL_CTL_MOD: if
 *   its fd no longer refers to the file it registered (MOD fails), it is
 *   dropped and its owner told; otherwise the new one is refused.  So
 *   EPOLL_CTL_DEL by number can only remove the registration it means.
 * - Identity.  A transport whose watch stops and starts again (pause and
 *   resume reading) keeps the identity (st_dev, st_ino) of its file, so a
 *   number closed and reused meanwhile is not registered for the wrong
 *   file.
 * - The sweep.  A fd closed while watched simply stops producing events:
 *   asyncio's operation waits forever.  A timerfd in the set checks the
 *   registrations every sweep_interval seconds (at most SWEEP_BATCH of them
 *   per tick, round robin) with EPOLL_CTL_MOD, so a sock_* call or a
 *   transport whose fd was closed ends with a clear OSError instead.
 *   What an owner watches outside the set (a transport whose watch is
 *   stopped) is checked with it, by the sweeper module.c registers.
 * - Owners.  The set knows a registration's owner (a watcher, a
 *   transport) only through the callbacks the registration points at
 *   (fa_reg_ops): the fd's events and its loss go up through them.
 *
 * Everything here runs with the GIL held. */
#include "ioset.h"
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define SWEEP_BATCH 1024
#define HARVEST_MAX 256
#define HARVEST_ROUNDS 4

/* ------------------------------------------------------------ identity */

void
fa_reg_init(fa_reg *r, int fd, const fa_reg_ops *ops, int identify)
{
    struct stat sb;
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->ops = ops;
    if (identify && fd >= 0 && fstat(fd, &sb) == 0) {
        r->dev = sb.st_dev;
        r->ino = sb.st_ino;
        r->has_id = 1;
    }
}

/* 1 if r->fd still refers to the file it was watched for (or r has no
 * identity), else FA_REG_CLOSED or FA_REG_REPLACED. */
int
fa_reg_same_file(fa_reg *r)
{
    struct stat sb;
    if (!r->has_id) {
        return 1;
    }
    if (fstat(r->fd, &sb) < 0) {
        return errno == EBADF ? FA_REG_CLOSED : 1;
    }
    return (sb.st_dev == r->dev && sb.st_ino == r->ino) ? 1 : FA_REG_REPLACED;
}

/* ------------------------------------------------------------ tables */

static inline uint64_t
token_of(fa_loop *L, uint32_t slot)
{
    return ((uint64_t)L->io_gen[slot] << 32) | slot;
}

static int
slot_alloc(fa_loop *L, fa_reg *r)
{
    uint32_t slot;
    if (L->io_nfree > 0) {
        slot = L->io_free[--L->io_nfree];
    }
    else {
        if (L->io_nslot == L->io_capslot) {
            uint32_t ncap = L->io_capslot ? L->io_capslot * 2 : 64;
            fa_reg **ns = PyMem_Realloc(L->io_slot, ncap * sizeof(*ns));
            if (ns == NULL) {
                return -ENOMEM;
            }
            L->io_slot = ns;
            uint32_t *ng = PyMem_Realloc(L->io_gen, ncap * sizeof(*ng));
            if (ng == NULL) {
                return -ENOMEM;
            }
            L->io_gen = ng;
            uint32_t *nf = PyMem_Realloc(L->io_free, ncap * sizeof(*nf));
            if (nf == NULL) {
                return -ENOMEM;
            }
            L->io_free = nf;
            L->io_capslot = ncap;
        }
        if (L->io_nslot == 0) {
            /* Slot 0 is the sweep timer's token: never a registration. */
            L->io_slot[0] = NULL;
            L->io_gen[0] = 0;
            L->io_nslot = 1;
        }
        slot = L->io_nslot++;
        L->io_gen[slot] = 1;
    }
    L->io_slot[slot] = r;
    r->slot = slot;
    return 0;
}

static void
slot_free(fa_loop *L, fa_reg *r)
{
    uint32_t slot = r->slot;
    if (slot == 0 || slot >= L->io_nslot || L->io_slot[slot] != r) {
        return;
    }
    L->io_slot[slot] = NULL;
    L->io_gen[slot]++; /* late events for this slot are recognised as stale */
    if (L->io_gen[slot] == 0) {
        L->io_gen[slot] = 1;
    }
    L->io_free[L->io_nfree++] = slot; /* io_free has io_capslot entries */
    r->slot = 0;
}

static int
byfd_reserve(fa_loop *L, int fd)
{
    if (fd < L->io_byfd_cap) {
        return 0;
    }
    int ncap = L->io_byfd_cap ? L->io_byfd_cap : 64;
    while (ncap <= fd) {
        ncap *= 2;
    }
    fa_reg **nb = PyMem_Realloc(L->io_byfd, (size_t)ncap * sizeof(*nb));
    if (nb == NULL) {
        return -ENOMEM;
    }
    memset(nb + L->io_byfd_cap, 0, (size_t)(ncap - L->io_byfd_cap) * sizeof(*nb));
    L->io_byfd = nb;
    L->io_byfd_cap = ncap;
    return 0;
}

static inline fa_reg *
byfd_get(fa_loop *L, int fd)
{
    return fd >= 0 && fd < L->io_byfd_cap ? L->io_byfd[fd] : NULL;
}

/* Forget r's registration (the kernel side is the caller's business). */
static void
forget(fa_loop *L, fa_reg *r)
{
    if (r->events == 0) {
        return;
    }
    if (byfd_get(L, r->fd) == r) {
        L->io_byfd[r->fd] = NULL;
    }
    slot_free(L, r);
    r->events = 0;
    L->n_watch--;
}

/* ------------------------------------------------------------ the set */

static void on_ioset(uv_poll_t *p, int status, int events);

static int
arm_sweep(fa_loop *L)
{
    struct itimerspec its;
    double iv = L->sweep_interval;
    memset(&its, 0, sizeof(its));
    if (iv > 0.0 && isfinite(iv)) {
        its.it_value.tv_sec = (time_t)floor(iv);
        its.it_value.tv_nsec = (long)((iv - floor(iv)) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) {
            its.it_value.tv_nsec = 1;
        }
        its.it_interval = its.it_value;
    }
    if (timerfd_settime(L->sweep_fd, 0, &its, NULL) < 0) {
        return -errno;
    }
    L->sweep_armed = iv > 0.0 && isfinite(iv);
    return 0;
}

/* Create the set, with the sweep timer in it, and have libuv watch it.
 * Made with the loop (fa_ioset_init), so that a loop's fds do not grow
 * while it runs; later only if that failed. */
static int
ensure_set(fa_loop *L)
{
    struct epoll_event ev;
    int r;
    if (L->ioset_fd >= 0) {
        return 0;
    }
    if (!L->uv_ready || L->closed) {
        return -EBADF;
    }
    L->ioset_fd = epoll_create1(EPOLL_CLOEXEC);
    if (L->ioset_fd < 0) {
        return -errno;
    }
    L->sweep_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (L->sweep_fd < 0) {
        r = -errno;
        goto fail;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = 0; /* slot 0: the sweep */
    if (epoll_ctl(L->ioset_fd, EPOLL_CTL_ADD, L->sweep_fd, &ev) < 0) {
        r = -errno;
        goto fail;
    }
    r = uv_poll_init(&L->uv, &L->ioset_poll, L->ioset_fd);
    if (r < 0) {
        goto fail;
    }
    L->ioset_poll.data = L;
    uv_poll_start(&L->ioset_poll, UV_READABLE, on_ioset);
    uv_unref((uv_handle_t *)&L->ioset_poll);
    L->ioset_poll_ready = 1;
    /* libuv adds the set to its own epoll on the next uv_run: the app
     * loop's home thread must get there before it polls (runner.c). */
    L->io_dirty = 1;
    fa_app_wake(L);
    return 0;

fail:
    if (L->sweep_fd >= 0) {
        close(L->sweep_fd);
        L->sweep_fd = -1;
    }
    close(L->ioset_fd);
    L->ioset_fd = -1;
    return r;
}

/* r lost its fd: drop it from the set and tell its owner. */
static void
lose(fa_loop *L, fa_reg *r, int reason)
{
    /* Nothing to remove from the set: the kernel dropped the registration
     * with its file, unless another descriptor (a dup, a forked child)
     * keeps that file open; then the number cannot remove it any more,
     * only its token tells its late events apart, and the set is rebuilt
     * when they come. */
    forget(L, r);
    r->ops->lost(r, reason);
}

/* Whether r, registered in the set, still watches the file its fd number
 * refers to: EPOLL_CTL_MOD finds the registration of (that file, fd).
 * Returns 0, or FA_REG_CLOSED / FA_REG_REPLACED after dropping r. */
int
fa_ioset_probe(fa_loop *L, fa_reg *r)
{
    struct epoll_event ev;
    if (r->events == 0 || L->ioset_fd < 0 || fa_loop_forked(L)) {
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = r->events;
    ev.data.u64 = token_of(L, r->slot);
    if (epoll_ctl(L->ioset_fd, EPOLL_CTL_MOD, r->fd, &ev) == 0) {
        return 0;
    }
    if (errno == ENOMEM) {
        return 0; /* says nothing about the fd */
    }
    int reason = errno == EBADF ? FA_REG_CLOSED : FA_REG_REPLACED;
    lose(L, r, reason);
    return reason;
}

/* Watch r->fd for `events` (EPOLLIN | EPOLLOUT; 0 stops).  Returns 0;
 * FA_REG_CLOSED / FA_REG_REPLACED if the fd no longer refers to r's file
 * (r is dropped and its owner told); -EEXIST if another live watch of this
 * loop has the fd; else -errno from epoll_ctl (EBADF: a closed fd never
 * watched, EPERM: a regular file), with nothing registered.  Never raises. */
int
fa_ioset_set(fa_loop *L, fa_reg *r, uint32_t events)
{
    struct epoll_event ev;
    int rc;

    if (events == r->events) {
        return 0;
    }
    if (fa_loop_forked(L)) {
        /* The set is shared with the parent process: never touch it. */
        forget(L, r);
        return events ? -EBADF : 0;
    }
    if (events == 0) {
        if (byfd_get(L, r->fd) == r && L->ioset_fd >= 0) {
            memset(&ev, 0, sizeof(ev));
            /* Errors say the fd is gone, which is what we want. */
            (void)epoll_ctl(L->ioset_fd, EPOLL_CTL_DEL, r->fd, &ev);
        }
        forget(L, r);
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    if (r->events != 0) {
        ev.data.u64 = token_of(L, r->slot);
        if (epoll_ctl(L->ioset_fd, EPOLL_CTL_MOD, r->fd, &ev) == 0) {
            r->events = events;
            return 0;
        }
        if (errno == ENOMEM) {
            return -ENOMEM;
        }
        rc = errno == EBADF ? FA_REG_CLOSED : FA_REG_REPLACED;
        lose(L, r, rc);
        return rc;
    }
    if ((rc = ensure_set(L)) < 0) {
        return rc;
    }
    if ((rc = byfd_reserve(L, r->fd)) < 0) {
        return rc;
    }
    fa_reg *other = L->io_byfd[r->fd];
    if (other != NULL && other != r) {
        /* Only one registration per number: is the other one still the
         * file at this number? */
        if (fa_ioset_probe(L, other) == 0) {
            return -EEXIST;
        }
    }
    rc = fa_reg_same_file(r);
    if (rc != 1) {
        if (!r->ops->closed_is_lost && rc == FA_REG_CLOSED) {
            return -EBADF; /* never registered: add_reader raises, as asyncio */
        }
        lose(L, r, rc);
        return rc;
    }
    if ((rc = slot_alloc(L, r)) < 0) {
        return rc;
    }
    ev.data.u64 = token_of(L, r->slot);
    if (epoll_ctl(L->ioset_fd, EPOLL_CTL_ADD, r->fd, &ev) < 0) {
        rc = -errno;
        slot_free(L, r);
        if (rc == -EEXIST) {
            /* The file is in the set under a registration we dropped
             * (its number closed while a dup kept it open, then reused
             * by a dup of the same file): take it over. */
            if (epoll_ctl(L->ioset_fd, EPOLL_CTL_DEL, r->fd, &ev) == 0 &&
                slot_alloc(L, r) == 0) {
                ev.data.u64 = token_of(L, r->slot);
                if (epoll_ctl(L->ioset_fd, EPOLL_CTL_ADD, r->fd, &ev) == 0) {
                    goto added;
                }
                rc = -errno;
                slot_free(L, r);
            }
        }
        if (r->ops->closed_is_lost && rc == -EBADF) {
            lose(L, r, FA_REG_CLOSED);
            return FA_REG_CLOSED;
        }
        return rc;
    }
added:
    L->io_byfd[r->fd] = r;
    r->events = events;
    L->n_watch++;
    if (!L->sweep_armed && L->sweep_interval > 0.0) {
        (void)arm_sweep(L);
    }
    return 0;
}

/* The exception for a lost fd: an OSError(EBADF) saying what happened. */
PyObject *
fa_ioset_lost_error(int fd, int reason)
{
    PyObject *msg, *exc;
    if (reason == FA_REG_REPLACED) {
        msg = PyUnicode_FromFormat("Bad file descriptor: fd %d was closed and now refers "
                                   "to another file (closed and reused, or dup2() over it) "
                                   "while the event loop watched it", fd);
    }
    else {
        msg = PyUnicode_FromFormat("Bad file descriptor: fd %d was closed while the event "
                                   "loop watched it", fd);
    }
    if (msg == NULL) {
        return NULL;
    }
    exc = PyObject_CallFunction(PyExc_OSError, "iN", EBADF, msg);
    return exc;
}

/* Raise the Python exception for a failed fa_ioset_set (rc < 0). */
int
fa_ioset_raise(fa_loop *L, fa_reg *r, int rc)
{
    (void)L;
    if (rc == -EEXIST) {
        PyErr_Format(PyExc_RuntimeError,
                     "File descriptor %d is used by another watcher of this loop "
                     "(add_reader/add_writer or a sock_* call in progress)", r->fd);
        return -1;
    }
    if (rc == FA_REG_CLOSED || rc == FA_REG_REPLACED) {
        PyObject *exc = fa_ioset_lost_error(r->fd, rc);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return -1;
    }
    if (fa_loop_forked(L)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this event loop was created before fork(): make a new one in the "
                        "child process");
        return -1;
    }
    errno = -rc;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* ------------------------------------------------------------ events */

/* What the owners check outside the set (fa_ioset_set_sweeper). */
static const fa_ioset_sweeper *sweeper;

void
fa_ioset_set_sweeper(const fa_ioset_sweeper *s)
{
    sweeper = s;
}

/* The periodic check: probe up to SWEEP_BATCH registrations, round robin,
 * then what the sweeper watches outside the set. */
static void
sweep(fa_loop *L)
{
    uint64_t ticks;
    (void)read(L->sweep_fd, &ticks, sizeof(ticks));
    if (L->n_watch == 0 && (sweeper == NULL || !sweeper->any(L))) {
        struct itimerspec off;
        memset(&off, 0, sizeof(off));
        (void)timerfd_settime(L->sweep_fd, 0, &off, NULL);
        L->sweep_armed = 0;
        return;
    }
    uint32_t n = L->io_nslot, done = 0;
    for (uint32_t i = 0; i < n && done < SWEEP_BATCH; i++) {
        uint32_t slot = (L->sweep_cursor + i) % n;
        fa_reg *r = L->io_slot[slot];
        if (slot == 0 || r == NULL) {
            continue;
        }
        done++;
        (void)fa_ioset_probe(L, r);
        n = L->io_nslot;
    }
    L->sweep_cursor = n ? (L->sweep_cursor + SWEEP_BATCH) % n : 0;
    if (sweeper != NULL) {
        sweeper->check(L);
    }
}

/* Rebuild the set with only the live registrations: late events came for
 * a registration whose fd number can no longer remove it. */
static void
rebuild(fa_loop *L)
{
    struct epoll_event ev;
    int nfd = epoll_create1(EPOLL_CLOEXEC);
    L->ioset_junk = 0;
    if (nfd < 0) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(nfd, EPOLL_CTL_ADD, L->sweep_fd, &ev) < 0) {
        close(nfd);
        return;
    }
    for (uint32_t slot = 1; slot < L->io_nslot; slot++) {
        fa_reg *r = L->io_slot[slot];
        if (r == NULL) {
            continue;
        }
        ev.events = r->events;
        ev.data.u64 = token_of(L, slot);
        if (epoll_ctl(nfd, EPOLL_CTL_ADD, r->fd, &ev) < 0) {
            lose(L, r, errno == EBADF ? FA_REG_CLOSED : FA_REG_REPLACED);
        }
    }
    /* Same number, new set: libuv must register the new file (its old
     * registration went with the old set). */
    if (dup3(nfd, L->ioset_fd, O_CLOEXEC) < 0) {
        close(nfd);
        return;
    }
    close(nfd);
    uv_poll_start(&L->ioset_poll, UV_READABLE, on_ioset);
    L->io_dirty = 1;
    fa_app_wake(L);
}

static void
dispatch(fa_loop *L, uint64_t token, uint32_t events)
{
    uint32_t slot = (uint32_t)token, gen = (uint32_t)(token >> 32);
    fa_reg *r;
    if (token == 0) {
        sweep(L);
        return;
    }
    if (slot >= L->io_nslot || L->io_gen[slot] != gen || (r = L->io_slot[slot]) == NULL) {
        L->ioset_junk = 1;
        return;
    }
    r->ops->on_events(r, events);
}

/* Queue the Handles of the ready fds. */
void
fa_ioset_harvest(fa_loop *L)
{
    struct epoll_event evs[HARVEST_MAX];
    if (L->ioset_fd < 0 || fa_loop_forked(L)) {
        return;
    }
    for (int round = 0; round < HARVEST_ROUNDS; round++) {
        int n = epoll_wait(L->ioset_fd, evs, HARVEST_MAX, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        for (int i = 0; i < n; i++) {
            dispatch(L, evs[i].data.u64, evs[i].events);
        }
        if (n < HARVEST_MAX) {
            break;
        }
    }
    if (L->ioset_junk) {
        rebuild(L);
    }
    if (PyErr_Occurred()) {
        /* Growing the ready queue failed (MemoryError); the fds are
         * level-triggered and come back next time. */
        PyErr_WriteUnraisable((PyObject *)L);
    }
}

static void
on_ioset(uv_poll_t *p, int status, int events)
{
    fa_loop *L = (fa_loop *)p->data;
    (void)status;
    (void)events;
    fa_loop_gil_ensure(L);
    fa_ioset_harvest(L);
}

/* ------------------------------------------------------------ life */

/* loop._watched_fds(): the fds in the set now, sorted (for tests). */
PyObject *
fa_ioset_watched(fa_loop *L)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (int fd = 0; fd < L->io_byfd_cap; fd++) {
        if (L->io_byfd[fd] != NULL) {
            PyObject *v = PyLong_FromLong(fd);
            if (v == NULL || PyList_Append(list, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(v);
        }
    }
    return list;
}

/* With the loop, before its first uv_run. */
int
fa_ioset_init(fa_loop *L)
{
    int rc = ensure_set(L);
    if (rc < 0) {
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

int
fa_ioset_set_interval(fa_loop *L, double seconds)
{
    L->sweep_interval = seconds;
    if (L->sweep_fd >= 0 && !fa_loop_forked(L)) {
        if (L->n_watch > 0 || L->sweep_armed) {
            int rc = arm_sweep(L);
            if (rc < 0) {
                errno = -rc;
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
        }
    }
    return 0;
}

/* With the loop: close the set (libuv's handle on it was closed first, or
 * belongs to the parent process after fork). */
void
fa_ioset_free(fa_loop *L)
{
    if (L->ioset_fd >= 0) {
        close(L->ioset_fd);
        L->ioset_fd = -1;
    }
    if (L->sweep_fd >= 0) {
        close(L->sweep_fd);
        L->sweep_fd = -1;
    }
    for (uint32_t slot = 1; slot < L->io_nslot; slot++) {
        fa_reg *r = L->io_slot[slot];
        if (r != NULL) {
            r->events = 0;
            r->slot = 0;
        }
    }
    PyMem_Free(L->io_slot);
    PyMem_Free(L->io_gen);
    PyMem_Free(L->io_free);
    PyMem_Free(L->io_byfd);
    L->io_slot = NULL;
    L->io_gen = NULL;
    L->io_free = NULL;
    L->io_byfd = NULL;
    L->io_nslot = L->io_capslot = L->io_nfree = 0;
    L->io_byfd_cap = 0;
    L->n_watch = 0;
    L->sweep_armed = 0;
}
