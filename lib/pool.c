/* SPDX-License-Identifier: MIT */
/*
 * pool.c - the pool: create and destroy, borrow and return, and the lock.
 *
 * One mutex guards the pool's state.  Idle connections sit on a LIFO list
 * (hot ones are reused, cold ones age out at the tail); blocked callers sit on
 * a FIFO queue and a connection that becomes available is handed straight to
 * the longest waiter, so one return wakes exactly one thread and a newcomer
 * can never barge ahead.  All I/O (validation, rollback, reset, close) runs
 * with the lock released, on a connection the calling thread has claimed.
 * While nobody waits, a thread's own returned connection is parked and taken
 * back without the lock (fast.c); this file is the path for everything else.
 */
#include "pool_internal.h"

#include <errno.h>
#include <libpq-events.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every entry point calls this first, under the lock: a pool used for the
   first time in a forked child drops what it inherited. */
void pool__enter_locked(pool_t *pool)
{
    if (pool->fork_gen != fork_generation())
        pool__fork_reset_locked(pool);
}

/* ---- idle list ---------------------------------------------------------- */

/* Puts c at the head of the idle list, keeping its idle_since_us. */
static void idle_link_locked(pool_t *pool, pool_conn_t *c)
{
    c->state = CONN_IDLE;
    c->prev = NULL;
    c->next = pool->idle_head;
    if (pool->idle_head)
        pool->idle_head->prev = c;
    else
        pool->idle_tail = c;
    pool->idle_head = c;
    pool->nidle++;
}

static void idle_push_locked(pool_t *pool, pool_conn_t *c, int64_t now_us)
{
    c->idle_since_us = now_us;
    idle_link_locked(pool, c);
}

static void pool_idle_remove_locked(pool_t *pool, pool_conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        pool->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        pool->idle_tail = c->prev;
    c->prev = c->next = NULL;
    pool->nidle--;
}

/* Moves every parked connection (fast.c) to the idle list, for a lock holder
   that wants one, or wants to close idle ones. */
void pool__unpark_all_locked(pool_t *pool)
{
    /* Cleared before the scan: a connection parked after it sets it again. */
    if (!atomic_exchange(&pool->maybe_parked, false))
        return;
    for (pool_conn_t *c = pool->all_slots; c; c = c->all_next) {
        conn_state_t parked = CONN_PARKED;
        if (atomic_compare_exchange_strong(&c->state, &parked, CONN_CHECKING))
            idle_link_locked(pool, c);
    }
}

/* ---- connection slots ---------------------------------------------------- */

/* A slot for a new connection: a free one, else *spare (allocated by the
   caller before taking the lock), which is then consumed (*spare = NULL). */
static pool_conn_t *slot_get_locked(pool_t *pool, pool_conn_t **spare)
{
    pool_conn_t *c = pool->free_slots;
    if (c) {
        pool->free_slots = c->next;
        return c;
    }
    c = *spare;
    *spare = NULL;
    memset(c, 0, sizeof *c);
    c->all_next = pool->all_slots;
    pool->all_slots = c;
    return c;
}

/* The slot no longer holds a connection; it stays allocated (see pool_conn_t). */
void pool__release_slot_locked(pool_t *pool, pool_conn_t *c)
{
    c->pg = NULL;
    c->state = CONN_FREE;
    c->prev = NULL;
    c->next = pool->free_slots;
    pool->free_slots = c;
}

/* ---- closing ------------------------------------------------------------ */

/* Forgets c and returns its PGconn for the caller to pass to
   pool__finish_closes() once the lock is released.  The backend still counts
   against max_size + max_overflow (nclosing) until it is really closed. */
PGconn *pool__detach_locked(pool_t *pool, pool_conn_t *c)
{
    if (c->state == CONN_IDLE)
        pool_idle_remove_locked(pool, c);
    pool__conn_map_remove(&pool->map, c->pg);
    PGconn *pg = c->pg;
    pool__release_slot_locked(pool, c);
    pool->nopen--;
    pool->nclosing++;
    pool->stats.closed++;
    return pg;
}

/* Detaches c like pool__detach_locked.  host_failed: the server went away from
   under it or is no longer in the role the conninfo asks for, so every other
   connection to its host is retired as well (evict.c), unless c was retired
   already; the idle ones are detached into ev (POOL_EVICT_BATCH entries),
   their number in *nev, for pool__evict_finish once the lock is released. */
static PGconn *retire_locked(pool_t *pool, pool_conn_t *c, bool host_failed, PGconn **ev, int *nev)
{
    bool evict = host_failed && !conn_stale(pool, c);
    int host = c->host;
    PGconn *pg = pool__detach_locked(pool, c);
    if (evict)
        *nev = pool__evict_host_locked(pool, host, ev, POOL_EVICT_BATCH);
    return pg;
}

/* Closes what pool__detach_locked() gave out, then frees the slots.  graceful:
   the connection is healthy, so wait (up to connect_timeout_ms) until the
   server has ended the backend; a broken one is just dropped. */
void pool__finish_closes(pool_t *pool, PGconn **pgs, int n, bool graceful)
{
    if (n == 0)
        return;
    int64_t deadline = pool__clock_now_us() + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    for (int i = 0; i < n; i++) {
        if (graceful)
            pool__conn_close_and_wait(pgs[i], deadline);
        else
            pool__conn_close(pgs[i]);
    }
    pthread_mutex_lock(&pool->lock);
    pool->nclosing -= n;
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
}

/* ---- demand for new connections ----------------------------------------- */

/* How many more connections the workers should open now: enough for min_size
   and for every waiter no attempt is already under way for, within the room
   left under max_size + max_overflow. */
int pool__connect_demand_locked(const pool_t *pool)
{
    if (pool->closed)
        return 0;
    int room = pool_max_total(pool) - pool->nopen - pool->nconnecting - pool->nclosing;
    int for_min = pool->cfg.min_size - pool->nopen - pool->nconnecting;
    /* Paused, nobody is served: connections are kept to min_size only. */
    int for_waiters = pool->paused ? 0 : pool->waiters.len + pool->grow_wanted - pool->nconnecting;
    int want = for_min > for_waiters ? for_min : for_waiters;
    return want < room ? want : room;
}

void pool__wake_workers_locked(pool_t *pool)
{
    int demand = pool__connect_demand_locked(pool);
    if (demand == 1)
        pthread_cond_signal(&pool->work_cond);
    else if (demand > 1)
        pthread_cond_broadcast(&pool->work_cond);
}

/* ---- making a connection available -------------------------------------- */

static void hand_to_waiter_locked(pool_conn_t *c, pool_waiter_t *w, int64_t now_us)
{
    c->state = CONN_CHECKING;
    c->idle_since_us = now_us;
    w->conn = c;
    pool__wake_after_unlock(&w->woken);
}

/* c (open, validated or new, not on any list) goes to the longest waiter, else
   to the idle list, else - above max_size with nobody waiting - it is closed.
   It is closed as well when it was evicted, or when more than max_size +
   max_overflow are open (after pool_resize shrank the pool) even if someone
   waits.  Returns the PGconn to close, or NULL. */
PGconn *pool__make_available_locked(pool_t *pool, pool_conn_t *c, int64_t now_us)
{
    if (conn_stale(pool, c)) {
        pool->stats.closed_evicted++;
        return pool__detach_locked(pool, c);
    }
    if (pool->closed || pool->nopen > pool_max_total(pool))
        return pool__detach_locked(pool, c);
    pool_waiter_t *w = pool->paused ? NULL : pool__waitq_pop_front(&pool->waiters);
    if (w) {
        hand_to_waiter_locked(c, w, now_us);
        return NULL;
    }
    if (pool->nopen > pool->cfg.max_size)
        return pool__detach_locked(pool, c);
    idle_push_locked(pool, c, now_us);
    return NULL;
}

/* Hands idle connections to waiters, longest waiter first (pool_resume, and
   a caller that starts to wait). */
void pool__serve_waiters_locked(pool_t *pool)
{
    if (!pool->waiters.head)
        return;
    pool__unpark_all_locked(pool);
    int64_t now = pool__clock_now_us();
    while (pool->idle_head && pool->waiters.head) {
        pool_conn_t *c = pool->idle_head;
        pool_idle_remove_locked(pool, c);
        hand_to_waiter_locked(c, pool__waitq_pop_front(&pool->waiters), now);
    }
}

/* Detaches up to max idle connections, oldest first, while more than keep
   are open; returns how many, their PGconns in out for pool__finish_closes. */
int pool__detach_idle_locked(pool_t *pool, int keep, PGconn **out, int max)
{
    pool__unpark_all_locked(pool);
    int n = 0;
    while (n < max && pool->idle_tail && pool->nopen > keep) {
        pool->stats.closed_evicted += conn_stale(pool, pool->idle_tail); /* pool_evict's */
        out[n++] = pool__detach_locked(pool, pool->idle_tail);
    }
    return n;
}

/* c was parked just as the gate closed or the pool was evicted: it gets what
   a locked return gives it (the longest waiter, the idle list, or a close
   when evicted or above max_size).  If a lock holder moved it to the idle
   list meanwhile, waiters are served from there instead. */
void pool__settle(pool_t *pool, pool_conn_t *c)
{
    PGconn *to_close = NULL;
    pthread_mutex_lock(&pool->lock);
    conn_state_t parked = CONN_PARKED;
    if (atomic_compare_exchange_strong(&c->state, &parked, CONN_CHECKING))
        to_close = pool__make_available_locked(pool, c, c->idle_since_us);
    else if (!pool->paused)
        pool__serve_waiters_locked(pool);
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
    if (to_close)
        pool__finish_closes(pool, &to_close, 1, true);
}

bool pool__past_lifetime(const pool_t *pool, const pool_conn_t *c, int64_t now_us)
{
    return pool->cfg.max_lifetime_ms > 0 &&
           now_us - c->created_us >= (int64_t)pool->cfg.max_lifetime_ms * 1000;
}

/* ---- create and destroy ------------------------------------------------- */

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
    pool->password = pool__password_of(cfg->conninfo);
    pool->cfg.conninfo = pool->conninfo;
    pool->cfg.reset_query = pool->reset_query;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_init(&pool->cond_attr);
    pthread_condattr_setclock(&pool->cond_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &pool->cond_attr);
    pthread_cond_init(&pool->maint_cond, &pool->cond_attr);
    pthread_cond_init(&pool->drain_cond, &pool->cond_attr);
    atomic_init(&pool->stopping, false);
    static _Atomic uint64_t last_id;
    pool->id = atomic_fetch_add(&last_id, 1) + 1;
    pool->fork_gen = fork_generation();
    pool->map_total = pool_max_total(pool);
    pool->magic = POOL_MAGIC;
    /* Room for every live connection plus as many inherited across a fork. */
    if (!pool->conninfo || (cfg->reset_query && !pool->reset_query) ||
        pool__conn_map_init(&pool->map, 2 * (size_t)pool_max_total(pool)) != POOL_OK) {
        pool_free(pool);
        return NULL;
    }
    return pool;
}

/* Adds a newly opened connection; the caller then makes it available. */
/* The session's identity as the server reports it (GUC_REPORT parameters,
   kept by libpq: no round trip). */
static void record_identity(pool_conn_t *c)
{
    const char *user = PQparameterStatus(c->pg, "session_authorization");
    const char *super = PQparameterStatus(c->pg, "is_superuser");
    c->identity_known = user && super && strlen(user) < sizeof c->session_user;
    if (c->identity_known) {
        memcpy(c->session_user, user, strlen(user) + 1);
        c->superuser = super[1]; /* 'n' for "on", 'f' for "off" */
    }
}

/* A security default that costs no round trip: a connection returned with a
   different session_authorization or is_superuser than it was opened with
   (SET SESSION AUTHORIZATION, SET ROLE to or from a superuser) is closed, not
   handed to the next borrower.  Checked after reset_query, which may restore
   them (DISCARD ALL does). */
bool pool__session_identity_changed(const pool_conn_t *c)
{
    if (!c->identity_known)
        return false;
    const char *user = PQparameterStatus(c->pg, "session_authorization");
    const char *super = PQparameterStatus(c->pg, "is_superuser");
    return !user || !super || strcmp(user, c->session_user) != 0 || super[1] != c->superuser;
}

/* What an error's SQLSTATE says of the connection: the session or server is
   going away (class 08, 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
   cannot_connect_now), or - where writes are expected - the server turned
   read-only (25006, e.g. behind PgBouncer or on a server that does not
   report default_transaction_read_only). */
static unsigned char doom_of(const char *sqlstate, bool writes_expected)
{
    if (!sqlstate)
        return DOOM_NONE;
    if (strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0 ||
        strcmp(sqlstate, "57P02") == 0 || strcmp(sqlstate, "57P03") == 0)
        return DOOM_SERVER;
    if (writes_expected && strcmp(sqlstate, "25006") == 0)
        return DOOM_READ_ONLY;
    return DOOM_NONE;
}

/* libpq calls this for events on a pooled connection, in the thread using
   it: it counts results (see pool_conn_t.results) and reads the SQLSTATE of
   every failed one, the application's included. */
static int conn_events(PGEventId id, void *info, void *pass_through)
{
    if (id != PGEVT_RESULTCREATE)
        return 1;
    pool_conn_t *c = pass_through;
    c->results++;
    const PGresult *res = ((PGEventResultCreate *)info)->result;
    if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
        unsigned char doom = doom_of(PQresultErrorField(res, PG_DIAG_SQLSTATE), c->writes_expected);
        if (doom != DOOM_NONE)
            c->doom = doom;
    }
    return 1;
}

pool_conn_t *pool__conn_track_locked(pool_t *pool, pool_conn_t **spare, PGconn *pg, int host,
                               unsigned epoch, int64_t started_us, int64_t now_us)
{
    pool_conn_t *c = slot_get_locked(pool, spare);
    /* Every field but the slot's own (all_next, shard). */
    c->prev = c->next = NULL;
    c->idle_since_us = now_us;
    c->checkout_us = 0;
    c->leak_reported = false;
    c->results = c->results_verified = 0;
    c->doom = DOOM_NONE;
    c->writes_expected = pool__hosts_expect_writes(&pool->hosts);
    c->pg = pg;
    c->epoch = epoch;
    c->host = host;
    atomic_store_explicit(&c->evicted, false, memory_order_relaxed);
    record_identity(c);
    /* Without the counter every return checks the identity: still correct. */
    c->results_counted = PQregisterEventProc(pg, conn_events, "pgpool", c) != 0;
    c->created_us = now_us;
    c->state = CONN_CHECKING;
    c->fork_gen = pool->fork_gen;
    pool__conn_map_insert(&pool->map, c);
    pool->nopen++;
    pool->stats.connects++;
    pool->host_state[host].connects++;
    pool__hist_record(&pool->stats.connect_hist, (uint64_t)(now_us - started_us));
    pool->connect_failing = false;
    pool->backoff_us = 0;
    return c;
}

/* Opens one connection in the calling thread and adds it to the pool. */
static pool_err_t open_one(pool_t *pool, char *err, size_t errlen)
{
    int64_t started = pool__clock_now_us();
    int host;
    PGconn *pg = pool__hosts_connect(pool, &host, err, errlen);
    if (!pg)
        return POOL_ECONNECT;
    pool_conn_t *spare = malloc(sizeof *spare);
    if (!spare) {
        pool__conn_close(pg);
        snprintf(err, errlen, "out of memory");
        return POOL_ENOMEM;
    }
    pthread_mutex_lock(&pool->lock);
    int64_t now = pool__clock_now_us();
    /* No pool_evict can have run yet: the pool is not handed out. */
    PGconn *excess = pool__make_available_locked(
        pool, pool__conn_track_locked(pool, &spare, pg, host, pool->epoch, started, now), now);
    pool_unlock(pool);
    free(spare);
    if (excess)
        pool__finish_closes(pool, &excess, 1, true);
    return POOL_OK;
}

/* The config pool_create works from: the caller's, with the conninfo's pool_*
   settings applied (the operator's URL wins) and taken out of the conninfo,
   then checked.  On failure the message is in msg, scrubbed. */
static pool_err_t effective_config(const pool_config_t *cfg, pool_settings_t *set, char *msg,
                                   size_t len)
{
    int rc = pool__settings_from_conninfo(cfg, set, msg, len);
    if (rc == POOL_OK) {
        rc = pool__config_validate(cfg && cfg->conninfo ? &set->cfg : cfg, msg, len);
        if (rc != POOL_OK && set->applied > 0)
            snprintf(msg + strlen(msg), len - strlen(msg),
                     " (with the conninfo's pool_* settings applied)");
    }
    if (rc != POOL_OK) {
        /* Our words about a pool_* value never hold the password, but a
           value could be mistyped into the wrong place: scrub anyway. */
        pool_t scrubber = {.password = cfg && cfg->conninfo ? pool__password_of(cfg->conninfo) : NULL};
        char raw[POOL_MSG_LEN];
        snprintf(raw, sizeof raw, "%s", msg);
        pool__copy_libpq_message(&scrubber, msg, len, raw);
        free(scrubber.password);
        pool__settings_free(set);
    }
    return (pool_err_t)rc;
}

pool_t *pool_create_sized(const pool_config_t *caller_cfg, size_t size, char *errbuf,
                          size_t errlen)
{
    char msg[POOL_MSG_LEN];
    pool_config_t whole;
    const pool_config_t *cfg = caller_cfg ? &whole : NULL;
    pool_err_t rc =
        caller_cfg ? pool__config_from_caller(caller_cfg, size, &whole, msg, sizeof msg) : POOL_OK;
    if (rc != POOL_OK) {
        fail_create(errbuf, errlen, rc, msg);
        return NULL;
    }
    pool_settings_t set;
    rc = effective_config(cfg, &set, msg, sizeof msg);
    if (rc != POOL_OK) {
        fail_create(errbuf, errlen, rc, msg);
        return NULL;
    }
    pool_t *pool = pool_alloc(&set.cfg);
    bool random_hosts = set.load_balance_random;
    pool__settings_free(&set);
    if (!pool) {
        fail_create(errbuf, errlen, POOL_ENOMEM, "out of memory");
        return NULL;
    }
    rc = (pool_err_t)pool__hosts_init(&pool->hosts, pool->conninfo, random_hosts, msg, sizeof msg);
    if (rc == POOL_OK &&
        !(pool->host_state = calloc((size_t)pool->hosts.n, sizeof *pool->host_state))) {
        rc = POOL_ENOMEM;
        snprintf(msg, sizeof msg, "out of memory");
    }
    if (rc != POOL_OK) {
        pool_destroy(pool);
        fail_create(errbuf, errlen, rc, msg);
        return NULL;
    }
    if (pool->hosts.n > 1 && strcmp(pool->hosts.target, "any") == 0)
        pool__log(pool, POOL_LOG_WARN,
                 "%d hosts and target_session_attrs \"any\": after a failover connections may "
                 "go to a standby (set target_session_attrs=read-write or primary)",
                 pool->hosts.n);
    cfg = &pool->cfg;
    for (int i = 0; i < cfg->min_size; i++) {
        rc = open_one(pool, msg, sizeof msg);
        if (rc == POOL_OK)
            continue;
        if (i == 0) {
            pool_destroy(pool);
            fail_create(errbuf, errlen, rc, msg);
            return NULL;
        }
        pthread_mutex_lock(&pool->lock);
        pool->stats.connect_errors++;
        pool_unlock(pool);
        pool__log(pool, POOL_LOG_WARN, "%s; opening the rest of min_size in the background", msg);
        break;
    }
    if (pool__start_threads(pool) != 0) {
        pool_destroy(pool);
        fail_create(errbuf, errlen, POOL_ENOMEM, "could not start the pool's background threads");
        return NULL;
    }
    pool__fork_register(pool);
    return pool;
}

/* Starts the maintenance thread and the connect workers with every signal
   blocked, so the application's signal handlers run on its own threads. */
int pool__start_threads(pool_t *pool)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&pool->maint_thread, NULL, pool__maint_main, pool);
    int started = 0;
    for (; rc == 0 && started < POOL_CONNECT_WORKERS; started++)
        rc = pthread_create(&pool->workers[started], NULL, pool__connect_worker_main, pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0 && started > 0) {
        /* Some started: stop and join them before reporting failure. */
        pthread_mutex_lock(&pool->lock);
        pool->closed = true;
        pthread_cond_broadcast(&pool->work_cond);
        pthread_cond_broadcast(&pool->maint_cond);
        pool_unlock(pool);
        pthread_join(pool->maint_thread, NULL);
        for (int i = 0; i < started - 1; i++)
            pthread_join(pool->workers[i], NULL);
        return rc;
    }
    pool->threads_started = rc == 0;
    return rc;
}

void pool_destroy(pool_t *pool)
{
    if (!pool_is_live(pool))
        return;
    pool__fork_unregister(pool);

    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->closed = true;
    atomic_store(&pool->stopping, true);
    atomic_store(&pool->fast_ok, false);
    for (pool_waiter_t *w = pool->waiters.head; w; w = w->next)
        pool__wake_now(&w->woken);
    pthread_cond_broadcast(&pool->work_cond);
    pthread_cond_broadcast(&pool->maint_cond);
    while (pool->ncalls > 0)
        pthread_cond_wait(&pool->drain_cond, &pool->lock);
    bool joined = pool->threads_started;
    pool->threads_started = false;
    pool_unlock(pool);

    if (joined) {
        pthread_join(pool->maint_thread, NULL);
        for (int i = 0; i < POOL_CONNECT_WORKERS; i++)
            pthread_join(pool->workers[i], NULL);
    }

    /* Only this thread is left: close everything. */
    int64_t now = pool__clock_now_us();
    int64_t deadline = now + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    for (size_t i = 0; i <= pool->map.mask; i++) {
        pool_conn_t *c = pool->map.slots[i];
        if (!c)
            continue;
        if (conn_inherited(pool, c)) {
            pool__conn_drop_silently(c->pg);
        } else {
            if (c->state != CONN_IDLE && c->state != CONN_PARKED)
                pool__log(pool, POOL_LOG_WARN,
                         "connection leaked: still checked out at pool_destroy after %lld ms",
                         (long long)((now - c->checkout_us) / 1000));
            pool__conn_close_and_wait(c->pg, deadline);
        }
    }
    pool_free(pool);
}

/* ---- borrowing ---------------------------------------------------------- */

static void set_timeout_error_locked(const pool_t *pool, int timeout_ms)
{
    bool failing = pool->connect_failing;
    pool__set_error(POOL_ETIMEDOUT,
                   "timed out after %d ms waiting for a connection (%d open, %d in use, %d waiting%s)%s%.380s",
                   timeout_ms, pool->nopen, pool->nopen - pool->nidle, pool->waiters.len,
                   pool->paused ? ", pool paused" : "",
                   failing ? "; last connection error: " : "", failing ? pool->last_error : "");
}

/* Blocks (w queued, the lock released) until w is handed a connection,
   failed, the pool closes or the deadline passes.  Returns with the lock held
   and w out of the queue. */
static void wait_in_line_locked(pool_t *pool, pool_waiter_t *w, int64_t deadline_us)
{
    while (!w->conn && w->err == POOL_OK && !pool->closed) {
        pool_unlock(pool);
        /* Woken without the lock: whoever wakes us set w first, under it. */
        while (atomic_load_explicit(&w->woken, memory_order_acquire) != WAKE_WOKEN &&
               pool__clock_now_us() < deadline_us)
            pool__wake_wait(&w->woken, deadline_us);
        pthread_mutex_lock(&pool->lock);
        if (atomic_load_explicit(&w->woken, memory_order_relaxed) != WAKE_WOKEN &&
            pool__clock_now_us() >= deadline_us)
            break;
    }
    pool__waitq_remove(&pool->waiters, w);
}

/* The idle connection to hand out: the one this thread borrowed last when it
   is idle (the thread keeps talking to the same backend, as with a dedicated
   connection, which the server's caches reward, and returns it through the
   fast path), else the most recently returned, else a parked one. */
static pool_conn_t *pick_idle_locked(pool_t *pool)
{
    if (!pool->idle_head)
        pool__unpark_all_locked(pool);
    pool_conn_t *mine = pool__fast_mine(pool);
    return mine && mine->state == CONN_IDLE ? mine : pool->idle_head;
}

/* Claims a connection for the caller: an idle one, or one handed over after
   waiting in line.  On failure returns the code with this thread's error set.
   *at_front: the caller already stood in line (and lost the connection it was
   handed to validation): it goes back to the front, not the back. */
static pool_err_t claim_locked(pool_t *pool, pool_waiter_t *w, int64_t deadline_us,
                               int timeout_ms, bool *at_front, pool_conn_t **out)
{
    for (;;) {
        if (pool->closed) {
            pool__set_error(POOL_ECLOSED, "pool is closed");
            return POOL_ECLOSED;
        }
        pool_conn_t *c = pool->paused ? NULL : pick_idle_locked(pool);
        if (c) {
            pool_idle_remove_locked(pool, c);
            c->state = CONN_CHECKING;
            *out = c;
            return POOL_OK;
        }
        /* Even while connects fail, a caller waits in line: the next attempt
           (at most a backoff away) either serves it or fails it at once with
           libpq's reason when nothing checked out could come back. */
        int64_t now = pool__clock_now_us();
        if (now >= deadline_us) {
            int room = pool_max_total(pool) - pool->nopen - pool->nconnecting - pool->nclosing;
            if (!*at_front && pool->grow_wanted < room) {
                /* A caller that may not wait still asks for one more
                   connection (where there is room), so that the next such
                   caller finds one. */
                pool->grow_wanted++;
                pool__wake_workers_locked(pool);
            }
            set_timeout_error_locked(pool, timeout_ms);
            return POOL_ETIMEDOUT;
        }
        if (pool->cfg.max_waiting > 0 && pool->waiters.len >= pool->cfg.max_waiting) {
            pool__set_error(POOL_EBUSY, "too many callers waiting for a connection (max_waiting %d)",
                           pool->cfg.max_waiting);
            return POOL_EBUSY;
        }
        w->conn = NULL;
        w->err = POOL_OK;
        atomic_store_explicit(&w->woken, WAKE_WAITING, memory_order_relaxed);
        if (*at_front)
            pool__waitq_push_front(&pool->waiters, w);
        else
            pool__waitq_push_back(&pool->waiters, w);
        *at_front = true; /* once in line, the caller keeps its place */
        /* The handshake with the fast path (fast.c): close its gate, then
           take what it parked meanwhile. */
        atomic_store(&pool->fast_ok, false);
        if (!pool->paused)
            pool__serve_waiters_locked(pool);
        pool__wake_workers_locked(pool);
        wait_in_line_locked(pool, w, deadline_us);
        if (w->conn) {
            c = w->conn;
            w->conn = NULL;
            if (pool->closed) { /* handed over just before the close: give it back */
                idle_push_locked(pool, c, now);
                continue;
            }
            *out = c;
            return POOL_OK;
        }
        if (w->err != POOL_OK) {
            pool__set_error_msg(w->err, pool->last_error);
            return w->err;
        }
    }
}

/* The bound on a round-trip check: the caller's deadline, but never less than
   POOL_PING_GRACE_US (a timeout-0 caller's deadline has passed already) and
   never more than connect_timeout_ms. */
static int64_t ping_deadline(const pool_t *pool, int64_t now, int64_t caller_deadline)
{
    int64_t longest = now + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    int64_t shortest = now + POOL_PING_GRACE_US;
    int64_t d = caller_deadline > shortest ? caller_deadline : shortest;
    return d < longest ? d : longest;
}

/* Finishes a getconn call under the lock: statistics and the drain count. */
static void getconn_done_locked(pool_t *pool, pool_err_t rc, int64_t start_us, int64_t end_us)
{
    uint64_t waited = (uint64_t)(end_us - start_us);
    pool->stats.wait_us_total += waited;
    pool__hist_record(&pool->stats.wait_hist, waited);
    if (waited > pool->stats.wait_us_max)
        pool->stats.wait_us_max = waited;
    if (rc == POOL_OK)
        pool->stats.acquired++;
    else if (rc == POOL_ETIMEDOUT)
        pool->stats.acquire_timeouts++;
    else
        pool->stats.acquire_errors++;
    if (--pool->ncalls == 0 && pool->closed)
        pthread_cond_broadcast(&pool->drain_cond);
}

/* Whether c, taken back by the fast path, can be handed out with nothing
   more to do: not evicted or old, no hook, and the zero-round-trip check
   passes with no round trip due.  *health: that check's verdict, when it
   ran (it reads unasked input: it cannot be run twice). */
static bool ready_as_is(pool_t *pool, pool_conn_t *c, int64_t now, int *health)
{
    if (conn_stale(pool, c) || pool__past_lifetime(pool, c, now) || pool->cfg.on_checkout ||
        (pool->cfg.pre_ping && now - c->idle_since_us >= (int64_t)pool->cfg.ping_idle_ms * 1000))
        return false;
    *health = (int)pool__conn_check_nowait(c->pg, pool->cfg.pre_ping);
    return *health == CONN_ALIVE;
}

PGconn *pool_getconn_timeout(pool_t *pool, int timeout_ms)
{
    if (!pool_is_live(pool)) {
        pool__set_error(POOL_EINVAL, "pool is NULL or not a live pool");
        return NULL;
    }
    int64_t start = pool__clock_now_us();
    /* This thread's own parked connection, without the lock (fast.c); one
       that needs more than the zero-round-trip check goes the locked way. */
    pool_conn_t *c = pool__fast_take(pool);
    int checked = -1; /* the fast path's conn_health_t, -1 if it did not check */
    if (c && ready_as_is(pool, c, start, &checked)) {
        pool__fast_checked_out(c, start);
        return c->pg;
    }
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : start + (int64_t)timeout_ms * 1000;
    pool_waiter_t w = {0};
    bool at_front = false;
    pool_err_t rc = POOL_OK;
    /* The clock is read again only after something took time (waiting in
       line, a round trip, a close): an idle connection handed out at once
       costs one clock read, and its wait counts as zero. */
    int64_t now = start;
    bool clock_stale = false;

    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->ncalls++;
    for (;; c = NULL) {
        if (!c) {
            rc = claim_locked(pool, &w, deadline, timeout_ms, &at_front, &c);
            clock_stale = clock_stale || at_front;
            if (rc != POOL_OK)
                break;
        }
        if (clock_stale) {
            now = pool__clock_now_us();
            clock_stale = false;
        }
        /* Retired (a sibling's eviction found more than it closes at once)
           or old: closed unvalidated, a retired one without waiting on a
           server that may be gone. */
        bool retired = conn_stale(pool, c);
        if (retired || pool__past_lifetime(pool, c, now)) {
            bool graceful = !atomic_load_explicit(&c->evicted, memory_order_relaxed);
            PGconn *old = pool__detach_locked(pool, c);
            if (retired)
                pool->stats.closed_evicted++;
            else
                pool->stats.closed_lifetime++;
            pool__wake_workers_locked(pool);
            pool_unlock(pool);
            pool__finish_closes(pool, &old, 1, graceful);
            pthread_mutex_lock(&pool->lock);
            clock_stale = true;
            continue;
        }
        /* Without pre_ping and hooks the checks read libpq's state only, so
           they run under the lock: one lock round.  Otherwise the socket
           poll (a syscall), a round trip and the hook run with the lock
           released, on the claimed connection. */
        bool io = pool->cfg.pre_ping || pool->cfg.on_checkout;
        if (io)
            pool_unlock(pool);
        conn_health_t health =
            checked >= 0 ? (conn_health_t)checked : pool__conn_check_nowait(c->pg, pool->cfg.pre_ping);
        checked = -1;
        bool ping = health == CONN_SUSPECT ||
                    (pool->cfg.pre_ping && health == CONN_ALIVE &&
                     now - c->idle_since_us >= (int64_t)pool->cfg.ping_idle_ms * 1000);
        bool alive = health != CONN_DEAD, accepted = alive;
        if (alive && ping)
            alive = accepted = pool__conn_exec_bounded(c->pg, "", ping_deadline(pool, now, deadline));
        /* The round trip brought what the server reports since: a server
           demoted or fenced shows it here. */
        bool role_ok = !(alive && ping) || pool__hosts_role_ok(&pool->hosts, c->pg);
        accepted = accepted && role_ok;
        if (accepted && pool->cfg.on_checkout)
            accepted = pool->cfg.on_checkout(c->pg, pool->cfg.arg) == 0;
        if (io) {
            pthread_mutex_lock(&pool->lock);
            clock_stale = clock_stale || ping || pool->cfg.on_checkout;
        }
        if (ping)
            pool->stats.pings++;
        if (!role_ok)
            pool->stats.closed_role++;
        /* Evicted while it was being validated: not handed out after all. */
        bool stale = conn_stale(pool, c);
        if (accepted && !stale)
            break;
        if (!alive)
            pool->stats.closed_broken++;
        else if (accepted)
            pool->stats.closed_evicted++;
        PGconn *evicted[POOL_EVICT_BATCH];
        int nevicted = 0;
        PGconn *rejected = retire_locked(pool, c, !alive || !role_ok, evicted, &nevicted);
        pool__wake_workers_locked(pool);
        pool_unlock(pool);
        pool__finish_closes(pool, &rejected, 1, alive);
        pool__evict_finish(pool, evicted, nevicted);
        pthread_mutex_lock(&pool->lock);
        clock_stale = true;
    }

    int64_t end = clock_stale ? pool__clock_now_us() : now;
    if (rc == POOL_OK) {
        c->state = CONN_IN_USE;
        c->checkout_us = end;
        c->leak_reported = false;
        pool__fast_remember(pool, c);
    }
    getconn_done_locked(pool, rc, start, end);
    pool_unlock(pool);
    return rc == POOL_OK ? c->pg : NULL;
}

PGconn *pool_getconn(pool_t *pool)
{
    if (!pool_is_live(pool)) {
        pool__set_error(POOL_EINVAL, "pool is NULL or not a live pool");
        return NULL;
    }
    return pool_getconn_timeout(pool, pool->cfg.acquire_timeout_ms);
}

/* ---- returning ---------------------------------------------------------- */

/* Whether a returned connection can be reused at all (a transaction left open
   can: it is rolled back).  One left in non-blocking mode is put back in
   blocking mode, as the next borrower expects; with nothing in flight that
   sends nothing. */
bool pool__conn_returnable(PGconn *pg)
{
    /* These three transaction states also say the status is CONNECTION_OK
       and no query is in flight (libpq reports PQTRANS_ACTIVE then). */
    PGTransactionStatusType ts = PQtransactionStatus(pg);
    if ((ts != PQTRANS_IDLE && ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR) ||
        PQpipelineStatus(pg) != PQ_PIPELINE_OFF)
        return false;
    return !PQisnonblocking(pg) || PQsetnonblocking(pg, 0) == 0;
}

/* Rolls back and resets c outside the lock (the caller holds it on entry and
   on return).  False when the connection must be closed. */
static bool clean_for_reuse_unlocked_io(pool_t *pool, pool_conn_t *c, bool rollback, int64_t now)
{
    c->state = CONN_RETURNING;
    pool->ncalls++;
    pool_unlock(pool);
    int64_t deadline = now + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    bool rolled_back = rollback && pool__conn_exec_bounded(c->pg, "ROLLBACK", deadline);
    bool ok = rollback ? rolled_back : true;
    if (ok && pool->reset_query)
        ok = pool__conn_exec_bounded(c->pg, pool->reset_query, deadline);
    pthread_mutex_lock(&pool->lock);
    if (rolled_back)
        pool->stats.rollbacks++;
    if (--pool->ncalls == 0 && pool->closed)
        pthread_cond_broadcast(&pool->drain_cond);
    return ok;
}

/* Runs on_checkin with the lock released (the caller holds it on entry and on
   return); c is RETURNING meanwhile, so a second return of it is refused. */
static bool checkin_hook_accepts(pool_t *pool, pool_conn_t *c)
{
    c->state = CONN_RETURNING;
    pool->ncalls++;
    pool_unlock(pool);
    bool accepted = pool->cfg.on_checkin(c->pg, pool->cfg.arg) == 0;
    pthread_mutex_lock(&pool->lock);
    if (--pool->ncalls == 0 && pool->closed)
        pthread_cond_broadcast(&pool->drain_cond);
    return accepted;
}

static int return_conn(pool_t *pool, PGconn *pg, bool discard)
{
    if (!pool_is_live(pool)) {
        pool__set_error(POOL_EINVAL, "pool is NULL or not a live pool");
        return POOL_EINVAL;
    }
    if (!pg) {
        pool__set_error(POOL_EINVAL, "connection is NULL");
        return POOL_EINVAL;
    }
    if (!discard && pool__fast_return(pool, pg))
        return POOL_OK;
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool_conn_t *c = pool__conn_map_find(&pool->map, pg);
    if (!c || c->state != CONN_IN_USE) {
        pool_unlock(pool);
        pool__set_error(POOL_EINVAL, c ? "connection was already returned to this pool"
                                      : "connection was not handed out by this pool");
        return POOL_EINVAL;
    }
    int64_t now = pool__clock_now_us();
    uint64_t held = (uint64_t)(now - c->checkout_us);
    pool->stats.hold_us_total += held;
    pool__hist_record(&pool->stats.hold_hist, held);
    if (conn_inherited(pool, c)) { /* borrowed before a fork(): the parent still uses it */
        pool__conn_map_remove(&pool->map, pg);
        pool__release_slot_locked(pool, c);
        pool_unlock(pool);
        pool__conn_drop_silently(pg);
        return POOL_OK;
    }

    PGconn *to_close = NULL;
    bool broken = false;
    /* The server's idle connections on c's host, when c says it failed. */
    PGconn *evicted[POOL_EVICT_BATCH];
    int nevicted = 0;
    if (discard) {
        to_close = pool__detach_locked(pool, c);
    } else if (conn_stale(pool, c)) {
        /* Retired while borrowed: closed as it is (no rollback, reset or
           hook), without waiting on a server its host's eviction suspects. */
        broken = atomic_load_explicit(&c->evicted, memory_order_relaxed);
        to_close = pool__detach_locked(pool, c);
        pool->stats.closed_evicted++;
    } else if (pool->cfg.on_checkin && !checkin_hook_accepts(pool, c)) {
        to_close = pool__detach_locked(pool, c);
    } else if (c->doom != DOOM_NONE) {
        broken = c->doom == DOOM_SERVER;
        to_close = retire_locked(pool, c, true, evicted, &nevicted);
        if (broken)
            pool->stats.closed_broken++;
        else
            pool->stats.closed_role++;
    } else if (!pool__conn_returnable(pg)) {
        /* Broken (the server went away), or left busy by the application. */
        to_close = retire_locked(pool, c, PQstatus(pg) == CONNECTION_BAD, evicted, &nevicted);
        pool->stats.closed_broken++;
        broken = true;
    } else {
        PGTransactionStatusType ts = PQtransactionStatus(pg);
        bool rollback = ts != PQTRANS_IDLE;
        if ((rollback || pool->reset_query) && !clean_for_reuse_unlocked_io(pool, c, rollback, now)) {
            to_close = retire_locked(pool, c, PQstatus(pg) == CONNECTION_BAD, evicted, &nevicted);
            pool->stats.closed_broken++;
            broken = true;
        } else {
            if (rollback || pool->reset_query)
                now = pool__clock_now_us();
            bool may_have_changed = !c->results_counted || c->results != c->results_verified;
            if (may_have_changed && pool__session_identity_changed(c)) {
                to_close = pool__detach_locked(pool, c);
                pool->stats.closed_broken++;
                broken = true;
            } else if (may_have_changed && !pool__hosts_role_ok(&pool->hosts, pg)) {
                to_close = retire_locked(pool, c, true, evicted, &nevicted);
                pool->stats.closed_role++;
            } else if (pool__past_lifetime(pool, c, now)) {
                to_close = pool__detach_locked(pool, c);
                pool->stats.closed_lifetime++;
            } else {
                c->results_verified = c->results;
                to_close = pool__make_available_locked(pool, c, now);
            }
        }
    }
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
    if (to_close)
        pool__finish_closes(pool, &to_close, 1, !broken);
    pool__evict_finish(pool, evicted, nevicted);
    return POOL_OK;
}

int pool_putconn(pool_t *pool, PGconn *conn)
{
    return return_conn(pool, conn, false);
}

int pool_discard(pool_t *pool, PGconn *conn)
{
    return return_conn(pool, conn, true);
}
