/* SPDX-License-Identifier: MIT */
/*
 * share.c - fair_share: this pool's share of the server's connection slots.
 *
 * The server is the coordinator: it knows its limits and who is connected,
 * so no service of our own is needed.  A pool with fair_share names its
 * connections "<application_name> #<mark>", the mark 8 hex digits drawn per
 * pool, and one query on pg_stat_activity (the census) counts the pools of
 * the same application, role and database (the distinct marks behind the
 * same name) and the backends they hold.  The slots left to those pools -
 * the tightest of max_connections (less the slots reserved for superusers
 * and, from PostgreSQL 16, reserved_connections), the role's and the
 * database's connection limits, each less the backends that others hold -
 * are divided equally, but for one slot kept free for a pool that holds
 * nothing yet (no census can see it): the remainder goes to the pools whose
 * marks sort first, every pool gets at least one.  The share caps pool_limit, so a pool
 * above it lets its idle connections go and closes returned ones until it
 * fits, and one below it grows.
 *
 * Counting pools, not backends, is why the mark exists: application_name is
 * the only thing a client sets that every role may read in pg_stat_activity,
 * and backends alone cannot tell three pools of 5 from one of 15.
 *
 * The census runs on the service thread (service.c), on a connection of the
 * pool's own: an idle one, else the next one made available (pool.c), which
 * serves the census for one round trip before the next waiter has it.  It
 * runs once the pool has its first connection, then every POOL_SHARE_BUSY_US
 * (1 s) while callers wait or the pool is at its limit, every
 * POOL_SHARE_CALM_US (10 s) otherwise: the service thread looks every
 * second which it is.
 */
#include "pool_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MARK_DIGITS 8
#define APPNAME_MAX 63 /* NAMEDATALEN - 1: the server cuts what is longer */

/* ---- the name connections carry ----------------------------------------------- */

/* A mark no other pool is likely to draw, here or in another process. */
static void draw_mark(pool_t *pool, char *at)
{
    /* The pool's generator is seeded from its id and the clock: the pid and
       the address tell apart pools of two processes started together. */
    uint64_t x = pool__random_locked(pool) ^ ((uint64_t)getpid() << 32) ^
                 (uint64_t)(uintptr_t)pool;
    x ^= x >> 33; /* murmur3's finaliser: every input bit moves every digit */
    x *= 0xff51afd7ed558ccdu;
    x ^= x >> 33;
    char hex[MARK_DIGITS + 1];
    snprintf(hex, sizeof hex, "%08x", (unsigned)(x & 0xffffffffu));
    memcpy(at, hex, MARK_DIGITS);
}

/* The application_name libpq would send: the conninfo's, else PGAPPNAME,
   else the conninfo's fallback_application_name; NULL when none. */
static const char *configured_name(const pool_t *pool)
{
    const char *fallback = NULL;
    for (const PQconninfoOption *o = pool->hosts.opts; o->keyword; o++) {
        if (o->val && *o->val && strcmp(o->keyword, "application_name") == 0)
            return o->val;
        if (o->val && *o->val && strcmp(o->keyword, "fallback_application_name") == 0)
            fallback = o->val;
    }
    const char *env = getenv("PGAPPNAME");
    return env && *env ? env : fallback;
}

bool pool__share_name_init(pool_t *pool, const char **base)
{
    *base = configured_name(pool);
    const char *name = *base ? *base : "pgpool";
    size_t keep = strlen(name), room = APPNAME_MAX - (2 + MARK_DIGITS);
    if (keep > room)
        keep = room;
    pool->share_name = malloc(keep + 2 + MARK_DIGITS + 1);
    if (!pool->share_name)
        return false;
    /* The server shows anything but printable ASCII as '?': so do we, so
       that the census finds the name it sent. */
    for (size_t i = 0; i < keep; i++) {
        unsigned char ch = (unsigned char)name[i];
        pool->share_name[i] = ch >= 32 && ch < 127 ? (char)ch : '?';
    }
    memcpy(pool->share_name + keep, " #", 2);
    pool->share_prefix = keep + 2;
    draw_mark(pool, pool->share_name + pool->share_prefix);
    pool->share_name[pool->share_prefix + MARK_DIGITS] = '\0';
    return true;
}

void pool__share_forked_locked(pool_t *pool)
{
    if (!pool->share_name)
        return;
    /* The parent's pool goes on under the parent's mark: the child's is a
       pool of its own.  No thread of the child runs yet to read it. */
    draw_mark(pool, pool->share_name + pool->share_prefix);
    pool->share_conn = NULL; /* the parent's service thread has it */
    pool->share_wanted = false;
    pool->share_last_us = 0;
    pool->share_next_us = 0;
}

/* ---- the census ---------------------------------------------------------------- */

/* What the server said: its limits (-1: none), and the backends counted by
   each, the group's (this name, role and database) among them. */
typedef struct census {
    int max_connections, superuser_reserved, reserved;
    bool superuser;
    int role_limit, db_limit;
    long all, role, db;    /* client backends: all, of this role, in this database */
    long pools, group;     /* the group's pools (marks) and backends */
    long rank;             /* pools whose marks sort before ours */
} census_t;

/* Client backends only: other users' rows show no backend_type to a role
   without pg_read_all_stats, but they do show a role (background processes
   have none).  Every name is qualified: the connection's search_path is the
   application's. */
static const char census_sql[] =
    "WITH b AS (SELECT usesysid, datid, application_name FROM pg_catalog.pg_stat_activity"
    "  WHERE datid IS NOT NULL"
    "    AND coalesce(backend_type = 'client backend', usesysid IS NOT NULL)),"
    " me AS (SELECT r.oid AS role, r.rolsuper AS su, r.rolconnlimit AS rlim,"
    "               d.oid AS db, d.datconnlimit AS dlim"
    "        FROM pg_catalog.pg_roles r, pg_catalog.pg_database d"
    "        WHERE r.rolname = session_user AND d.datname = pg_catalog.current_database()),"
    " g AS (SELECT b.application_name AS mark FROM b, me"
    "       WHERE b.usesysid = me.role AND b.datid = me.db"
    "         AND pg_catalog.left(b.application_name, pg_catalog.length($1)) = $1)"
    " SELECT pg_catalog.current_setting('max_connections')::int,"
    "   pg_catalog.current_setting('superuser_reserved_connections')::int,"
    "   coalesce(nullif(pg_catalog.current_setting('reserved_connections', true), ''), '0')::int,"
    "   me.su::int, me.rlim, me.dlim,"
    "   (SELECT count(*) FROM b),"
    "   (SELECT count(*) FROM b WHERE b.usesysid = me.role),"
    "   (SELECT count(*) FROM b WHERE b.datid = me.db),"
    "   (SELECT count(DISTINCT mark) FROM g),"
    "   (SELECT count(*) FROM g),"
    "   (SELECT count(DISTINCT mark) FROM g WHERE mark COLLATE \"C\" < $2 COLLATE \"C\")"
    " FROM me";

static bool run_census(pool_t *pool, PGconn *pg, int64_t deadline_us, census_t *cs, char *said)
{
    char prefix[APPNAME_MAX + 1];
    snprintf(prefix, sizeof prefix, "%.*s", (int)pool->share_prefix, pool->share_name);
    const char *params[2] = {prefix, pool->share_name};
    PGresult *res = pool__conn_query_bounded(pg, census_sql, 2, params, deadline_us, said,
                                             POOL_MSG_LEN);
    if (!res)
        return false;
    bool ok = PQntuples(res) == 1 && PQnfields(res) == 12;
    if (!ok)
        snprintf(said, POOL_MSG_LEN, "the census returned %d rows", PQntuples(res));
    long v[12];
    for (int i = 0; ok && i < 12; i++)
        v[i] = strtol(PQgetvalue(res, 0, i), NULL, 10);
    PQclear(res);
    if (!ok)
        return false;
    *cs = (census_t){.max_connections = (int)v[0], .superuser_reserved = (int)v[1],
                     .reserved = (int)v[2], .superuser = v[3] != 0, .role_limit = (int)v[4],
                     .db_limit = (int)v[5], .all = v[6], .role = v[7], .db = v[8],
                     .pools = v[9], .group = v[10], .rank = v[11]};
    return true;
}

/* The slots left to the group under one limit: the limit less what others
   hold. */
static long room_under(long limit, long counted, long group)
{
    return limit - (counted - group);
}

/* This pool's share, and in *room the slots left to the group. */
static int share_of(const census_t *cs, long *room)
{
    long usable = cs->max_connections;
    if (!cs->superuser) /* the role's and database's limits bind no superuser */
        usable -= cs->superuser_reserved + cs->reserved;
    *room = room_under(usable, cs->all, cs->group);
    if (!cs->superuser && cs->role_limit >= 0 && room_under(cs->role_limit, cs->role, cs->group) < *room)
        *room = room_under(cs->role_limit, cs->role, cs->group);
    if (!cs->superuser && cs->db_limit >= 0 && room_under(cs->db_limit, cs->db, cs->group) < *room)
        *room = room_under(cs->db_limit, cs->db, cs->group);
    long pools = cs->pools > 0 ? cs->pools : 1; /* ours runs this query: at least one */
    /* One slot stays out of the shares while there are more than pools:
       the doorway through which a pool that holds nothing yet, so that no
       census sees it, gets its first connection and is counted from then. */
    long shared = *room > pools ? *room - 1 : *room;
    long share = shared > 0 ? shared / pools + (cs->rank < shared % pools) : 0;
    if (share < 1)
        share = 1;
    return share > INT32_MAX ? INT32_MAX : (int)share;
}

/* A limit for the log line: "none" for -1. */
static const char *limit_text(int limit, char *buf, size_t len)
{
    if (limit < 0)
        return "none";
    snprintf(buf, len, "%d", limit);
    return buf;
}

static void say_census(pool_t *pool, const census_t *cs, long room, int share, int limit)
{
    char role[16], db[16];
    pool__log(pool, POOL_LOG_INFO,
              "fair share: max_connections %d (%d reserved for superusers, %d reserved), "
              "role limit %s, database limit %s%s; %ld slots left to %ld pool%s named "
              "\"%.*s#...\" (this one \"%s\"), which hold %ld; %sthis pool's share is %d, its "
              "ceiling %d",
              cs->max_connections, cs->superuser_reserved, cs->reserved,
              limit_text(cs->role_limit, role, sizeof role), limit_text(cs->db_limit, db, sizeof db),
              cs->superuser ? " (a superuser: only max_connections binds)" : "", room, cs->pools,
              cs->pools == 1 ? "" : "s", (int)pool->share_prefix - 1, pool->share_name,
              pool->share_name, cs->group, room > cs->pools ? "one kept free for a newcomer, " : "",
              share, limit);
}

/* Whether callers wait or the pool is at its limit: a census is due every
   POOL_SHARE_BUSY_US then. */
static bool pressed_locked(const pool_t *pool)
{
    return pool->waiters.len > 0 || pool->nopen >= pool_limit(pool);
}

void pool__share_tick_locked(pool_t *pool, int64_t now_us)
{
    bool due = pool->share_wanted || pool->share_last_us == 0 || pressed_locked(pool) ||
               now_us - pool->share_last_us >= POOL_SHARE_CALM_US;
    if (!due) {
        pool->share_next_us = now_us + POOL_SHARE_BUSY_US; /* to see whether load came */
        return;
    }
    /* Wanted first, then the gate shut, then what is parked taken: the
       handshake of a caller that starts to wait (fast.c).  Either the scan
       finds a connection a thread parked meanwhile, or that thread sees the
       gate shut and returns it the locked way, through
       pool__make_available_locked, which hands it here.  Without it, as many
       threads as connections would cycle on the lock-free path for ever and
       no census would run. */
    pool->share_wanted = true;
    atomic_store(&pool->fast_ok, false);
    pool_conn_t *c = NULL;
    if (!pool->paused) {
        pool__unpark_all_locked(pool);
        c = pool->idle_head;
    }
    if (c) {
        pool__idle_remove_locked(pool, c);
        c->state = CONN_CHECKING;
        pool->share_conn = c;
        pool->share_wanted = false;
        return;
    }
    /* The next connection made available comes here (a new one, when none
       is open: nothing to look at until then). */
    pool->share_next_us = pool->nopen > 0 ? now_us + POOL_SHARE_BUSY_US : INT64_MAX;
}

void pool__share_census_locked(pool_t *pool)
{
    pool_conn_t *c = pool->share_conn;
    pool->share_conn = NULL;
    int64_t now = pool__clock_now_us();
    int64_t deadline = now + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    pool_unlock(pool);

    census_t cs = {0};
    char said[POOL_MSG_LEN];
    said[0] = '\0';
    bool ok = run_census(pool, c->pg, deadline, &cs, said);
    bool alive = pool__conn_peek_nowait(c->pg, false) == CONN_ALIVE;

    pthread_mutex_lock(&pool->lock);
    now = pool__clock_now_us();
    long room = 0;
    int before = pool->share, share = ok ? share_of(&cs, &room) : pool->share;
    bool say = ok && (share != before || cs.pools != pool->share_pools);
    bool say_failed = !ok && !pool->share_failing && alive;
    pool->share_failing = !ok;
    if (ok) {
        pool->share = share;
        pool->share_pools = (int)(cs.pools < INT32_MAX ? cs.pools : INT32_MAX);
    }
    pool_closing_t closing;
    pool__closing_init(&closing);
    /* Back as it was: a census is no use, and must not keep a connection
       from idle_timeout_ms (one that came from a return was used now). */
    if (alive)
        pool__make_available_locked(pool, c, c->idle_since_us, &closing);
    else
        pool__close_locked(pool, c, CLOSE_DEAD, "it failed the fair-share census:", said, &closing);
    pool__detach_idle_locked(pool, pool_limit(pool), &closing);
    pool->share_last_us = now;
    pool->share_next_us = now + POOL_SHARE_BUSY_US;
    pool__wake_workers_locked(pool); /* a share that grew lets callers have more */
    bool stopping = pool->closed;
    int limit = pool_limit(pool);
    pool_unlock(pool);

    pool__close_finish(pool, &closing);
    if (say && !stopping)
        say_census(pool, &cs, room, share, limit);
    if (say_failed && !stopping)
        pool__log(pool, POOL_LOG_WARN,
                  "fair share: could not read the server's limits (%s); the share stays %d "
                  "(0: none)",
                  said[0] ? said : "no reason given", before);
    pthread_mutex_lock(&pool->lock);
}
