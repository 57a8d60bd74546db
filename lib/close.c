/* SPDX-License-Identifier: MIT */
/*
 * close.c - closing connections: one way, for every reason.
 *
 * A connection leaves the pool through pool__close_locked, which detaches it
 * under the lock and counts its reason (close_reason_t), and
 * pool__close_finish, which closes what was detached once the lock is
 * released: gracefully (waiting until the server has ended the backend) or by
 * dropping the socket, as the reason says.
 *
 * When a connection dies or finds its server in the wrong role (broken, a
 * failed ping, the server's error: class 08, 57P01-57P03, 25006 where writes
 * are expected; see conn.c), its siblings on that host are most likely no
 * better: the server restarted, was demoted or fenced, or the network to it
 * is gone.  Handing them out one by one would fail one caller each (or cost
 * each a ping that may hang until connect_timeout_ms on a black hole).  So
 * the whole host is retired at once, as SQLAlchemy does for its whole pool on
 * a disconnect: idle connections are closed now, checked-out ones when they
 * come back, and the connect workers open replacements on whichever host
 * answers (hosts.c puts a host that failed last).  The price, when only one
 * backend was killed, is reopening the host's idle connections.  A connection
 * already retired does not evict again: the connections opened since are not
 * retired by news older than they are.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <string.h>

/* Detaches idle connections retired by an eviction while *out has room;
   when it fills up, the rest are left for pool__close_finish's next round. */
static void detach_evicted_idle_locked(pool_t *pool, pool_closing_t *out)
{
    out->more_evicted = false;
    for (pool_conn_t *c = pool->idle_tail, *prev; c; c = prev) {
        prev = c->prev;
        if (!atomic_load_explicit(&c->evicted, memory_order_relaxed))
            continue;
        if (out->n == POOL_CLOSE_BATCH) {
            out->more_evicted = true;
            return;
        }
        pool__detach_locked(pool, c, CLOSE_SUSPECT, out);
    }
}

/* Retires every connection open to host (the one that failed is detached
   already) and detaches its idle ones into *out. */
static void evict_host_locked(pool_t *pool, int host, pool_closing_t *out)
{
    pool->stats.evictions++;
    pool->host_state[host].evictions++;
    /* Marked before parked ones are moved to the idle list: a thread parking
       its connection meanwhile sees the mark (pool__fast_return) or is unparked. */
    for (pool_conn_t *c = pool->all_slots; c; c = c->all_next)
        if (c->host == host && atomic_load_explicit(&c->state, memory_order_relaxed) != CONN_FREE &&
            !conn_inherited(pool, c))
            atomic_store(&c->evicted, true);
    pool__unpark_all_locked(pool);
    detach_evicted_idle_locked(pool, out);
}

/* Says why c is closed, for the log: its host, what was found, and the words
   that said so (scrubbed; see pool__close_locked). */
static void describe_locked(const pool_t *pool, const pool_conn_t *c, close_reason_t why,
                            const char *what, const char *words, bool host_retired, char *out,
                            size_t len)
{
    char said[POOL_MSG_LEN] = "";
    size_t wl = strlen(what);
    if (!(words && *words) && wl > 0 && what[wl - 1] == ':')
        words = PQerrorMessage(c->pg);
    if (words && *words) { /* its first line: "LINE 1: ..." and the caret add nothing here */
        char line[POOL_MSG_LEN];
        snprintf(line, sizeof line, "%.*s", (int)strcspn(words, "\n"), words);
        pool__copy_libpq_message(pool, said, sizeof said, line);
    }
    const char *host = pool__hosts_name(&pool->hosts, c->host), *port = pool->hosts.port[c->host];
    snprintf(out, len, "closed a connection to host \"%s\" port %s: %.*s%s%s%s%s%s",
             *host ? host : "default", *port ? port : "default",
             (int)(wl > 0 && what[wl - 1] == ':' ? wl - 1 : wl), what, *said ? ": " : "", said,
             why == CLOSE_ROLE ? " (target_session_attrs=" : "",
             why == CLOSE_ROLE ? pool->hosts.target : "", why == CLOSE_ROLE ? ")" : "");
    if (host_retired)
        snprintf(out + strlen(out), len - strlen(out), "; the host's other connections are retired");
}

void pool__close_locked(pool_t *pool, pool_conn_t *c, close_reason_t why, const char *what,
                        const char *said, pool_closing_t *out)
{
    bool suspect = (why == CLOSE_DEAD || why == CLOSE_ROLE) && !conn_stale(pool, c);
    if ((why == CLOSE_DEAD || why == CLOSE_UNUSABLE || why == CLOSE_ROLE) && out->nwarn++ == 0)
        describe_locked(pool, c, why, what ? what : "", said, suspect, out->warn,
                        sizeof out->warn);
    int host = c->host;
    pool__detach_locked(pool, c, why, out);
    if (suspect)
        evict_host_locked(pool, host, out);
}

/* Whether this batch's warning is logged now: at most one line a second,
   the next one counting what was left unsaid.  Lock held. */
static bool warn_now_locked(pool_t *pool, int nwarn, int *more)
{
    int64_t now = pool__clock_now_us();
    if (pool->warn_last_us != 0 && now - pool->warn_last_us < 1000000) {
        pool->warn_suppressed += nwarn;
        return false;
    }
    *more = pool->warn_suppressed + nwarn - 1;
    pool->warn_suppressed = 0;
    pool->warn_last_us = now;
    return true;
}

/* Lock NOT held.  Takes the lock once per batch to give back the slots the
   backends held (nclosing) and, after an eviction that found more idle
   connections than a batch holds, to detach the next batch. */
void pool__close_finish(pool_t *pool, pool_closing_t *batch)
{
    while (batch->n > 0) {
        int64_t deadline = pool__clock_now_us() + (int64_t)pool->cfg.connect_timeout_ms * 1000;
        for (int i = 0; i < batch->n; i++) {
            if (batch->graceful[i])
                pool__conn_close_and_wait(batch->pg[i], deadline);
            else
                pool__conn_close(batch->pg[i]);
        }
        pthread_mutex_lock(&pool->lock);
        pool->nclosing -= batch->n;
        batch->n = 0;
        int more = 0;
        bool warn = batch->nwarn > 0 && warn_now_locked(pool, batch->nwarn, &more);
        batch->nwarn = 0;
        if (batch->more_evicted)
            detach_evicted_idle_locked(pool, batch);
        pool__wake_workers_locked(pool);
        pool_unlock(pool);
        if (warn && more > 0)
            pool__log(pool, POOL_LOG_WARN, "%s (and %d more closes nobody asked for since the last "
                      "warning)", batch->warn, more);
        else if (warn)
            pool__log(pool, POOL_LOG_WARN, "%s", batch->warn);
    }
}
