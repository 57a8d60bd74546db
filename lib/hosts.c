/* SPDX-License-Identifier: MIT */
/*
 * hosts.c - the conninfo's host list: one connection attempt per host.
 *
 * libpq tries a multi-host conninfo itself, but a pool driving
 * PQconnectPoll cannot bound each host's attempt (libpq's non-blocking
 * connect ignores connect_timeout), so a silent first host would eat the
 * whole deadline.  So pgpool splits the list (host, hostaddr and port, as
 * libpq pairs them) and makes one attempt per host, each bounded by
 * connect_timeout_ms, with libpq checking target_session_attrs on that one
 * host.  prefer-standby takes two passes (standbys, then anyone), and
 * load_balance_hosts=random (which libpq 15 does not know; settings.c takes
 * it out of the conninfo) shuffles the order of every round.
 */
#include "pool_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How many entries a comma-separated list has, as libpq splits host lists
   (no quoting inside).  An empty or missing list is one empty entry (libpq's
   default for it). */
static int count_entries(const char *list)
{
    int n = 1;
    for (const char *p = list ? list : ""; *p; p++)
        n += *p == ',';
    return n;
}

/* The entries of such a list, copied; their number, or -1 out of memory. */
static int split_list(const char *list, char ***out)
{
    int n = count_entries(list);
    char **v = calloc((size_t)n, sizeof *v);
    if (!v)
        return -1;
    const char *p = list ? list : "";
    for (int i = 0; i < n; i++) {
        size_t len = strcspn(p, ",");
        v[i] = strndup(p, len);
        if (!v[i]) {
            while (i-- > 0)
                free(v[i]);
            free(v);
            return -1;
        }
        p += len + (p[len] == ',');
    }
    *out = v;
    return n;
}

static void free_list(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void pool__hosts_free(pool_hosts_t *h)
{
    PQconninfoFree(h->opts);
    free_list(h->host, h->n);
    free_list(h->hostaddr, h->n);
    free_list(h->port, h->n);
    memset(h, 0, sizeof *h);
}

/* A list of n entries (one entry of an empty list or of one value applies to
   every host), or an error in err. */
static bool list_for_hosts(const char *what, const char *list, int n, char ***out, char *err,
                           size_t errlen)
{
    char **v;
    int m = split_list(list, &v);
    if (m < 0) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    if (m == n) {
        *out = v;
        return true;
    }
    if (m != 1) {
        free_list(v, m);
        snprintf(err, errlen, "could not match %d %s to %d hosts in the conninfo", m, what, n);
        return false;
    }
    char **all = calloc((size_t)n, sizeof *all);
    for (int i = 0; all && i < n; i++)
        if (!(all[i] = strdup(v[0]))) {
            free_list(all, i);
            all = NULL;
        }
    free_list(v, m);
    if (!all) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    *out = all;
    return true;
}

/* The options set per attempt, one host's worth each. */
static bool per_host(const char *keyword)
{
    return strcmp(keyword, "host") == 0 || strcmp(keyword, "hostaddr") == 0 ||
           strcmp(keyword, "port") == 0 || strcmp(keyword, "target_session_attrs") == 0;
}

static const char *option(PQconninfoOption *opts, const char *keyword)
{
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o->val && *o->val ? o->val : NULL;
    return NULL;
}

/* What target_session_attrs asks of a session once it is open.  libpq checks
   it when connecting; the server may change its role later (a promoted
   standby, a primary demoted or fenced with default_transaction_read_only),
   and reports in_hot_standby and default_transaction_read_only (14 and later)
   after the statement that follows, which pool__hosts_role_ok reads without a round
   trip.  prefer-standby accepts anything. */
enum { ROLE_ANY, ROLE_READ_WRITE, ROLE_READ_ONLY, ROLE_PRIMARY, ROLE_STANDBY };

static int role_of(const char *target)
{
    static const struct { const char *name; int role; } roles[] = {
        {"read-write", ROLE_READ_WRITE}, {"read-only", ROLE_READ_ONLY},
        {"primary", ROLE_PRIMARY}, {"standby", ROLE_STANDBY},
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(target, roles[i].name) == 0)
            return roles[i].role;
    return ROLE_ANY;
}

static bool reported_on(PGconn *pg, const char *param)
{
    const char *v = PQparameterStatus(pg, param);
    return v && strcmp(v, "on") == 0;
}

bool pool__hosts_expect_writes(const pool_hosts_t *h)
{
    return h->role == ROLE_READ_WRITE || h->role == ROLE_PRIMARY;
}

bool pool__hosts_role_ok(const pool_hosts_t *h, PGconn *pg)
{
    /* A server before 14 reports neither: libpq checked at connect. */
    if (h->role == ROLE_ANY || !PQparameterStatus(pg, "in_hot_standby"))
        return true;
    bool standby = reported_on(pg, "in_hot_standby");
    bool read_only = standby || reported_on(pg, "default_transaction_read_only");
    switch (h->role) {
    case ROLE_READ_WRITE:
        return !read_only;
    case ROLE_READ_ONLY:
        return read_only;
    case ROLE_PRIMARY:
        return !standby;
    default:
        return standby;
    }
}

int pool__hosts_init(pool_hosts_t *h, const char *conninfo, bool random_order, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    err[0] = '\0';
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        /* config.c parsed this very string already: only memory can fail
           now (and libpq's words are not shown: they could hold the
           password, which nothing is left to scrub). */
        PQfreemem(perr);
        snprintf(err, errlen, "out of memory while reading the conninfo's hosts");
        return POOL_ENOMEM;
    }
    h->opts = opts;
    const char *host = option(opts, "host"), *hostaddr = option(opts, "hostaddr");
    const char *target = option(opts, "target_session_attrs");
    int nh = count_entries(host), na = count_entries(hostaddr);
    h->n = nh > na ? nh : na;
    h->random = random_order;
    h->target = target ? target : "any";
    h->role = role_of(h->target);
    bool ok = list_for_hosts("host names", host, h->n, &h->host, err, errlen) &&
              list_for_hosts("host addresses", hostaddr, h->n, &h->hostaddr, err, errlen) &&
              list_for_hosts("port numbers", option(opts, "port"), h->n, &h->port, err, errlen);
    if (!ok) {
        pool__hosts_free(h);
        return strcmp(err, "out of memory") == 0 ? POOL_ENOMEM : POOL_EINVAL;
    }
    return POOL_OK;
}

/* The target for pass `pass` (0 or 1), or NULL when there is no such pass. */
static const char *pass_target(const pool_hosts_t *h, int pass)
{
    if (strcmp(h->target, "prefer-standby") == 0)
        return pass == 0 ? "standby" : "any";
    return pass == 0 ? h->target : NULL;
}

/* The order of this round: 0..n-1, shuffled for load_balance_hosts=random,
   then the hosts whose last attempt failed moved behind the others (keeping
   their order), until their down time ends: a host that is gone, black-holed
   or in the wrong role costs one attempt per down time, not one per
   connection. */
static void round_order(pool_t *pool, int *order)
{
    const pool_hosts_t *h = &pool->hosts;
    for (int i = 0; i < h->n; i++)
        order[i] = i;
    if (h->n == 1)
        return;
    if (h->random) {
        static _Thread_local unsigned seed;
        if (!seed)
            seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
        for (int i = h->n - 1; i > 0; i--) {
            int j = rand_r(&seed) % (i + 1);
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    pthread_mutex_lock(&pool->lock);
    int64_t now = pool__clock_now_us();
    int up = 0;
    for (int i = 0; i < h->n; i++) {
        /* Insertion of the hosts that are up, in order, before the rest. */
        int j = order[i];
        if (pool->host_state[j].down_until_us > now)
            continue;
        for (int k = i; k > up; k--)
            order[k] = order[k - 1];
        order[up++] = j;
    }
    pool_unlock(pool);
}

/* Records how host j's attempt went: a failure puts it last for a while,
   doubling while it keeps failing (capped, so a host that comes back is
   preferred again within seconds); a success makes it first choice again. */
static void record_attempt(pool_t *pool, int j, bool ok)
{
    pthread_mutex_lock(&pool->lock);
    pool_host_state_t *st = &pool->host_state[j];
    if (ok) {
        st->down_until_us = 0;
        st->down_us = 0;
    } else {
        st->connect_errors++;
        st->down_us = backoff_next(st->down_us, POOL_HOST_DOWN_MIN_US, POOL_HOST_DOWN_MAX_US);
        st->down_until_us = pool__clock_now_us() + st->down_us;
    }
    pool_unlock(pool);
}

static const char *or_default(const char *s)
{
    return *s ? s : "default";
}

const char *pool__hosts_name(const pool_hosts_t *h, int j)
{
    return *h->host[j] ? h->host[j] : h->hostaddr[j];
}

/* One connect's keyword/value arrays: every option libpq parsed with a value
   but the four set per host (with fair_share, application_name is the
   pool's share_name), then those four (from index k), then, with
   get_password, the password (index k + 4; the conninfo's is left out).  Two workers
   connect at once: the arrays are each call's own, and what is learnt of
   each host (record_attempt) is written under pool->lock. */
typedef struct attempt {
    void *block; /* kw, val and order, one allocation, published in the inflight slot */
    const char **kw, **val;
    int *order; /* the hosts in the order this round tries them */
    int k;
} attempt_t;

static void attempt_free(pool_t *pool, int slot, attempt_t *a)
{
    pool__inflight_set_scratch(pool, slot, NULL);
    free(a->block);
}

static bool attempt_init(pool_t *pool, int slot, attempt_t *a)
{
    const pool_hosts_t *h = &pool->hosts;
    size_t nopts = 0;
    for (const PQconninfoOption *o = h->opts; o->keyword; o++)
        nopts++;
    size_t strings = (nopts + 7) * sizeof(const char *);
    a->block = malloc(2 * strings + (size_t)h->n * sizeof *a->order);
    if (!a->block)
        return false;
    pool__inflight_set_scratch(pool, slot, a->block); /* a forked child frees it */
    a->kw = a->block;
    a->val = (const char **)((char *)a->block + strings);
    a->order = (int *)(void *)((char *)a->block + 2 * strings);
    int k = 0;
    for (const PQconninfoOption *o = h->opts; o->keyword; o++)
        if (o->val && !per_host(o->keyword) &&
            !(pool->cfg.get_password && strcmp(o->keyword, "password") == 0) &&
            !(pool->share_name && strcmp(o->keyword, "application_name") == 0)) {
            a->kw[k] = o->keyword;
            a->val[k++] = o->val;
        }
    if (pool->share_name) { /* fair_share's name, with the pool's mark (share.c) */
        a->kw[k] = "application_name";
        a->val[k++] = pool->share_name;
    }
    a->kw[k] = "host", a->kw[k + 1] = "hostaddr", a->kw[k + 2] = "port";
    a->kw[k + 3] = "target_session_attrs";
    a->kw[k + 4] = pool->cfg.get_password ? "password" : NULL;
    a->val[k + 4] = NULL;
    a->kw[k + 5] = a->val[k + 5] = NULL;
    a->k = k;
    return true;
}

/* Adds host j's reason to err, so that with several hosts the message says
   which host said what. */
static void append_reason(const pool_hosts_t *h, int j, int pass, const char *reason, char *err,
                          size_t errlen, size_t *used)
{
    int w = snprintf(err + *used, errlen - *used, "%shost \"%s\" port %s%s: %s",
                     *used ? "; " : "could not open connection: ", or_default(pool__hosts_name(h, j)),
                     or_default(h->port[j]), pass > 0 ? " (any role)" : "", reason);
    if (w > 0)
        *used = *used + (size_t)w < errlen ? *used + (size_t)w : errlen - 1;
}

/* get_password's answer in pw (NUL-terminated), or false with err set. */
static bool ask_password(pool_t *pool, char *pw, size_t len, int refresh, char *err, size_t errlen)
{
    pw[0] = '\0';
    int rc = pool->cfg.get_password(pw, len, refresh, pool->cfg.arg);
    pw[len - 1] = '\0';
    if (rc != 0)
        snprintf(err, errlen, "could not open connection: get_password failed (returned %d)", rc);
    return rc == 0;
}

static bool password_rejected(const char *sqlstate)
{
    return strcmp(sqlstate, "28P01") == 0 || strcmp(sqlstate, "28000") == 0;
}

/* One attempt per host (two passes for prefer-standby), failed hosts last;
   with get_password, a password rejected is asked for again once (refresh
   1) and that host tried again.  *refused: a server had no slot (53300).
   Lock NOT held: it takes the lock briefly to record each host's outcome. */
PGconn *pool__hosts_connect(pool_t *pool, int slot, int *host, char *err, size_t errlen,
                            bool *refused)
{
    const pool_hosts_t *h = &pool->hosts;
    attempt_t a;
    if (!attempt_init(pool, slot, &a)) {
        snprintf(err, errlen, "could not open connection: out of memory");
        return NULL;
    }
    char pw[POOL_PASSWORD_LEN]; /* get_password's, zeroed before return */
    bool asks = pool->cfg.get_password != NULL, refreshed = false;
    if (asks && !ask_password(pool, pw, sizeof pw, 0, err, errlen)) {
        attempt_free(pool, slot, &a);
        explicit_bzero(pw, sizeof pw);
        return NULL;
    }
    if (asks)
        a.val[a.k + 4] = pw;
    char reason[POOL_MSG_LEN];
    size_t used = 0;
    PGconn *pg = NULL;
    bool gave_up = false;
    for (int pass = 0; !pg && !gave_up && pass_target(h, pass); pass++) {
        bool last_pass = !pass_target(h, pass + 1);
        round_order(pool, a.order);
        for (int i = 0; !pg && i < h->n; i++) {
            int j = a.order[i];
            a.val[a.k] = h->host[j], a.val[a.k + 1] = h->hostaddr[j], a.val[a.k + 2] = h->port[j];
            a.val[a.k + 3] = pass_target(h, pass);
            char sqlstate[6];
            pg = pool__conn_open_params(pool, slot, a.kw, a.val, reason, sizeof reason, sqlstate);
            if (!pg && asks)
                pool__scrub_secret(reason, pw);
            *refused = *refused || strcmp(sqlstate, "53300") == 0;
            if (!pg && asks && !refreshed && password_rejected(sqlstate)) {
                refreshed = true; /* the credentials rotated: ask anew, try this host again */
                if (!(gave_up = !ask_password(pool, pw, sizeof pw, 1, err, errlen)))
                    i--;
                if (!gave_up)
                    continue;
                break;
            }
            /* prefer-standby's first pass turning a primary away is no fault. */
            if (pg || last_pass)
                record_attempt(pool, j, pg != NULL);
            if (pg)
                *host = j;
            else if (h->n == 1 && last_pass)
                snprintf(err, errlen, "could not open connection: %s", reason);
            else
                append_reason(h, j, pass, reason, err, errlen, &used);
        }
    }
    attempt_free(pool, slot, &a);
    if (asks)
        explicit_bzero(pw, sizeof pw);
    return pg;
}
