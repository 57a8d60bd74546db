/* SPDX-License-Identifier: MIT */
/*
 * threads.c - the pool's background threads: the maintenance thread
 * (maint.c), the service thread for event loops (service.c) and the connect
 * workers (workers.c), started with every signal
 * blocked so that the application's signal handlers run on its own threads,
 * and joined by pool_destroy.
 */
#include "pool_internal.h"

#include <signal.h>

int pool__start_threads(pool_t *pool)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&pool->maint_thread, NULL, pool__maint_main, pool);
    bool maint = rc == 0, service = false;
    if (rc == 0)
        service = (rc = pthread_create(&pool->service_thread, NULL, pool__service_main, pool)) == 0;
    int workers = 0;
    while (rc == 0 && workers < POOL_CONNECT_WORKERS &&
           (rc = pthread_create(&pool->workers[workers], NULL, pool__connect_worker_main, pool)) == 0)
        workers++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0 && maint) {
        /* Some started: stop and join them before reporting failure. */
        pthread_mutex_lock(&pool->lock);
        pool->closed = true;
        pthread_cond_broadcast(&pool->work_cond);
        pthread_cond_broadcast(&pool->maint_cond);
        pool__wake_after_unlock(&pool->service_wake);
        pool_unlock(pool);
        pthread_join(pool->maint_thread, NULL);
        if (service)
            pthread_join(pool->service_thread, NULL);
        for (int i = 0; i < workers; i++)
            pthread_join(pool->workers[i], NULL);
        return rc;
    }
    pool->threads_started = rc == 0;
    return rc;
}

/* Lock NOT held; pool->closed is set and the threads were told (their
   condition variables broadcast), so each leaves its loop. */
void pool__join_threads(pool_t *pool, bool started)
{
    if (!started)
        return;
    pthread_join(pool->maint_thread, NULL);
    pthread_join(pool->service_thread, NULL);
    for (int i = 0; i < POOL_CONNECT_WORKERS; i++)
        pthread_join(pool->workers[i], NULL);
}
