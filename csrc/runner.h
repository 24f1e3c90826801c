/* flaskasync internal: the runner (runner.c), flaskasync.run() on the
 * process's app loop.  What it keeps in each loop is here; only runner.c
 * reads or writes it, except through the inline entry points that follow
 * struct fa_loop in fa.h (fa_app_wake() and its friends), which read the
 * two fields the loop's hot paths need.  Nothing here is public API. */
#ifndef FLASKASYNC_RUNNER_H
#define FLASKASYNC_RUNNER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

struct fa_job;

/* The runner's state in a loop, embedded in fa_loop as `runner`.  All
 * zero for a loop the runner never used.  The baton protocol is described
 * at the top of runner.c. */
typedef struct fa_runner {
    /* Read by fa_app_idle() on every call_soon: the first two fields, next
     * to each other. */
    int is_app;                  /* the app loop of flaskasync.run() */
    atomic_int baton;            /* 1 while some thread drives the loop */
    int adopted;                 /* a running loop adopted as the app loop (ASGI) */
    atomic_int home_missed;      /* home thread found the baton taken */
    atomic_int home_stop;        /* the home thread must exit */
    int home_started;            /* home_thread and home_sem exist */
    sem_t home_sem;              /* posted by a driver that saw home_missed */
    pthread_t home_thread;
    struct fa_job *jobs;         /* jobs whose caller waits (GIL-protected) */
} fa_runner;

#endif
