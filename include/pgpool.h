/* SPDX-License-Identifier: MIT */
/*
 * pgpool.h - an embeddable, thread-safe connection pool for libpq.
 *
 * An application creates one pool_t per database and its threads borrow and
 * return PGconn handles with pool_getconn() / pool_putconn().  The pool keeps
 * between min_size and max_size connections open (plus max_overflow under
 * load), validates connections before handing them out, retires idle and old
 * ones in a background thread, bounds how long a caller waits, and keeps
 * statistics that callers poll in-process.
 *
 * Threads.  A pool_t is shared: every function is safe to call from any thread
 * at any time, except pool_destroy(), which must be the last call on the pool
 * (it wakes callers blocked in pool_getconn and waits for them to leave).  A
 * borrowed PGconn belongs to the borrowing thread until it is returned, which is
 * libpq's own rule: never use one PGconn from two threads at once.  Errors are
 * reported per thread through pool_errcode()/pool_errmsg(), like errno.
 *
 * Cancellation.  No pgpool call is a cancellation point.  A thread cancelled
 * (pthread_cancel, deferred) while inside one - waiting in line, validating,
 * rolling back or resetting, closing, connecting, in a hook or on_log, which
 * run with cancellation disabled - finishes the call, within its usual
 * bounds (a waiting caller leaves at its deadline or when served), and acts
 * on the cancel at its next cancellation point after the call returns.  So
 * the pool's bookkeeping is always complete: no connection is lost inside
 * the library, no count stays raised, pool_destroy never waits on a dead
 * call.  A connection pool_getconn returned belongs to the caller: a thread
 * that may be cancelled while holding one returns it from a cleanup handler
 * (pthread_cleanup_push), as it would free memory.
 *
 * Connections.  Callers never open connections themselves: two background
 * workers do (so at most two attempts are in flight), and a new connection goes
 * to the longest waiting caller.  After a failed attempt they back off, from
 * 10 ms doubling to 1 s.  A maintenance thread closes idle and old connections,
 * refills to min_size and reports leaks.
 *
 * Fork.  A child process that uses a pool inherited from its parent gets fresh
 * connections: the inherited ones are dropped without sending anything on
 * their sockets, so the parent's sessions are untouched.
 *
 * ABI.  pgpool keeps a program built against an older header working with a
 * newer library of the same major version (the SONAME, libpgpool.so.1).  A
 * minor release may add functions, config fields at the end of pool_config_t
 * and stats fields at the end of pool_stats_t and pool_host_stats_t; it never
 * moves, removes or retypes one.  So that a struct can grow, the size the
 * program was compiled with travels with every call that takes one:
 * pool_config_init, pool_create, pool_get_stats, pool_stats_format,
 * pool_get_host_stats and pool_host_stats_format are macros that pass
 * sizeof(the struct) to a *_sized function.  The library reads and writes
 * only that many bytes, gives a field the caller's struct lacks its default,
 * and refuses a larger config whose unknown tail is not zero (a program
 * built against a newer header than the library).  The plain names are
 * exported too, for programs built against 1.0's header (which had no
 * macros): they mean the struct sizes of version 1.0.  Always fill a config
 * with pool_config_init() before setting fields, so new fields get their
 * defaults.
 */
#ifndef PGPOOL_H
#define PGPOOL_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PGPOOL_VERSION_MAJOR 1
#define PGPOOL_VERSION_MINOR 1
#define PGPOOL_VERSION_PATCH 0
/* One number for comparisons: 10000 * major + 100 * minor + patch (10100). */
#define PGPOOL_VERSION_NUMBER \
    (PGPOOL_VERSION_MAJOR * 10000 + PGPOOL_VERSION_MINOR * 100 + PGPOOL_VERSION_PATCH)

#if defined(PGPOOL_BUILDING) && defined(__GNUC__)
#define POOL_EXTERN __attribute__((visibility("default")))
#else
#define POOL_EXTERN
#endif

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct pool pool_t; /* opaque */

/* The error codes and their pool_strerror() texts, in one list so that a new
   code cannot miss its message.  POOL_OK is 0, the rest follow in this order. */
#define POOL_ERRNO_MAP(X)                                                                 \
    X(POOL_OK, "success")                                                                 \
    /* bad argument: NULL, out-of-range config, foreign or twice-returned connection */   \
    X(POOL_EINVAL, "invalid argument")                                                    \
    /* no connection became available within the acquire timeout */                       \
    X(POOL_ETIMEDOUT, "timed out waiting for a connection")                               \
    /* a new connection could not be opened (libpq's message in pool_errmsg) */           \
    X(POOL_ECONNECT, "could not open a connection")                                       \
    /* max_waiting callers already waiting: rejected at once */                           \
    X(POOL_EBUSY, "too many callers waiting")                                             \
    /* the pool is being destroyed */                                                     \
    X(POOL_ECLOSED, "pool is closed")                                                     \
    X(POOL_ENOMEM, "out of memory")

typedef enum pool_err {
#define POOL_ERR_ENUM(name, text) name,
    POOL_ERRNO_MAP(POOL_ERR_ENUM)
#undef POOL_ERR_ENUM
} pool_err_t;

/* pool_errmsg() and the message pool_create writes into errbuf are at most
   this long, the NUL included: an errbuf of this size is never truncated. */
#define POOL_ERRMSG_SIZE 512

/* Levels passed to on_log. */
#define POOL_LOG_ERROR 0
#define POOL_LOG_WARN 1
#define POOL_LOG_INFO 2
#define POOL_LOG_DEBUG 3

typedef struct pool_config {
    const char *conninfo;    /* libpq keyword/value string or URI; required; copied; may
                                carry pool_* settings (see pool_create) */
    int min_size;            /* connections kept open even when idle (default 1) */
    int max_size;            /* connections kept when idle, at most (default 10) */
    int max_overflow;        /* extra connections opened under load beyond max_size,
                                closed when returned with nobody waiting (default 0) */
    int acquire_timeout_ms;  /* how long pool_getconn waits (default 30000);
                                0 = do not wait; <0 = wait forever */
    int connect_timeout_ms;  /* bound on opening one connection, and on one
                                round-trip check, rollback or reset (default 10000) */
    int idle_timeout_ms;     /* close idle connections above min_size after this long
                                idle (default 600000; 0 = never) */
    int max_lifetime_ms;     /* retire a connection this long after it was opened, when
                                it is next idle (default 1800000; 0 = never) */
    int pre_ping;            /* validate a connection before handing it out (default 1) */
    int ping_idle_ms;        /* with pre_ping: a round-trip check only for connections idle
                                at least this long; younger ones get the zero-round-trip
                                check only (default 1000) */
    int max_waiting;         /* callers allowed to wait at once; beyond: POOL_EBUSY
                                (default 0 = unlimited) */
    int leak_timeout_ms;     /* warn (log + stats) when a connection stays checked out
                                longer than this (default 0 = off) */
    const char *reset_query; /* run when a connection is returned, e.g. "DISCARD ALL"
                                (default NULL: only ROLLBACK a connection left in a
                                transaction); copied */
    int (*on_connect)(PGconn *conn, void *arg); /* once per new connection, before first
                                use (SET, PREPARE...); nonzero = reject, close it */
    void (*on_log)(int level, const char *msg, void *arg); /* level: POOL_LOG_ERROR,
                                POOL_LOG_WARN, POOL_LOG_INFO, POOL_LOG_DEBUG; default:
                                errors and warnings to stderr */
    void *arg;               /* passed to the callbacks */
    /* Added with the operator features; NULL (the default) = no hook.  Neither
       runs with a pool lock held, so both may call the pool (not pool_destroy). */
    int (*on_checkout)(PGconn *conn, void *arg); /* after validation, just before
                                pool_getconn hands conn out; nonzero: close it and
                                serve the caller from another, within its deadline */
    int (*on_checkin)(PGconn *conn, void *arg);  /* first thing in pool_putconn, before
                                any rollback or reset_query; nonzero: close it instead
                                of reusing it.  Not run by pool_discard */
    /* Added with the event-loop calls (see "Event loops" below). */
    int return_in_background; /* 1: pool_putconn and pool_discard never wait on the
                                network: a ROLLBACK, reset_query or close the return
                                needs runs on a pool thread, and the connection is
                                reused only after it finished; on_checkin still runs
                                first, on the caller's thread (default 0) */
    /* Added with sizing against the server. */
    int lifetime_jitter_ms;  /* each connection's lifetime is max_lifetime_ms minus a
                                random amount up to this, so connections opened
                                together do not all retire together; less than
                                max_lifetime_ms (default 0) */
    int (*get_password)(char *buf, size_t len, int refresh, void *arg); /* NULL (the
                                default): the conninfo's password.  Else called before
                                each new connection, with the lock released (on a pool
                                thread; pool_create's first connections on its
                                caller's), refresh 0; and once more, refresh 1, when
                                the server rejects the password (SQLSTATE 28P01 or
                                28000), followed by one retry.  Writes a NUL-terminated
                                password into buf and returns 0; nonzero fails the
                                attempt.  pgpool zeroes its copy after the connect and
                                never logs it or shows it in an error; with pool_evict,
                                credentials rotate without a new pool */
    int fair_share;          /* 1: cap this pool at its share of the server (default 0;
                                pool_fair_share in the conninfo).  Connections are named
                                "<application_name> #<mark>" (the conninfo's name, or
                                PGAPPNAME, or fallback_application_name, or "pgpool";
                                cut to fit 63 bytes; the mark 8 hex digits per pool), so
                                that one query on pg_stat_activity counts the pools of
                                the same name, role and database.  The slots left to
                                them under max_connections (less the reserved ones),
                                the role's and the database's connection limits, less
                                the backends others hold, are divided equally; the
                                share (at least 1) caps effective_max.  Read after the
                                first connection, then every second while callers wait
                                or the pool is at its limit, every 10 s otherwise, on a
                                connection of the pool's own (one round trip on the
                                pool's service thread); logged at INFO when it changes.
                                A census that fails (no right to read pg_stat_activity)
                                is logged once at WARN and leaves the share as it was.
                                pool_create never fails for it */
} pool_config_t;

/* Latency histograms: fixed log2 buckets in microseconds. bucket[0] counts samples
   under 1 us; bucket[i] (1 <= i < POOL_HIST_BUCKETS-1) counts samples in
   [2^(i-1), 2^i) us; the last bucket counts everything from 2^(POOL_HIST_BUCKETS-2) us up. */
#define POOL_HIST_BUCKETS 32
typedef struct pool_hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t bucket[POOL_HIST_BUCKETS];
} pool_hist_t;

typedef struct pool_stats {
    /* gauges, as of the call */
    int total;      /* open connections: idle + in_use */
    int idle;
    int in_use;     /* checked out, or being validated, rolled back or reset */
    int connecting; /* connection attempts in flight */
    int waiting;    /* callers blocked in pool_getconn, and async requests in line */
    int min_size, max_size, max_overflow;
    /* counters since pool_create; they only grow */
    uint64_t acquired;         /* successful pool_getconn calls (and async requests,
                                  counted when their callback runs; so are the next
                                  two, and the wait figures; a cancelled one is not) */
    uint64_t acquire_timeouts; /* pool_getconn calls that failed with POOL_ETIMEDOUT */
    uint64_t acquire_errors;   /* ... that failed for any other reason */
    uint64_t connects;         /* connections opened */
    uint64_t connect_errors;   /* failed attempts to open one */
    uint64_t closed;           /* connections closed, for any reason */
    uint64_t closed_broken;    /* ... because they were found dead or unusable */
    uint64_t closed_idle;      /* ... by idle_timeout_ms */
    uint64_t closed_lifetime;  /* ... by max_lifetime_ms */
    uint64_t pings;            /* round-trip validations run */
    uint64_t rollbacks;        /* connections returned inside a transaction, rolled back */
    uint64_t leaks;            /* checkouts that passed leak_timeout_ms */
    uint64_t wait_us_total;    /* time callers spent in pool_getconn */
    uint64_t wait_us_max;
    uint64_t hold_us_total;    /* time connections spent checked out */
    /* histograms, from the same snapshot as the counters */
    pool_hist_t wait_hist;     /* time spent in pool_getconn, by every call that returned:
                                  count = acquired + acquire_timeouts + acquire_errors,
                                  sum_us = wait_us_total */
    pool_hist_t hold_hist;     /* checkout to return, per returned connection (a
                                  pool_discard is a return); sum_us = hold_us_total */
    pool_hist_t connect_hist;  /* opening one connection, on_connect included;
                                  count = connects */
    /* beyond one machine (several hosts, failover); counters */
    uint64_t closed_role;      /* closed because the server no longer matched the conninfo's
                                  target_session_attrs (demoted, promoted or made
                                  read-only), as it reported after a statement or a ping */
    uint64_t evictions;        /* host-wide evictions: a connection to a host broke, failed
                                  its ping or was marked by the server's error (class 08,
                                  57P01-57P03, 25006 where writes are expected), so every
                                  connection then open to that host was retired */
    uint64_t closed_evicted;   /* closed because retired by an eviction or by pool_evict */
    /* sizing against the server */
    int effective_max;         /* gauge: the ceiling in force now, max_size + max_overflow
                                  or lower: each refusal for lack of slots (SQLSTATE
                                  53300) halves it, connects that succeed raise it again
                                  one at a time */
    uint64_t server_refusals;  /* connects the server refused for lack of slots (53300:
                                  max_connections, a role's or a database's limit) */
} pool_stats_t;

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

/* Fills every field of *cfg with its default (conninfo NULL).  Never fails;
   does nothing when cfg is NULL.  Call it before setting any field.  A macro
   over pool_config_init_sized (see ABI at the top). */
POOL_EXTERN void pool_config_init(pool_config_t *cfg);
POOL_EXTERN void pool_config_init_sized(pool_config_t *cfg, size_t size);
#define pool_config_init(cfg) pool_config_init_sized((cfg), sizeof(pool_config_t))

/* ------------------------------------------------------------------------ */
/* Create and destroy                                                       */
/* ------------------------------------------------------------------------ */

/* Checks *cfg, copies what it needs (conninfo and reset_query included) and
   opens min_size connections before it returns.  The conninfo may carry pool
   settings that override the struct's fields (the operator's URL wins):
   pool_min_size, pool_max_size, pool_max_overflow, pool_max_waiting (counts),
   pool_acquire_timeout (-1 = for ever), pool_connect_timeout, pool_idle_timeout,
   pool_max_lifetime, pool_ping_idle, pool_leak_timeout, pool_lifetime_jitter
   (durations: a whole
   number with ms, s, min or h; bare = ms), pool_pre_ping and
   pool_return_in_background and pool_fair_share (0/1/on/off/true/false) and pool_reset_query
   (empty = none), as URI query parameters (percent-decoded)
   or keyword/value pairs; a later duplicate wins; libpq never sees them, and an
   unknown pool_ key or a bad value fails with a message naming the key.  With
   several hosts each gets one attempt bounded by connect_timeout_ms, checked
   against target_session_attrs; load_balance_hosts=random is done by pgpool.
   Blocks for at most about min_size * hosts * connect_timeout_ms.  Returns
   NULL on failure, with a message in
   errbuf (when errbuf is not NULL, truncated to errlen bytes including the NUL)
   naming the bad field or giving libpq's reason when the first connection
   cannot be opened; pool_errcode() says POOL_EINVAL, POOL_ECONNECT or
   POOL_ENOMEM.  Starts the pool's background threads.  Thread-safe.  A
   macro over pool_create_sized (see ABI at the top). */
POOL_EXTERN pool_t *pool_create(const pool_config_t *cfg, char *errbuf, size_t errlen);
POOL_EXTERN pool_t *pool_create_sized(const pool_config_t *cfg, size_t size, char *errbuf,
                                      size_t errlen);
#define pool_create(cfg, errbuf, errlen) \
    pool_create_sized((cfg), sizeof(pool_config_t), (errbuf), (errlen))

/* Marks the pool closed, wakes every caller waiting in pool_getconn (they fail
   with POOL_ECLOSED) and waits for them to leave, stops the background threads
   (an attempt to connect in flight is abandoned within ~50 ms) and closes every
   connection.  Connections still checked out are reported through on_log as
   leaks and closed as well: do not use them afterwards.  Must be the last call
   on the pool; pool_destroy(NULL) does nothing. */
POOL_EXTERN void pool_destroy(pool_t *pool);

/* ------------------------------------------------------------------------ */
/* Borrow and return                                                        */
/* ------------------------------------------------------------------------ */

/* Borrows a connection, waiting up to the pool's acquire_timeout_ms.  Same as
   pool_getconn_timeout(pool, cfg.acquire_timeout_ms). */
POOL_EXTERN PGconn *pool_getconn(pool_t *pool);

/* Borrows a validated connection in CONNECTION_OK status, outside any
   transaction, in blocking mode.  Waits (first come, first served) until one
   is free or newly opened, at most timeout_ms (0: only take an idle one, do not
   wait, but have one opened in the background for the next caller if there is
   room; <0: wait forever).  A round-trip check due on the connection it
   claimed may run up to 20 ms past a nearer deadline, since cutting it short
   would close a healthy connection.  The caller owns it until pool_putconn or
   pool_discard; never PQfinish it.  Returns NULL and sets pool_errcode() to
   POOL_ETIMEDOUT, POOL_ECONNECT (the database refuses connections and nothing
   checked out could come back), POOL_EBUSY (max_waiting reached), POOL_ECLOSED
   or POOL_EINVAL.  Thread-safe. */
POOL_EXTERN PGconn *pool_getconn_timeout(pool_t *pool, int timeout_ms);

/* Returns a borrowed connection.  One left inside a transaction is rolled back;
   one with a query or COPY in progress, in pipeline mode, or broken is closed
   (one still running a query once its backend has finished it, so that the
   server never counts more backends than the pool's maximum);
   with reset_query set, that runs (a failure closes the connection).  Rollback,
   reset and such a close block for at most connect_timeout_ms.  One retired meanwhile
   (pool_evict, or its host evicted after a sibling failed) is closed as it is,
   its transaction ending with it.  The connection goes to the
   longest waiting caller, else to the idle set, else (overflow) it is closed.
   Returns POOL_OK, or POOL_EINVAL for NULL, a connection this pool did not hand
   out, or one already returned (the pool is unharmed).  Thread-safe. */
POOL_EXTERN int pool_putconn(pool_t *pool, PGconn *conn);

/* Returns a borrowed connection to be closed rather than reused (after an
   error that left its session in doubt, say).  The pool opens a replacement
   in the background when below min_size.  POOL_OK or POOL_EINVAL as for
   pool_putconn.  Never blocks on the network.  Thread-safe. */
POOL_EXTERN int pool_discard(pool_t *pool, PGconn *conn);

/* ------------------------------------------------------------------------ */
/* Event loops                                                              */
/* ------------------------------------------------------------------------ */

/* For a program whose thread must never block (an epoll loop, libuv,
   libevent): ask for a connection, watch pool_fd with the loop, and call
   pool_dispatch when it is readable; the request's callback then runs with
   the connection.  Requests stand in the same first-come-first-served line
   as pool_getconn's callers (and count in `waiting` and `wait_hist`).  A pool
   thread validates the connection (the zero-round-trip check, a due ping,
   on_checkout) and fires the deadlines: the loop keeps no timer and does no
   I/O for the pool.  See "Event loops" in README.md and examples/. */
typedef struct pool_request pool_request_t; /* opaque */

/* conn: a validated connection, the caller's as if pool_getconn had
   returned it, and err POOL_OK; or NULL and POOL_ETIMEDOUT (the deadline,
   from the pool_getconn_async call), POOL_ECONNECT or POOL_ECLOSED, with
   pool_errmsg() saying why. */
typedef void (*pool_acquire_cb)(pool_t *pool, PGconn *conn, pool_err_t err, void *arg);

/* Asks for a connection without blocking and without I/O on this thread.
   timeout_ms means what pool_getconn_timeout's does.  cb(pool, conn, err,
   arg) runs exactly once unless the request is cancelled, only inside
   pool_dispatch (never inside this call or pool_putconn).  Returns the
   request, valid until its callback returns or pool_cancel returns 0; or
   NULL with pool_errcode() POOL_EINVAL (NULL pool or cb), POOL_EBUSY
   (max_waiting reached), POOL_ECLOSED or POOL_ENOMEM.  Thread-safe. */
POOL_EXTERN pool_request_t *pool_getconn_async(pool_t *pool, int timeout_ms, pool_acquire_cb cb,
                                               void *arg);

/* Cancels a request whose callback has not run: the callback never runs, a
   connection already set aside for it goes to the next in line, and 0 is
   returned.  -1 and POOL_EINVAL when its callback has run or runs now, or it
   was cancelled already.  Thread-safe; never blocks on the network. */
POOL_EXTERN int pool_cancel(pool_t *pool, pool_request_t *req);

/* The pool's descriptor (an eventfd, close-on-exec), readable while at least
   one callback is ready: watch it level-triggered for reading.  The same
   descriptor for the pool's life; never close it.  -1 with POOL_EINVAL for a
   pool that is not live, or POOL_ENOMEM when no descriptor can be had.
   Thread-safe. */
POOL_EXTERN int pool_fd(pool_t *pool);

/* Runs up to max ready callbacks (max <= 0: every one ready now), in the
   order their requests were completed, one at a time even when several
   threads dispatch, and returns how many ran; -1 with POOL_EINVAL for a pool
   that is not live or a call from inside one of its callbacks.  A callback
   may call the pool (pool_getconn_async, pool_putconn...), not pool_destroy.
   pool_destroy completes every request still pending with POOL_ECLOSED and
   runs those callbacks itself, on its own thread, before it returns. */
POOL_EXTERN int pool_dispatch(pool_t *pool, int max);

/* ------------------------------------------------------------------------ */
/* Runtime control                                                          */
/* ------------------------------------------------------------------------ */

/* Each is safe under load, from any thread, never interrupts a borrower, and
   returns POOL_OK, or POOL_EINVAL (pool_errmsg says why) for a pool that is
   NULL or not live. */

/* Changes the pool's size with the same checks as pool_create (POOL_EINVAL
   naming the field, the pool unchanged; POOL_ENOMEM).  Growing serves waiters
   at once and a higher min_size is filled in the background at once.
   Shrinking closes idle connections above the new max_size before it returns
   (blocking while their backends exit, each at most connect_timeout_ms) and
   in-use ones when returned, even with callers waiting, while more than
   max_size + max_overflow are open. */
POOL_EXTERN int pool_resize(pool_t *pool, int min_size, int max_size, int max_overflow);

/* Retires every connection, for failover or credential rotation: idle ones
   are closed before it returns (blocking as pool_resize does), checked-out
   ones when returned (never reused nor handed to a waiter), and new ones
   refill to min_size in the background.  No connection whose opening began
   before the call is handed out after it. */
POOL_EXTERN int pool_evict(pool_t *pool);

/* Stops handing out connections: pool_getconn waits in line (counted in
   `waiting`, first come first served) within its deadline until
   pool_resume; timeout-0 callers fail at once with POOL_ETIMEDOUT.  Returns,
   maintenance, stats and pool_destroy go on; no new connections are opened
   beyond min_size.  Never blocks; idempotent. */
POOL_EXTERN int pool_pause(pool_t *pool);

/* Hands out connections again, to the waiters in their order first.  Never
   blocks; idempotent. */
POOL_EXTERN int pool_resume(pool_t *pool);

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* Why this thread's last failed pool call failed (POOL_OK if none failed yet).
   Successful calls do not reset it. */
POOL_EXTERN pool_err_t pool_errcode(void);

/* A human-readable message for this thread's last failure, in lower case, never
   containing a password; "" if none.  Valid until this thread's next pool call.
   It is the whole story (what failed and why: "could not open connection:
   <libpq's reason>"): print it alone, not after pool_strerror(), which
   would say the first half twice. */
POOL_EXTERN const char *pool_errmsg(void);

/* A static description of err, for when only the code is at hand; "unknown
   error" for a value outside the enum. */
POOL_EXTERN const char *pool_strerror(pool_err_t err);

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */
/* ------------------------------------------------------------------------ */

/* Copies one consistent snapshot of the pool's gauges and counters into *out,
   taken under the pool's lock (never blocks on the network).  Returns POOL_OK,
   or POOL_EINVAL for a NULL argument.  Thread-safe.  A macro over
   pool_get_stats_sized (see ABI at the top). */
POOL_EXTERN int pool_get_stats(pool_t *pool, pool_stats_t *out);
POOL_EXTERN int pool_get_stats_sized(pool_t *pool, pool_stats_t *out, size_t size);
#define pool_get_stats(pool, out) pool_get_stats_sized((pool), (out), sizeof(pool_stats_t))

/* One host of the conninfo, as pool_get_host_stats reports it. */
typedef struct pool_host_stats {
    char host[256];            /* the host name, else its hostaddr, as in the conninfo;
                                  "" = libpq's default (the Unix socket directory) */
    char port[16];             /* "" = libpq's default */
    int open;                  /* gauge: connections open to this host */
    int down;                  /* gauge: 1 while its last attempt failed and it is tried
                                  only after the other hosts (a capped backoff), else 0 */
    uint64_t connects;         /* connections opened to it */
    uint64_t connect_errors;   /* attempts on it that failed, target_session_attrs included */
    uint64_t evictions;        /* host-wide evictions of its connections */
} pool_host_stats_t;

/* Fills out[0..max-1] with the conninfo's hosts in conninfo order, from one
   snapshot taken under the pool's lock, and returns how many hosts there are
   (more than max: only max were written; out may be NULL when max is 0), or
   -1 with pool_errcode() POOL_EINVAL for a pool that is NULL or not live, a
   negative max, or a NULL out with max > 0.  Never blocks on the network;
   thread-safe.  A macro over pool_get_host_stats_sized (see ABI at the top). */
POOL_EXTERN int pool_get_host_stats(pool_t *pool, pool_host_stats_t *out, int max);
POOL_EXTERN int pool_get_host_stats_sized(pool_t *pool, pool_host_stats_t *out, int max,
                                          size_t size);
#define pool_get_host_stats(pool, out, max) \
    pool_get_host_stats_sized((pool), (out), (max), sizeof(pool_host_stats_t))

typedef enum pool_format { POOL_FORMAT_PROMETHEUS, POOL_FORMAT_JSON } pool_format_t;

/* Writes snapshot *s as text labelled with pool name `name`: Prometheus text
   exposition format 0.0.4 (metrics pgpool_*, label pool="<name>") or one JSON
   object (keys named as the pool_stats_t fields).  Like snprintf: writes at most
   len bytes including the terminating NUL (buf may be NULL when len is 0) and
   returns the length the whole text needs, without the NUL; -1 with
   pool_errcode() POOL_EINVAL for a NULL s or name, an unknown format, or a NULL
   buf with len > 0.  Never blocks; thread-safe.  A macro over
   pool_stats_format_sized (see ABI at the top): a field the caller's struct
   lacks is left out of the text. */
POOL_EXTERN int pool_stats_format(const pool_stats_t *s, pool_format_t fmt, const char *name,
                                  char *buf, size_t len);
POOL_EXTERN int pool_stats_format_sized(const pool_stats_t *s, size_t size, pool_format_t fmt,
                                        const char *name, char *buf, size_t len);
#define pool_stats_format(s, fmt, name, buf, len) \
    pool_stats_format_sized((s), sizeof(pool_stats_t), (fmt), (name), (buf), (len))

/* Writes n host snapshots from pool_get_host_stats as text labelled with pool
   name `name`, like pool_stats_format: Prometheus gauges
   pgpool_host_connections and pgpool_host_down and counters
   pgpool_host_connects_total, pgpool_host_connect_errors_total and
   pgpool_host_evictions_total, each with labels pool, host and port; or one
   JSON object {"pool":name,"hosts":[{"host","port","open","down","connects",
   "connect_errors","evictions"}...]}.  Returns the length the whole text needs;
   -1 with POOL_EINVAL for a NULL name, a NULL hs with n > 0, a negative n, an
   unknown format, or a NULL buf with len > 0.  Never blocks; thread-safe.  A
   macro over pool_host_stats_format_sized (see ABI at the top). */
POOL_EXTERN int pool_host_stats_format(const pool_host_stats_t *hs, int n, pool_format_t fmt,
                                       const char *name, char *buf, size_t len);
POOL_EXTERN int pool_host_stats_format_sized(const pool_host_stats_t *hs, int n, size_t size,
                                             pool_format_t fmt, const char *name, char *buf,
                                             size_t len);
#define pool_host_stats_format(hs, n, fmt, name, buf, len) \
    pool_host_stats_format_sized((hs), (n), sizeof(pool_host_stats_t), (fmt), (name), (buf), (len))

/* The q-quantile (q clamped to [0, 1]) of h: the upper bound in us (2^i) of the
   first bucket i at which the running count reaches max(1, ceil(q * count));
   UINT64_MAX when that is the last, unbounded bucket; 0 for NULL or an empty
   histogram.  Pure function of *h; thread-safe. */
POOL_EXTERN uint64_t pool_hist_percentile(const pool_hist_t *h, double q);

/* ------------------------------------------------------------------------ */
/* Version                                                                  */
/* ------------------------------------------------------------------------ */

/* The version of the library the program runs against, as
   PGPOOL_VERSION_NUMBER (which is the header's): a program may refuse to run
   on a library older than the header it was built with.  Thread-safe. */
POOL_EXTERN unsigned pool_version(void);

/* The same as "major.minor.patch", a static string.  Thread-safe. */
POOL_EXTERN const char *pool_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* PGPOOL_H */
