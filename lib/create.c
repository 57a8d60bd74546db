/* SPDX-License-Identifier: MIT */
/*
 * create.c - pool_create and pool_destroy.
 *
 * pool_create works from the caller's config with the conninfo's pool_*
 * settings applied (settings.c), checked (config.c), opens min_size
 * connections itself so that a bad conninfo or a database that is down
 * fails it at once, then starts the background threads.  pool_destroy
 * fails the waiters, waits for every caller inside the pool to leave, stops
 * the threads and closes everything.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fail_create(char *errbuf, size_t errlen, pool_err_t code, const char *msg)
{
    pool__set_error_msg(code, msg);
    if (errbuf && errlen > 0)
        snprintf(errbuf, errlen, "%s", msg);
}

static void pool_free(pool_t *pool)
{
    pthread_cond_destroy(&pool->work_cond);
    pthread_cond_destroy(&pool->maint_cond);
    pthread_cond_destroy(&pool->drain_cond);
    pthread_condattr_destroy(&pool->cond_attr);
    pthread_mutex_destroy(&pool->lock);
    pthread_mutex_destroy(&pool->inflight_lock);
    pthread_mutex_destroy(&pool->dispatch_lock);
    if (pool->event_fd >= 0)
        close(pool->event_fd);
    free(pool->deadlines.a);
    pool__async_free(pool);
    pool__conn_map_free(&pool->map);
    pool__hosts_free(&pool->hosts);
    free(pool->host_state);
    for (pool_conn_t *c = pool->all_slots, *next; c; c = next) {
        next = c->all_next;
        free(c);
    }
    free(pool->conninfo);
    free(pool->reset_query);
    free(pool->password);
    free(pool->share_name);
    pool->magic = POOL_MAGIC_DEAD;
    free(pool);
}

static pool_t *pool_alloc(const pool_config_t *cfg)
{
    pool_t *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->cfg = *cfg;
    pool->conninfo = strdup(cfg->conninfo);
    pool->reset_query = cfg->reset_query ? strdup(cfg->reset_query) : NULL;
    bool found = pool__password_of(cfg->conninfo, &pool->password);
    pool->cfg.conninfo = pool->conninfo;
    pool->cfg.reset_query = pool->reset_query;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_mutex_init(&pool->inflight_lock, NULL);
    pthread_mutex_init(&pool->dispatch_lock, NULL);
    pthread_condattr_init(&pool->cond_attr);
    pthread_condattr_setclock(&pool->cond_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &pool->cond_attr);
    pthread_cond_init(&pool->maint_cond, &pool->cond_attr);
    pthread_cond_init(&pool->drain_cond, &pool->cond_attr);
    pool->event_fd = -1;
    atomic_init(&pool->stopping, false);
    static _Atomic uint64_t last_id;
    pool->id = atomic_fetch_add(&last_id, 1) + 1;
    pool->rng = 0x9e3779b97f4a7c15u ^ (pool->id * 0xbf58476d1ce4e5b9u) ^ (uint64_t)pool__clock_now_us();
    if (!pool->rng)
        pool->rng = 1;
    pool->map_total = pool_max_total(pool);
    pool->share_next_us = INT64_MAX; /* fair_share's census: pool_build sets it due */
    pool->magic = POOL_MAGIC;
    /* Room for every live connection plus as many inherited across a fork. */
    if (!found || !pool->conninfo || (cfg->reset_query && !pool->reset_query) ||
        pool__conn_map_init(&pool->map, 2 * (size_t)pool_max_total(pool)) != POOL_OK) {
        pool_free(pool);
        return NULL;
    }
    return pool;
}

/* The config pool_create works from: the caller's (a struct of `size` bytes,
   see abi.c), with the conninfo's pool_* settings applied (the operator's
   URL wins) and taken out of the conninfo, then checked.  On failure the
   message is in msg, scrubbed of the password. */
static pool_err_t effective_config(const pool_config_t *caller_cfg, size_t size,
                                   pool_settings_t *set, char *msg, size_t len)
{
    pool_config_t whole;
    const pool_config_t *cfg = caller_cfg ? &whole : NULL;
    if (caller_cfg && pool__config_from_caller(caller_cfg, size, &whole, msg, len) != POOL_OK)
        return POOL_EINVAL;
    int rc = pool__settings_from_conninfo(cfg, set, msg, len);
    if (rc == POOL_OK) {
        rc = pool__config_validate(cfg && cfg->conninfo ? &set->cfg : cfg, msg, len);
        if (rc != POOL_OK && set->applied > 0)
            snprintf(msg + strlen(msg), len - strlen(msg),
                     " (with the conninfo's pool_* settings applied)");
    }
    if (rc != POOL_OK && cfg && cfg->conninfo) {
        /* Our words about a pool_* value never hold the password, but a
           value could be mistyped into the wrong place: scrub anyway. */
        char raw[POOL_MSG_LEN];
        snprintf(raw, sizeof raw, "%s", msg);
        if (pool__copy_scrubbed(cfg->conninfo, msg, len, raw) != POOL_OK)
            rc = POOL_ENOMEM;
    }
    if (rc != POOL_OK)
        pool__settings_free(set);
    return (pool_err_t)rc;
}

/* The pool for a checked config, with its hosts, not yet connected. */
static pool_t *pool_build(pool_settings_t *set, pool_err_t *rc, char *msg, size_t len)
{
    pool_t *pool = pool_alloc(&set->cfg);
    bool random_hosts = set->load_balance_random;
    pool__settings_free(set);
    if (!pool) {
        *rc = POOL_ENOMEM;
        snprintf(msg, len, "out of memory");
        return NULL;
    }
    *rc = (pool_err_t)pool__hosts_init(&pool->hosts, pool->conninfo, random_hosts, msg, len);
    if (*rc == POOL_OK &&
        !(pool->host_state = calloc((size_t)pool->hosts.n, sizeof *pool->host_state))) {
        *rc = POOL_ENOMEM;
        snprintf(msg, len, "out of memory");
    }
    const char *base = NULL;
    if (*rc == POOL_OK && pool->cfg.fair_share && !pool__share_name_init(pool, &base)) {
        *rc = POOL_ENOMEM;
        snprintf(msg, len, "out of memory");
    }
    if (*rc != POOL_OK) {
        pool_free(pool);
        return NULL;
    }
    if (pool->cfg.fair_share) {
        pool->share_next_us = 0; /* once there is a connection to ask on */
        pool__log(pool, POOL_LOG_INFO,
                  "fair_share: connections are named \"%s\" (%s%s%s, and this pool's mark), "
                  "so that the pools sharing the server can count each other",
                  pool->share_name, base ? "application_name \"" : "no application_name set: ",
                  base ? base : "pgpool's own", base ? "\"" : "");
    }
    if (pool->hosts.n > 1 && strcmp(pool->hosts.target, "any") == 0)
        pool__log(pool, POOL_LOG_WARN,
                  "%d hosts and target_session_attrs \"any\": after a failover connections may "
                  "go to a standby (set target_session_attrs=read-write or primary)",
                  pool->hosts.n);
    return pool;
}

/* Opens one connection in the calling thread (no other thread runs yet). */
static pool_err_t open_one(pool_t *pool, char *err, size_t errlen)
{
    pool_opening_t o;
    pool_err_t rc = pool__open_connect(pool, &o, err, errlen);
    if (rc != POOL_OK)
        return rc;
    pool_closing_t excess;
    pool__closing_init(&excess);
    pthread_mutex_lock(&pool->lock);
    pool__open_adopt_locked(pool, &o, pool->epoch, &excess);
    pool_unlock(pool);
    pool__open_done(&o);
    pool__close_finish(pool, &excess);
    return POOL_OK;
}

/* Opens min_size connections: the first must succeed (a wrong conninfo or a
   database that is down fails pool_create at once); after a later failure
   the workers open the rest in the background. */
static pool_err_t open_min_size(pool_t *pool, char *msg, size_t len)
{
    for (int i = 0; i < pool->cfg.min_size; i++) {
        pool_err_t rc = open_one(pool, msg, len);
        if (rc == POOL_OK)
            continue;
        if (i == 0)
            return rc;
        pthread_mutex_lock(&pool->lock);
        pool->stats.connect_errors++;
        pool_unlock(pool);
        pool__log(pool, POOL_LOG_WARN, "%s; opening the rest of min_size in the background", msg);
        break;
    }
    return POOL_OK;
}

static pool_t *create(const pool_config_t *cfg, size_t size, char *errbuf, size_t errlen)
{
    char msg[POOL_MSG_LEN];
    pool_settings_t set;
    pool_err_t rc = effective_config(cfg, size, &set, msg, sizeof msg);
    pool_t *pool = rc == POOL_OK ? pool_build(&set, &rc, msg, sizeof msg) : NULL;
    if (pool && (rc = open_min_size(pool, msg, sizeof msg)) != POOL_OK) {
        pool_destroy(pool);
        pool = NULL;
    }
    if (pool && pool__start_threads(pool) != 0) {
        pool_destroy(pool);
        pool = NULL;
        rc = POOL_ENOMEM;
        snprintf(msg, sizeof msg, "could not start the pool's background threads");
    }
    if (!pool) {
        fail_create(errbuf, errlen, rc, msg);
        return NULL;
    }
    pool__fork_register(pool);
    return pool;
}

pool_t *pool_create_sized(const pool_config_t *cfg, size_t size, char *errbuf, size_t errlen)
{
    int cancel = pool__cancel_off();
    pool_t *pool = create(cfg, size, errbuf, errlen);
    pool__cancel_restore(cancel);
    return pool;
}

/* Fails every waiter with POOL_ECLOSED, tells the threads to stop and waits
   until no caller is inside the pool.  Takes and releases the lock (twice:
   the waiters are woken once it is released).  Returns whether the threads
   had been started. */
static bool close_and_drain(pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->closed = true;
    atomic_store(&pool->stopping, true);
    atomic_store(&pool->fast_ok, false);
    pool__async_close_locked(pool); /* the async requests leave the line */
    for (pool_waiter_t *w = pool->waiters.head; w; w = w->next)
        pool__wake_after_unlock(&w->woken);
    pthread_cond_broadcast(&pool->work_cond);
    pthread_cond_broadcast(&pool->maint_cond);
    pool_unlock(pool);
    pthread_mutex_lock(&pool->lock);
    while (pool->ncalls > 0)
        pthread_cond_wait(&pool->drain_cond, &pool->lock);
    bool started = pool->threads_started;
    pool->threads_started = false;
    pool_unlock(pool);
    return started;
}

/* Only the destroying thread is left: closes every connection, reporting the
   ones still checked out as leaks. */
static void close_everything(pool_t *pool)
{
    int64_t now = pool__clock_now_us();
    int64_t deadline = now + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    for (size_t i = 0; i <= pool->map.mask; i++) {
        pool_conn_t *c = pool->map.slots[i];
        if (!c)
            continue;
        if (conn_inherited(pool, c)) {
            pool__conn_drop_silently(c->pg);
            continue;
        }
        if (c->state != CONN_IDLE && c->state != CONN_PARKED)
            pool__log(pool, POOL_LOG_WARN,
                      "connection leaked: still checked out at pool_destroy after %lld ms",
                      (long long)((now - c->checkout_us) / 1000));
        pool__conn_close_and_wait(c->pg, deadline);
    }
}

void pool_destroy(pool_t *pool)
{
    if (!pool_is_live(pool))
        return;
    int cancel = pool__cancel_off();
    pool__fork_unregister(pool);
    pool__join_threads(pool, close_and_drain(pool));
    pool__async_finish(pool); /* the callbacks still pending run here */
    close_everything(pool);
    pool_free(pool);
    pool__cancel_restore(cancel);
}
