/*
 * Where the GIL probe meets the interpreter: pthread_cond_signal, _wait and _timedwait, defined where the
 * interpreter's calls land first, each passing the call on to glibc's after noting it when the condition variable
 * is one of the GIL's two (gil_probe.c says which, and what each call means). And, for a free-threaded CPython,
 * sem_clockwait, sem_timedwait and sem_wait, where its parking lot puts a thread that waits for a lock.
 *
 * No Python here, and nothing else: this file is linked into the ponte executable (which the dynamic linker
 * searches first, so the libpython linked into it calls these), and built alone as libponte-gil.so, which the
 * executable puts in LD_PRELOAD when it runs ponte inside /usr/bin/python3 (gateway/host.c). Preloaded into any
 * other program (a subprocess that inherits it, valgrind's launcher), it watches nothing and costs one comparison
 * per call. gil_probe.c finds pt_gil_cond_watch with dlsym, so either copy serves.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include "gil_cond.h"

#if defined(__SANITIZE_THREAD__)
#define PT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PT_TSAN 1
#endif
#endif

typedef int (*signal_fn)(pthread_cond_t *);
typedef int (*wait_fn)(pthread_cond_t *, pthread_mutex_t *);
typedef int (*timedwait_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);

static signal_fn real_signal;
static wait_fn real_wait;
static timedwait_fn real_timedwait;

/* The two GIL condition variables, NULL while nothing is watched, and what to tell of them. The probe sets them
 * while the interpreter's threads run: atomics, events set before the two, and what it points to before it. */
static _Atomic(pthread_cond_t *) gil_cond;
static _Atomic(pthread_cond_t *) gil_switch_cond;
static _Atomic(const pt_gil_cond_events_t *) events;
#define LOAD(x) atomic_load_explicit(&(x), memory_order_acquire)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_release)

/* Calibration (pt_gil_cond_calibrate): which condition variables one thread signals. */
static struct {
    volatile int on;
    pthread_t thread;
    pthread_cond_t **seen;
    int max, n;
} calibration;

static pthread_once_t resolved = PTHREAD_ONCE_INIT;
static pthread_once_t sem_resolved = PTHREAD_ONCE_INIT;

static void
find_cond_functions(void)
{
#ifdef PT_TSAN
    /* ThreadSanitizer's runtime, loaded before glibc, defines these without a version: the next definition is its
     * interceptor, which must see each wait give the mutex up and take it back (else the next thread to lock it
     * is reported as locking a mutex already held). */
    real_signal = (signal_fn)dlsym(RTLD_NEXT, "pthread_cond_signal");
    real_wait = (wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait");
    real_timedwait = (timedwait_fn)dlsym(RTLD_NEXT, "pthread_cond_timedwait");
#else
    /* GLIBC_2.3.2 is the version libpython links against (nm -D shows pthread_cond_signal@GLIBC_2.3.2). */
    real_signal = (signal_fn)dlvsym(RTLD_NEXT, "pthread_cond_signal", "GLIBC_2.3.2");
    real_wait = (wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
    real_timedwait = (timedwait_fn)dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    if (real_signal == NULL || real_wait == NULL || real_timedwait == NULL) {
        real_signal = (signal_fn)dlsym(RTLD_NEXT, "pthread_cond_signal");
        real_wait = (wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait");
        real_timedwait = (timedwait_fn)dlsym(RTLD_NEXT, "pthread_cond_timedwait");
    }
#endif
}

static void
resolve(void)
{
    pthread_once(&resolved, find_cond_functions);
}

int
pt_gil_cond_watch(pthread_cond_t *cond, pthread_cond_t *switch_cond, const pt_gil_cond_events_t *ev)
{
    resolve();
    if (real_signal == NULL || real_wait == NULL || real_timedwait == NULL) {
        return -1;
    }
    STORE(gil_cond, NULL);
    STORE(gil_switch_cond, NULL);
    if (ev != NULL) {
        STORE(events, ev); /* kept after a stop: a call that read the old pointers may still be on its way here */
    }
    STORE(gil_switch_cond, switch_cond);
    STORE(gil_cond, cond);
    return 0;
}

int
pt_gil_cond_calibrate(pthread_cond_t **seen, int max)
{
    if (seen == NULL) {
        __atomic_store_n(&calibration.on, 0, __ATOMIC_SEQ_CST);
        return calibration.n;
    }
    resolve();
    if (real_signal == NULL) {
        return -1;
    }
    calibration.thread = pthread_self();
    calibration.seen = seen;
    calibration.max = max;
    calibration.n = 0;
    __atomic_store_n(&calibration.on, 1, __ATOMIC_SEQ_CST);
    return 0;
}

/* ---- semaphores: a free-threaded CPython's lock waits ---- */

typedef int (*sem_clockwait_fn)(sem_t *, clockid_t, const struct timespec *);
typedef int (*sem_timedwait_fn)(sem_t *, const struct timespec *);
typedef int (*sem_wait_fn)(sem_t *);

static sem_clockwait_fn real_sem_clockwait;
static sem_timedwait_fn real_sem_timedwait;
static sem_wait_fn real_sem_wait;
static _Atomic(const pt_gil_park_events_t *) park; /* NULL while parks are not watched */

static void
find_sem_functions(void)
{
    real_sem_clockwait = (sem_clockwait_fn)dlsym(RTLD_NEXT, "sem_clockwait");
    real_sem_timedwait = (sem_timedwait_fn)dlsym(RTLD_NEXT, "sem_timedwait");
    real_sem_wait = (sem_wait_fn)dlsym(RTLD_NEXT, "sem_wait");
}

/* The first call of any of these, from any thread, finds glibc's (or a sanitizer's) functions; once, so that
 * threads calling at once do not race on the pointers. */
static void
resolve_sem(void)
{
    pthread_once(&sem_resolved, find_sem_functions);
}

int
pt_gil_park_watch(const pt_gil_park_events_t *ev)
{
    resolve_sem();
    if (real_sem_clockwait == NULL || real_sem_timedwait == NULL || real_sem_wait == NULL) {
        return -1;
    }
    STORE(park, ev);
    return 0;
}

int sem_clockwait(sem_t *s, clockid_t clock, const struct timespec *t);
int sem_timedwait(sem_t *s, const struct timespec *t);
int sem_wait(sem_t *s);

/* The wait, between the two events; errno as the wait left it. */
#define PARKED(call)                                \
    do {                                            \
        const pt_gil_park_events_t *p = LOAD(park); \
        int r, e;                                   \
                                                    \
        if (p != NULL) {                            \
            p->parked();                            \
        }                                           \
        r = (call);                                 \
        e = errno;                                  \
        if (p != NULL) {                            \
            p->unparked();                          \
        }                                           \
        errno = e;                                  \
        return r;                                   \
    } while (0)

int
sem_clockwait(sem_t *s, clockid_t clock, const struct timespec *t)
{
    resolve_sem();
    PARKED(real_sem_clockwait(s, clock, t));
}

int
sem_timedwait(sem_t *s, const struct timespec *t)
{
    resolve_sem();
    PARKED(real_sem_timedwait(s, t));
}

int
sem_wait(sem_t *s)
{
    resolve_sem();
    PARKED(real_sem_wait(s));
}

/* ---- condition variables: the GIL ---- */

/* Exported (meson: export_dynamic on the executable; a shared library's own) so that the interpreter's calls land
 * here. */
int pthread_cond_signal(pthread_cond_t *c);
int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t);

int
pthread_cond_signal(pthread_cond_t *c)
{
    resolve();
    if (__builtin_expect(__atomic_load_n(&calibration.on, __ATOMIC_ACQUIRE), 0)
        && pthread_equal(pthread_self(), calibration.thread) && calibration.n < calibration.max) {
        calibration.seen[calibration.n++] = c;
    }
    if (c == LOAD(gil_switch_cond)) {
        LOAD(events)->taken(); /* take_gil: signalled right after this thread took the GIL */
    } else if (c == LOAD(gil_cond)) {
        LOAD(events)->dropped(); /* drop_gil: signalled right after this thread released it */
    }
    return real_signal(c);
}

int
pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
    int r;

    resolve();
    if (c != LOAD(gil_cond)) {
        return real_timedwait(c, m, t);
    }
    LOAD(events)->wait(); /* take_gil: the GIL is held by another thread */
    r = real_timedwait(c, m, t);
    if (r == ETIMEDOUT) {
        LOAD(events)->wait_timeout(); /* an interval passed without a switch: the holder will be asked to drop */
    }
    return r;
}

int
pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    resolve();
    if (c == LOAD(gil_switch_cond)) {
        LOAD(events)->forced(); /* drop_gil after a drop request: wait until someone else has the GIL */
    }
    return real_wait(c, m);
}
