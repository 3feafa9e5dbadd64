/*
 * gil_cond.c's entry points, for gil_probe.c (which finds it with dlsym: it lives in the executable or in the
 * preloaded libponte-gil.so).
 */
#ifndef PT_GIL_COND_H
#define PT_GIL_COND_H

#include <pthread.h>

/* What the GIL's condition variables tell, as the functions of gil.c that record it. */
typedef struct {
    void (*wait)(void);         /* a thread starts waiting for the GIL */
    void (*wait_timeout)(void); /* its wait timed out: it will ask the holder to drop */
    void (*taken)(void);        /* a thread took it */
    void (*dropped)(void);      /* a thread released it */
    void (*forced)(void);       /* a holder asked to drop waits until another thread has it */
} pt_gil_cond_events_t;

/* Watches these two condition variables, telling ev; NULL, NULL, NULL watches none. 0, or -1 if glibc's functions
 * were not found. */
typedef int pt_gil_cond_watch_fn(pthread_cond_t *cond, pthread_cond_t *switch_cond, const pt_gil_cond_events_t *ev);
pt_gil_cond_watch_fn pt_gil_cond_watch;

/* Without a GIL (free-threaded CPython) threads wait for a lock instead: a PyMutex or critical section someone
 * else holds, a threading.Lock, a stop-the-world pause. Each such wait parks the thread in CPython's parking lot,
 * whose wait on Linux is a semaphore's (Python/parking_lot.c: sem_clockwait, else sem_timedwait or sem_wait). */
typedef struct {
    void (*parked)(void);   /* a thread starts waiting on a semaphore */
    void (*unparked)(void); /* its wait ended */
} pt_gil_park_events_t;
/* Tells ev of every semaphore wait; NULL stops. 0, or -1 if glibc's functions were not found. */
typedef int pt_gil_park_watch_fn(const pt_gil_park_events_t *ev);
pt_gil_park_watch_fn pt_gil_park_watch;

/* Calibration: with seen, starts noting (up to max) the condition variables the calling thread signals; with NULL,
 * stops and returns how many it noted. -1 if glibc's functions were not found. Not re-entrant: one caller, once. */
typedef int pt_gil_cond_calibrate_fn(pthread_cond_t **seen, int max);
pt_gil_cond_calibrate_fn pt_gil_cond_calibrate;

#endif
