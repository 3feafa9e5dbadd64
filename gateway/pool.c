/*
 * The WSGI worker pool. Each worker owns one PyThreadState for its whole life. It waits for a request with the GIL
 * released, takes the GIL to run the app, and releases it again before waiting for the next request (and, inside the
 * request, whenever it waits for the client: see wsgi_input.c and wsgi.c).
 */
#include "gateway.h"

#include <stdlib.h>

struct pt_pool_s {
    uv_mutex_t lock;
    uv_cond_t cond;
    pt_request_t **queue; /* ring of pending requests */
    size_t cap, head, count;
    size_t idle;    /* workers waiting on cond */
    size_t to_wake; /* requests queued since the last pt_pool_wake */
    bool stopping;
    int nthreads;
    int started; /* numbers the workers for the GIL statistics */
    uv_thread_t *threads;
    pt_pool_fn fn;
    void *arg;
    PyInterpreterState *interp;
};

static void
worker_main(void *arg)
{
    pt_pool_t *pool = arg;
    PyThreadState *ts = PyThreadState_New(pool->interp);
    char name[32];

    snprintf(name, sizeof(name), "worker-%d", __atomic_add_fetch(&pool->started, 1, __ATOMIC_RELAXED));
    pt_gil_thread_name(name, "worker");
    pthread_setname_np(pthread_self(), name); /* for top -H, perf and gdb */

    for (;;) {
        pt_request_t *req;

        uv_mutex_lock(&pool->lock);
        while (pool->count == 0 && !pool->stopping) {
            pool->idle++;
            uv_cond_wait(&pool->cond, &pool->lock);
            pool->idle--;
        }
        if (pool->count == 0) {
            uv_mutex_unlock(&pool->lock);
            break;
        }
        req = pool->queue[pool->head];
        pool->head = (pool->head + 1) % pool->cap;
        pool->count--;
        uv_mutex_unlock(&pool->lock);

        {
            uint64_t w0 = pt_gil_my_wait_ns();

            pt_gil_acquire(ts);
            req->gil_wait_start_ns = pt_gil_my_wait_ns() - w0;
        }
        pool->fn(pool->arg, req);
        ts = pt_gil_release();
    }
    pt_gil_acquire(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

int
pt_pool_start(pt_pool_t **out, int nthreads, pt_pool_fn fn, void *arg)
{
    pt_pool_t *pool = calloc(1, sizeof(*pool));
    int i;

    if (pool == NULL) {
        return -ENOMEM;
    }
    pool->cap = 1024;
    pool->queue = malloc(pool->cap * sizeof(*pool->queue));
    pool->threads = calloc((size_t)nthreads, sizeof(*pool->threads));
    if (pool->queue == NULL || pool->threads == NULL) {
        free(pool->queue);
        free(pool->threads);
        free(pool);
        return -ENOMEM;
    }
    uv_mutex_init(&pool->lock);
    uv_cond_init(&pool->cond);
    pool->fn = fn;
    pool->arg = arg;
    pool->interp = PyInterpreterState_Get();
    for (i = 0; i < nthreads; i++) {
        uv_thread_options_t opts = { .flags = UV_THREAD_HAS_STACK_SIZE, .stack_size = 4 * 1024 * 1024 };
        int r = uv_thread_create_ex(&pool->threads[i], &opts, worker_main, pool);

        if (r < 0) {
            pool->nthreads = i;
            pt_pool_stop(pool);
            return r;
        }
        pool->nthreads = i + 1;
    }
    *out = pool;
    return 0;
}

/* Loop thread. Never takes the GIL. */
void
pt_pool_submit(pt_pool_t *pool, pt_request_t *req)
{
    uv_mutex_lock(&pool->lock);
    if (pool->count == pool->cap) {
        /* One request per connection at most, so the queue only outgrows its ring with many connections. */
        size_t ncap = pool->cap * 2, i;
        pt_request_t **nq = malloc(ncap * sizeof(*nq));

        if (nq == NULL) {
            uv_mutex_unlock(&pool->lock);
            abort();
        }
        for (i = 0; i < pool->count; i++) {
            nq[i] = pool->queue[(pool->head + i) % pool->cap];
        }
        free(pool->queue);
        pool->queue = nq;
        pool->cap = ncap;
        pool->head = 0;
    }
    pool->queue[(pool->head + pool->count) % pool->cap] = req;
    pool->count++;
    pool->to_wake++;
    uv_mutex_unlock(&pool->lock);
}

/* Loop thread, once per loop iteration: wakes a worker for each request queued since (as many as are idle). */
void
pt_pool_wake(pt_pool_t *pool)
{
    size_t n;

    uv_mutex_lock(&pool->lock);
    n = pool->to_wake < pool->idle ? pool->to_wake : pool->idle;
    pool->to_wake = 0;
    while (n-- > 0) {
        uv_cond_signal(&pool->cond);
    }
    uv_mutex_unlock(&pool->lock);
}

/* Called without the GIL. Workers finish their current request first. */
void
pt_pool_stop(pt_pool_t *pool)
{
    int i;

    uv_mutex_lock(&pool->lock);
    pool->stopping = true;
    uv_cond_broadcast(&pool->cond);
    uv_mutex_unlock(&pool->lock);
    for (i = 0; i < pool->nthreads; i++) {
        uv_thread_join(&pool->threads[i]);
    }
    uv_mutex_destroy(&pool->lock);
    uv_cond_destroy(&pool->cond);
    free(pool->queue);
    free(pool->threads);
    free(pool);
}
