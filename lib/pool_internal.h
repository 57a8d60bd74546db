/* SPDX-License-Identifier: MIT */
/*
 * pool_internal.h - what the files of lib/ share, and which lock guards what.
 *
 * Everything of the pool's state is guarded by pool->lock unless a comment
 * says otherwise; the fast path (fast.c) works on a thread's own connection
 * slot with atomics and never takes it.
 *
 * Layers.  CMakeLists.txt lists the files of lib/ lowest first; a file calls only
 * files before it (tests/check_layers.sh): helpers (version, clock, error,
 * conn_map, waitq, wake, requests, config, settings, format), one
 * connection (inflight.c, conn.c, hosts.c), the core under the lock
 * (pool.c), then closing (close.c), opening (open.c), judging a checkout
 * (checkout.c), the background threads (workers.c, maint.c, service.c,
 * threads.c), fork.c, the lock-free path (fast.c), and the public calls
 * (stats.c, control.c, getconn.c, putconn.c, async.c, create.c, abi.c).
 *
 * Lock rules.  pool->lock is taken before pool->inflight_lock, never after
 * it (inflight.c: held only around one libpq step of a connect and across
 * fork()).  A function named *_locked is called with pool->lock held and
 * returns with it held; one that releases it partway (to wait, or around
 * I/O) says so in its first comment.  No I/O and nothing that can block runs
 * under the lock: the socket poll of the zero-round-trip check, round trips,
 * hooks, connects and closes all run with it released, on a connection the
 * thread has claimed; closes are detached into a pool_closing_t under the
 * lock and done after it (close.c).  A waiter handed a connection is woken
 * after the lock is released (pool_unlock, wake.c).  The syscalls that can
 * still happen under the lock, each bounded and off the steady-state path:
 * the futex wake of a waiter beyond the 64th woken in one lock hold (wake.c:
 * only pool_resume, pool_destroy or a failed connect can wake that many);
 * pthread_cond_signal/broadcast of the connect workers and the maintenance
 * thread, which enters the kernel only when a thread sleeps there, i.e. when
 * a connection is due to be opened or the pool closes (signalling after the
 * unlock would race with pool_destroy freeing the condition variable; the
 * service thread sleeps on a futex word instead and is kicked after the
 * unlock, like waiters, as is the eventfd's write); the eventfd's read when
 * pool_dispatch or pool_cancel empties the ready list of async requests
 * (requests.c: non-blocking, so that the descriptor is not left readable
 * with nothing ready);
 * sched_yield in pool_get_stats while a fast-path writer is preempted inside
 * its few-instruction seqlock section (fast.c); and pool_resize to a larger
 * maximum than ever before, which reallocates the connection lookup table
 * (conn_map.c: a malloc, an mmap when large) so that no borrower ever finds
 * it half rehashed.
 *
 * Names.  Every function or variable that two files share is called pool__*
 * (libuv's uv__ rule): libpgpool.a then defines no global name outside
 * pool_, so a program linking it statically cannot collide with us (its own
 * conn_close, say).  The public API is pool_* with one underscore; the
 * exports test checks both libraries.
 */
#ifndef POOL_INTERNAL_H
#define POOL_INTERNAL_H

#include "pgpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define POOL_MAGIC 0x706f6f6cu      /* "pool" */
#define POOL_MAGIC_DEAD 0xdeadb00fu
#define POOL_MSG_LEN POOL_ERRMSG_SIZE
#define POOL_CONNECT_WORKERS 2      /* bound on connection attempts in flight */
#define POOL_INFLIGHT_SLOTS (POOL_CONNECT_WORKERS + 1) /* and pool_create's own */
#define POOL_BACKOFF_MIN_US 10000   /* first retry after a failed connect */
#define POOL_BACKOFF_MAX_US 1000000 /* retries never wait longer than this */
#define POOL_CEILING_STEP_US 100000 /* a ceiling learnt from refusals rises by one this
                                       often (jittered) while connects succeed */
#define POOL_SHARE_BUSY_US 1000000  /* fair_share's census, while callers wait or the
                                       pool is at its limit (share.c) */
#define POOL_SHARE_CALM_US 10000000 /* and otherwise */
#define POOL_HOST_DOWN_MIN_US 1000000  /* a host that failed an attempt goes last this long, */
#define POOL_HOST_DOWN_MAX_US 8000000  /* doubling while it keeps failing, up to this */
#define POOL_PASSWORD_LEN 4096     /* get_password's buffer: cloud IAM tokens run to 1-2 KB */
#define POOL_CLOSE_BATCH 32         /* connections detached per lock hold, closed after it */
#define POOL_MAX_CONNECTIONS 100000 /* sanity bound on max_size + max_overflow */
#define POOL_PING_GRACE_US 20000    /* a due round trip gets this long even past the
                                       caller's deadline: cut shorter, it would close
                                       a healthy connection (query left in flight) */

/* Where a connection is.  Each pool_conn_t is in exactly one state.  The
   state is atomic because of the fast path (fast.c): without the lock, the
   thread holding a connection may park it (IN_USE -> RETURNING -> PARKED)
   and any thread may take a parked one back (PARKED -> CHECKING by CAS).
   Every other transition happens under pool->lock, and a lock holder that
   wants a PARKED connection claims it by CAS as well. */
typedef enum conn_state {
    CONN_FREE,      /* the slot holds no connection: on pool->free_slots */
    CONN_IDLE,      /* on the idle list */
    CONN_PARKED,    /* idle off the list, where the thread that returned it finds it
                       again without the lock; counts as idle */
    CONN_CHECKING,  /* taken by pool_getconn, being validated or handed to a waiter */
    CONN_IN_USE,    /* owned by a borrower */
    CONN_RETURNING, /* inside pool_putconn: rollback or reset running */
} conn_state_t;

/* The statistics the fast path records without the lock, per connection slot
   (so two threads never write the same cache line).  Written only by the
   thread holding the connection, inside a seqlock (seq odd while writing);
   pool_get_stats adds every slot's shard to the pool's counters. */
typedef struct conn_shard {
    _Atomic uint64_t seq;
    _Atomic uint64_t acquired;               /* checkouts, each with a wait of 0 */
    _Atomic uint64_t hold_count, hold_sum_us;
    _Atomic uint64_t hold_bucket[POOL_HIST_BUCKETS];
} conn_shard_t;

/* One connection slot: all of a connection's bookkeeping lives here.  Slots
   are never freed while the pool lives (a closed connection's slot goes to
   pool->free_slots for the next one), so a thread's cached pointer to one
   (fast.c) is always safe to look at. */
typedef struct pool_conn {
    PGconn *_Atomic pg;              /* written under pool->lock while the slot is not
                                        reachable by the fast path's CAS; atomic because
                                        a stale cached pointer may be compared meanwhile */
    _Atomic conn_state_t state;      /* see conn_state_t */
    struct pool_conn *prev, *next;   /* idle list (or free list: next) links; guarded by
                                        pool->lock */
    struct pool_conn *all_next;      /* every slot ever made; immutable once linked */
    int64_t created_us;              /* set when the connection is tracked, then immutable */
    int64_t lifetime_us;             /* max_lifetime_ms less its jitter; set with created_us */
    int64_t idle_since_us;           /* written by whoever makes it IDLE or PARKED, before
                                        publishing that state; read after claiming it */
    _Atomic int64_t checkout_us;     /* written by the holder; read by maint (leaks) */
    atomic_bool leak_reported;       /* reset by the holder at checkout; set by maint */
    /* Who the session is, as the server reported it once on_connect had run;
       immutable after open.  A connection returned as someone else is not
       reused (see pool__session_identity_changed in conn.c). */
    char session_user[64];           /* "session_authorization"; NAMEDATALEN is 64 */
    char superuser;                  /* first letter of "is_superuser": 'o'n/'o'ff... or 0 */
    bool identity_known;             /* the server reports both */
    /* Results libpq created on this connection (counted by an event proc in
       the thread using it: the borrower, or pgpool during validation and
       reset), and the count at which the identity was last found unchanged.
       No new result: no statement ran, so the identity cannot have changed
       and the check (a list walk with string compares) is skipped. */
    unsigned long results;           /* written by the connection's user; read at return */
    unsigned long results_verified;  /* written by the returning thread, which holds it */
    bool results_counted;            /* the event proc is registered; immutable */
    bool writes_expected;            /* target_session_attrs is read-write or primary;
                                        immutable */
    unsigned char doom;              /* DOOM_*: what an application result's SQLSTATE said
                                        (the event proc, in the user's thread); read by the
                                        returning thread, which holds it */
    unsigned fork_gen;               /* fork generation it was opened in: another one means it
                                        was inherited across fork() and must be dropped silently */
    unsigned epoch;                  /* pool->epoch when its opening began; immutable.  An
                                        older one was evicted: never handed out again */
    int host;                        /* index in pool->hosts it was opened to; immutable */
    atomic_bool evicted;             /* its host was evicted (close.c): never handed out
                                        again.  Set under pool->lock, reset when the slot
                                        gets a new connection; read by its holder without */
    conn_shard_t shard;              /* kept across the slot's connections */
} pool_conn_t;

/* Why a connection must not be reused, from an error the server sent. */
enum {
    DOOM_NONE,
    DOOM_SERVER,    /* class 08 or 57P01-57P03: the session or the server is going away */
    DOOM_READ_ONLY, /* 25006 where writes are expected: the server became read-only */
};

/* Why a connection is closed (close.c): the counter it goes to, whether its
   host is retired with it (the server is suspect), and whether closing it
   waits for the server to end the backend (graceful) or drops the socket. */
typedef enum close_reason {
    CLOSE_NONE,      /* it stays: the verdict of a check that passed */
    CLOSE_DEAD,      /* broken, failed its check or ping, or the server's error says it is
                        going away: closed_broken; host retired; dropped */
    CLOSE_UNUSABLE,  /* alive but not reusable: left busy or in pipeline mode, a failed
                        rollback or reset on a live server, another session identity:
                        closed_broken; graceful (a busy backend ends after its query) */
    CLOSE_ROLE,      /* the server no longer matches target_session_attrs: closed_role;
                        host retired; graceful */
    CLOSE_EVICTED,   /* retired by pool_evict, or left over by its host's eviction and
                        found later while idle or checked: closed_evicted; graceful */
    CLOSE_SUSPECT,   /* retired by its host's eviction and closed by it, or claimed or
                        returned afterwards: closed_evicted; dropped, without waiting on a
                        server the eviction suspects */
    CLOSE_LIFETIME,  /* past max_lifetime_ms: closed_lifetime; graceful */
    CLOSE_IDLE,      /* idle past idle_timeout_ms: closed_idle; graceful */
    CLOSE_EXCESS,    /* above max_size with nobody waiting, above max_size + max_overflow
                        after a resize, or the pool closing: closed only; graceful */
    CLOSE_REJECTED,  /* on_checkout or on_checkin said no: closed only; graceful */
    CLOSE_DISCARDED, /* pool_discard: closed only; graceful */
} close_reason_t;

/* Connections detached under the lock, to be closed once it is released
   (pool__close_finish).  Lives on the stack of the thread that detached them. */
typedef struct pool_closing {
    int n;
    PGconn *pg[POOL_CLOSE_BATCH];
    bool graceful[POOL_CLOSE_BATCH];
    bool more_evicted;  /* an eviction left idle connections behind: closed next */
    int nwarn;          /* closes nobody asked for (CLOSE_DEAD, _UNUSABLE, _ROLE) */
    char warn[POOL_MSG_LEN]; /* why the first of them was closed, scrubbed */
} pool_closing_t;

/* Empty, without zeroing the arrays: returns and closes start with one. */
static inline void pool__closing_init(pool_closing_t *c)
{
    c->n = c->nwarn = 0;
    c->more_evicted = false;
}

/* A caller blocked in pool_getconn, on that caller's stack; or the place in
   line of a pool_getconn_async request (req set), inside the request. */
typedef struct pool_waiter {
    _Atomic uint32_t woken;          /* WAKE_WOKEN once handed a connection, failed or told
                                        the pool closed (set under pool->lock, read without
                                        it); the waiter sleeps on it (wake.c) */
    pool_conn_t *conn;               /* handed-over connection; guarded by pool->lock */
    pool_err_t err;                  /* set when woken to fail; guarded by pool->lock */
    struct pool_waiter *prev, *next; /* queue links; guarded by pool->lock */
    bool queued;                     /* guarded by pool->lock */
    struct pool_request *req;        /* the async request this is the place of, or NULL
                                        for a blocking caller; immutable */
} pool_waiter_t;

/* Where a pool_getconn_async request is (requests.c).  Every transition
   happens under pool->lock, so a cancel and a hand-over cannot both win. */
typedef enum request_state {
    REQ_WAITING,    /* in line (pool->waiters), and in the deadline heap unless untimed */
    REQ_CHECKING,   /* handed a connection, queued for the service thread to validate */
    REQ_VALIDATING, /* the service thread validates its connection, lock released */
    REQ_READY,      /* done (a connection, or NULL and an error): on the ready list */
    REQ_RUNNING,    /* pool_dispatch took it: its callback runs, then it is freed */
    REQ_CANCELLED,  /* cancelled while VALIDATING: the service thread gives the
                       connection back and frees it */
    REQ_FREE,       /* on pool->req_free, for the next request: a stale handle given
                       to pool_cancel reads this, not freed memory */
} request_state_t;

struct pool_request {
    pool_waiter_t w;                 /* its place in line; w.conn: the connection handed */
    request_state_t state;           /* guarded by pool->lock */
    struct pool_request *prev, *next; /* on pool->checking, pool->ready or pool->req_free;
                                        guarded by lock */
    struct pool_request *all_next;   /* every request the pool allocated; guarded by lock */
    const pool_t *pool;              /* the owner; immutable */
    size_t heap_at;                  /* index in the deadline heap, or SIZE_MAX; lock */
    int64_t start_us, deadline_us;   /* deadline INT64_MAX: untimed; immutable */
    int64_t done_us;                 /* when it became READY; guarded by lock */
    int timeout_ms;                  /* as given; immutable */
    bool at_front;                   /* stood in line already; guarded by lock */
    pool_acquire_cb cb;              /* immutable */
    void *arg;                       /* immutable */
    pool_err_t err;                  /* the outcome once READY; guarded by lock */
    char msg[POOL_MSG_LEN];          /* its message when err != POOL_OK; guarded by lock */
};

typedef struct pool_reqlist {
    pool_request_t *head, *tail;
    int len;
} pool_reqlist_t;

/* Requests with a deadline, earliest on top: a binary heap of pointers. */
typedef struct pool_reqheap {
    pool_request_t **a;
    size_t n, cap;
    size_t reserved; /* live requests with a deadline: cap >= reserved, so no push fails */
} pool_reqheap_t;

/* Open-addressing map from PGconn* to its pool_conn_t, for O(1) returns. */
typedef struct conn_map {
    pool_conn_t **slots;             /* NULL = empty */
    size_t mask;                     /* capacity - 1; capacity is a power of two */
} conn_map_t;

/* The conninfo's hosts, split as libpq pairs host, hostaddr and port
   (hosts.c); immutable after create. */
typedef struct pool_hosts {
    PQconninfoOption *opts;          /* what libpq parsed out of the conninfo; owned */
    int n;                           /* hosts (1 when the conninfo names none) */
    char **host, **hostaddr, **port; /* n each; "" = libpq's default */
    const char *target;              /* target_session_attrs (in opts), "any" when not given */
    int role;                        /* what target asks of an open session (hosts.c) */
    bool random;                     /* load_balance_hosts=random */
} pool_hosts_t;

/* What the pool learnt of one host of the conninfo; guarded by pool->lock. */
typedef struct pool_host_state {
    int64_t down_until_us;           /* its last attempt failed: tried after the other
                                        hosts until then */
    int64_t down_us;                 /* how long the last failure put it last; doubles
                                        from POOL_HOST_DOWN_MIN_US to ..._MAX_US */
    uint64_t connects, connect_errors, evictions;
} pool_host_state_t;

typedef struct pool_waitq {
    pool_waiter_t *head, *tail;
    int len;
} pool_waitq_t;

/* A connection attempt in flight, published for a forked child (inflight.c). */
typedef struct pool_inflight {
    PGconn *pg;      /* the attempt's PGconn, between libpq's steps; NULL before and after */
    void *scratch;   /* memory the attempt allocated (hosts.c), or NULL */
    bool claimed;    /* an attempt holds this slot */
    bool in_hook;    /* on_connect runs on pg: a child must not touch it */
} pool_inflight_t;

struct pool {
    unsigned magic;                  /* POOL_MAGIC while alive; written only by create/destroy */
    pool_config_t cfg;               /* immutable after create (strings owned), but for
                                        min_size, max_size and max_overflow, which
                                        pool_resize changes: those are guarded by lock */
    char *conninfo;                  /* owned copy; immutable */
    char *reset_query;               /* owned copy or NULL; immutable */
    char *password;                  /* from conninfo, to scrub messages; immutable */
    pool_hosts_t hosts;              /* immutable after create */
    pool_host_state_t *host_state;   /* hosts.n entries, allocated by create; their
                                        fields guarded by lock */

    pthread_mutex_t lock;            /* guards everything below */
    pthread_cond_t work_cond;        /* connect workers wait here for demand */
    pthread_cond_t maint_cond;       /* maintenance thread sleeps here */
    pthread_cond_t drain_cond;       /* pool_destroy waits here for callers to leave */
    pthread_condattr_t cond_attr;    /* CLOCK_MONOTONIC, for every condition variable */

    conn_map_t map;                  /* every open connection; guarded by lock */
    int map_total;                   /* the max_size + max_overflow the map is sized for
                                        (the largest ever); guarded by lock */
    pool_conn_t *idle_head;          /* LIFO: head = most recently returned; guarded by lock */
    pool_conn_t *idle_tail;          /* oldest idle; guarded by lock */
    pool_waitq_t waiters;            /* FIFO of blocked callers; guarded by lock */

    pool_conn_t *all_slots;          /* every slot, linked by all_next; guarded by lock */
    pool_conn_t *free_slots;         /* slots without a connection, linked by next;
                                        guarded by lock */
    int nidle;                       /* on the idle list (PARKED ones not counted); guarded
                                        by lock */
    int nopen;                       /* idle + checking + in use + returning; guarded by lock */
    int nconnecting;                 /* attempts in flight; guarded by lock */
    int nclosing;                    /* closes in flight (still hold a backend); guarded by lock */
    int grow_wanted;                 /* connections asked for by callers that could not
                                        wait (timeout 0); guarded by lock */
    int ncalls;                      /* callers inside getconn/putconn; guarded by lock */
    bool closed;                     /* pool_destroy began; guarded by lock */
    bool paused;                     /* pool_pause: nothing is handed out; guarded by lock */
    _Atomic unsigned epoch;          /* bumped by pool_evict under lock; read by the fast path */
    uint64_t id;                     /* unique among pools ever created; immutable */
    atomic_bool fast_ok;             /* the fast path may park and take connections: open,
                                        not paused, nobody waiting (no census either), not
                                        above max_size.  Written under lock (pool_unlock recomputes it);
                                        read without it.  See fast.c for the handshake
                                        with callers that start to wait */
    atomic_bool maybe_parked;        /* set by the fast path after parking, cleared under
                                        lock before a scan for parked slots */
    atomic_bool stopping;            /* mirrors closed, read without the lock by I/O loops */

    bool connect_failing;            /* the last attempt failed; guarded by lock */
    int64_t backoff_us;              /* current retry delay; guarded by lock */
    int64_t backoff_until_us;        /* no attempt before this; guarded by lock */
    char last_error[POOL_MSG_LEN];   /* last connect failure, scrubbed; guarded by lock */
    int64_t warn_last_us;            /* when a close nobody asked for was last logged;
                                        guarded by lock */
    int warn_suppressed;             /* such closes not logged since; guarded by lock */
    uint64_t rng;                    /* xorshift state for jitter; guarded by lock */
    int ceiling;                     /* 0: none; else the most connections open at once
                                        since the server refused one for lack of slots
                                        (53300), halved at each refusal, raised by one per
                                        probe that succeeds (workers.c); guarded by lock */
    int64_t probe_at_us;             /* no probe above the ceiling before; guarded by lock */
    int64_t refusal_said_us;         /* when a refusal was last logged; guarded by lock */

    atomic_bool forked;              /* set in a forked child by fork.c's handler (with
                                        fast_ok cleared), cleared by the reset it calls for */
    _Atomic unsigned fork_gen;       /* fork generation the state belongs to; written under
                                        lock, read by the fast path without it */
    pthread_t maint_thread;          /* started by create/fork reset, joined by destroy */
    pthread_t workers[POOL_CONNECT_WORKERS];
    bool threads_started;            /* guarded by lock */

    pool_stats_t stats;              /* counters; gauges are filled in at snapshot; guarded by lock */

    /* Event loops (requests.c, service.c, async.c) */
    pthread_t service_thread;        /* validates for requests, fires their deadlines */
    _Atomic uint32_t service_wake;   /* the service thread sleeps on it (wake.c); set to
                                        WAKE_WOKEN under lock by whoever has work for it,
                                        the futex kicked after the unlock */
    pool_reqheap_t deadlines;        /* waiting requests with a deadline; guarded by lock */
    pool_reqlist_t checking;         /* REQ_CHECKING, in order; guarded by lock */
    pool_reqlist_t ready;            /* REQ_READY, in order; guarded by lock */
    struct close_later *close_later; /* closes left for the service thread; guarded by lock */
    pool_conn_t *returns_head;       /* returns left for the service thread (RETURNING,
                                        linked by next); guarded by lock */
    pool_conn_t *returns_tail;       /* guarded by lock */
    pool_request_t *req_all;         /* every request allocated, freed by pool_destroy;
                                        guarded by lock */
    pool_request_t *req_free;        /* REQ_FREE ones, linked by next; guarded by lock */
    int event_fd;                    /* eventfd, readable while ready is not empty; -1
                                        until pool_fd or pool_getconn_async; guarded by lock */
    pthread_mutex_t dispatch_lock;   /* held by pool_dispatch while callbacks run, so
                                        that they run one at a time, in order */
    pthread_mutex_t inflight_lock;   /* guards inflight[]; held around each libpq step of a
                                        connect and across fork() (taken after lock) */
    pool_inflight_t inflight[POOL_INFLIGHT_SLOTS]; /* guarded by inflight_lock */
    struct pool *registry_next;      /* guarded by the registry lock (fork.c) */

    /* fair_share (share.c), at the end: away from the fields the hot path
       touches, whose cache lines it leaves as they were */
    char *share_name;                /* fair_share: the application_name its connections
                                        carry, "<name> #<mark>" (share.c); NULL without
                                        fair_share.  Immutable, but for the mark, which a
                                        forked child rewrites before its threads start */
    size_t share_prefix;             /* the length of its "<name> #"; immutable */
    int share;                       /* fair_share: this pool's share from the last census,
                                        0 before the first; caps pool_limit; guarded by lock */
    int share_pools;                 /* pools counted by the last census; guarded by lock */
    int64_t share_last_us;           /* when the last census ran (0: never); guarded by lock */
    int64_t share_next_us;           /* the service thread looks whether a census is due
                                        then (INT64_MAX: not until a connection is made
                                        available); guarded by lock */
    bool share_wanted;               /* a census waits for a connection: the next one made
                                        available goes to it (pool.c), and the lock-free
                                        path is shut meanwhile; guarded by lock */
    bool share_failing;              /* the last census failed (said once); guarded by lock */
    pool_conn_t *share_conn;         /* the connection a census runs on, for the service
                                        thread; guarded by lock */
};

/* clock.c */
int64_t pool__clock_now_us(void);
struct timespec pool__clock_abs_timespec(int64_t deadline_us);
int pool__clock_poll_timeout_ms(int64_t deadline_us, int64_t now_us, int slice_ms);

/* error.c */
void pool__set_error(pool_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pool__set_error_msg(pool_err_t code, const char *msg);
void pool__log(const pool_t *pool, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pool__copy_libpq_message(const pool_t *pool, char *dst, size_t len, const char *libpq_msg);
void pool__scrub_secret(char *msg, const char *secret);
bool pool__password_of(const char *conninfo, char **pw);
bool pool__says_out_of_memory(const char *msg);
bool pool__parse_out_of_memory(const char *err);
pool_err_t pool__copy_scrubbed(const char *conninfo, char *dst, size_t len, const char *msg);

/* inflight.c: connects in flight, for a forked child to drop */
int pool__inflight_claim(pool_t *pool);
void pool__inflight_set(pool_t *pool, int slot, PGconn *pg);
PostgresPollingStatusType pool__inflight_poll(pool_t *pool, int slot, PGconn *pg);
void pool__inflight_set_scratch(pool_t *pool, int slot, void *scratch);
void pool__inflight_in_hook(pool_t *pool, int slot, bool in_hook);
void pool__inflight_release(pool_t *pool, int slot);
int pool__inflight_take_inherited(pool_t *pool, PGconn **out);

/* requests.c: pool_getconn_async's requests, under the lock */
void pool__reqheap_push(pool_reqheap_t *h, pool_request_t *r);
void pool__reqheap_remove(pool_reqheap_t *h, pool_request_t *r);
pool_request_t *pool__reqheap_top(const pool_reqheap_t *h);
void pool__reqlist_remove(pool_reqlist_t *l, pool_request_t *r);
pool_request_t *pool__reqlist_pop(pool_reqlist_t *l);
int pool__request_fd_locked(pool_t *pool);
void pool__request_fd_signal_locked(pool_t *pool);
void pool__request_fd_drain_locked(pool_t *pool);
void pool__request_ready_locked(pool_t *pool, pool_request_t *r, pool_err_t err, const char *msg);
void pool__request_handed_locked(pool_t *pool, pool_request_t *r);
void pool__request_wait_locked(pool_t *pool, pool_request_t *r);

/* wake.c: parking and waking waiters, on a word that holds one of these */
enum { WAKE_WAITING = 0, WAKE_ASLEEP = 2, WAKE_WOKEN = 1 };
void pool__wake_wait(_Atomic uint32_t *word, int64_t deadline_us);
void pool__wake_after_unlock(_Atomic uint32_t *word); /* with pool->lock held: kicked by pool_unlock */
void pool__wake_pending(void);
void pool__signal_fd_after_unlock(int fd); /* an eventfd, written by pool_unlock */

/* Histograms (stats.c reads them): bucket[0]: under 1 us; bucket[i]:
   [2^(i-1), 2^i); the last takes the rest.  Recording is one bit scan. */
static inline int hist_bucket(uint64_t us)
{
    int i = us == 0 ? 0 : 64 - __builtin_clzll(us);
    return i > POOL_HIST_BUCKETS - 1 ? POOL_HIST_BUCKETS - 1 : i;
}

static inline void pool__hist_record(pool_hist_t *h, uint64_t us)
{
    h->count++;
    h->sum_us += us;
    h->bucket[hist_bucket(us)]++;
}

/* config.c */
int pool__config_validate(const pool_config_t *cfg, char *errbuf, size_t errlen);
pool_err_t pool__config_from_caller(const pool_config_t *cfg, size_t size, pool_config_t *out,
                                    char *errbuf, size_t errlen);

/* version.c: structs whose size the caller passes (see "ABI" in pgpool.h).  The
   smallest size accepted is the contract's first published layout; _1_0 is
   what version 1.0's header had, which the entry points without a size
   assume.  Both are fixed for ever; sizeof is whatever this header has now. */
#define POOL_CONFIG_SIZE_MIN (offsetof(pool_config_t, arg) + sizeof(void *))
#define POOL_CONFIG_SIZE_1_0 (offsetof(pool_config_t, on_checkin) + sizeof(void (*)(void)))
#define POOL_STATS_SIZE_MIN (offsetof(pool_stats_t, hold_us_total) + sizeof(uint64_t))
#define POOL_STATS_SIZE_1_0 (offsetof(pool_stats_t, closed_evicted) + sizeof(uint64_t))
#define POOL_HOST_STATS_SIZE_1_0 (offsetof(pool_host_stats_t, evictions) + sizeof(uint64_t))
/* Whether a caller's struct of `size` bytes holds field `member` of `type`. */
#define POOL_HAS_FIELD(type, member, size) \
    (offsetof(type, member) + sizeof(((type *)0)->member) <= (size))
/* Copies a caller's struct of `size` bytes into ours, zero beyond its end. */
void pool__copy_in(void *ours, size_t ours_size, const void *theirs, size_t size);
/* Copies ours into the caller's struct of `size` bytes, zero beyond ours. */
void pool__copy_out(void *theirs, size_t size, const void *ours, size_t ours_size);

/* settings.c: pool_* keys in the conninfo */
typedef struct pool_settings {
    pool_config_t cfg;   /* the caller's config with the conninfo's pool_* keys applied;
                            its conninfo and reset_query point into this struct */
    char *conninfo;      /* the conninfo without the pool_* keys, for libpq; owned */
    char *reset_query;   /* from pool_reset_query; owned; NULL when not given or empty */
    int applied;         /* how many pool_* keys were found */
    bool load_balance_random; /* load_balance_hosts=random (taken out: libpq 15 rejects it) */
} pool_settings_t;
int pool__settings_from_conninfo(const pool_config_t *cfg, pool_settings_t *out, char *errbuf,
                           size_t errlen);
void pool__settings_free(pool_settings_t *s);

/* conn.c: one connection, held by the caller; never under the lock */
PGconn *pool__conn_open_params(pool_t *pool, int slot, const char *const *keywords,
                               const char *const *values, char *reason, size_t len,
                               char *sqlstate);
typedef enum conn_health {
    CONN_DEAD,        /* closed, broken, busy or inside a transaction */
    CONN_ALIVE,       /* nothing suggests otherwise */
    CONN_SUSPECT,     /* the server sent something unasked: only a round trip can tell */
} conn_health_t;
conn_health_t pool__conn_peek_nowait(PGconn *pg, bool poll_socket);
conn_health_t pool__conn_check_nowait(PGconn *pg, bool poll_socket);
bool pool__conn_exec_bounded(PGconn *pg, const char *sql, int64_t deadline_us, char *said,
                             size_t saidlen);
PGresult *pool__conn_query_bounded(PGconn *pg, const char *sql, int nparams,
                                   const char *const *params, int64_t deadline_us, char *said,
                                   size_t saidlen);
void pool__conn_close(PGconn *pg);
void pool__conn_close_and_wait(PGconn *pg, int64_t deadline_us);
void pool__conn_drop_silently(PGconn *pg);
void pool__conn_watch(pool_conn_t *c, bool writes_expected);
bool pool__conn_returnable(PGconn *pg);
bool pool__session_identity_changed(const pool_conn_t *c);

/* hosts.c: one attempt per host of the conninfo, bounded each */
int pool__hosts_init(pool_hosts_t *h, const char *conninfo, bool random_order, char *err, size_t errlen);
void pool__hosts_free(pool_hosts_t *h);
PGconn *pool__hosts_connect(pool_t *pool, int slot, int *host, char *err, size_t errlen,
                            bool *refused);
bool pool__hosts_role_ok(const pool_hosts_t *h, PGconn *pg);
const char *pool__hosts_name(const pool_hosts_t *h, int j); /* host, else hostaddr; "" = default */
bool pool__hosts_expect_writes(const pool_hosts_t *h);

/* conn_map.c */
int pool__conn_map_init(conn_map_t *map, size_t max_entries);
void pool__conn_map_free(conn_map_t *map);
pool_conn_t *pool__conn_map_find(const conn_map_t *map, const PGconn *pg);
void pool__conn_map_insert(conn_map_t *map, pool_conn_t *c);
void pool__conn_map_remove(conn_map_t *map, const PGconn *pg);
int pool__conn_map_resize(conn_map_t *map, size_t max_entries);

/* waitq.c */
void pool__waitq_push_back(pool_waitq_t *q, pool_waiter_t *w);
void pool__waitq_push_front(pool_waitq_t *q, pool_waiter_t *w);
pool_waiter_t *pool__waitq_pop_front(pool_waitq_t *q);
void pool__waitq_remove(pool_waitq_t *q, pool_waiter_t *w);

/* pool.c: the core; every function runs with pool->lock held and never
   releases it */
void pool__idle_push_locked(pool_t *pool, pool_conn_t *c, int64_t now_us);
void pool__idle_remove_locked(pool_t *pool, pool_conn_t *c);
void pool__unpark_all_locked(pool_t *pool);
pool_conn_t *pool__slot_get_locked(pool_t *pool, pool_conn_t **spare);
void pool__release_slot_locked(pool_t *pool, pool_conn_t *c);
void pool__detach_locked(pool_t *pool, pool_conn_t *c, close_reason_t why, pool_closing_t *out);
int pool__detach_idle_locked(pool_t *pool, int keep, pool_closing_t *out);
int pool__connect_demand_locked(const pool_t *pool);
bool pool__ceiling_holds_back_locked(const pool_t *pool);
uint64_t pool__random_locked(pool_t *pool);
int64_t pool__random_upto_locked(pool_t *pool, int64_t max);
void pool__wake_workers_locked(pool_t *pool);
void pool__make_available_locked(pool_t *pool, pool_conn_t *c, int64_t now_us, pool_closing_t *out);
void pool__serve_waiters_locked(pool_t *pool);
void pool__waiter_fail_locked(pool_t *pool, pool_waiter_t *w, pool_err_t err, const char *msg);
void pool__count_acquire_locked(pool_t *pool, pool_err_t rc, int64_t waited_us);
void pool__timeout_message_locked(const pool_t *pool, int timeout_ms, char *buf, size_t len);
bool pool__past_lifetime(const pool_t *pool, const pool_conn_t *c, int64_t now_us);

/* close.c: the one way to close.  _locked: detaches c into *out, counts why
   and, when why means the server is suspect (CLOSE_DEAD, CLOSE_ROLE), retires
   c's host (its idle connections join *out).  what: for a close nobody asked
   for (dead, unusable, wrong role), what was found, logged at WARN by
   _finish, followed by said (the server's or libpq's words, NULL: none) or,
   when what ends in ':' and said is empty, the connection's last error.
   _finish, lock NOT held: closes what *out holds, gracefully or not by
   reason, and logs, at most once a second. */
void pool__close_locked(pool_t *pool, pool_conn_t *c, close_reason_t why, const char *what,
                        const char *said, pool_closing_t *out);
void pool__close_finish(pool_t *pool, pool_closing_t *out);

/* open.c: a new connection.  _connect (lock NOT held) makes it and a slot for
   it; _adopt_locked tracks it and makes it available (to the longest waiter,
   else idle), any excess detached into *out; _done (lock NOT held) frees the
   slot it did not need. */
typedef struct pool_opening {
    PGconn *pg;
    pool_conn_t *spare;              /* allocated off the lock, in case no slot is free */
    int slot;                        /* its inflight slot (inflight.c) until adopted */
    bool refused;                    /* failed: a server refused it for lack of slots (53300) */
    int host;
    int64_t started_us;
} pool_opening_t;
pool_err_t pool__open_connect(pool_t *pool, pool_opening_t *o, char *err, size_t errlen);
void pool__open_adopt_locked(pool_t *pool, pool_opening_t *o, unsigned epoch, pool_closing_t *out);
void pool__open_done(pool_opening_t *o);

/* checkin.c: judging a returned connection before it is reused.
   _verdict_locked: CLOSE_NONE to reuse c, else why it is closed (and *what,
   with said, POOL_MSG_LEN bytes, for the log); runs on_checkin first when
   hook; releases the lock around the hook and the round trips.
   _hook_accepts_locked: on_checkin's verdict alone.  _needs_io: whether the
   verdict past the hook would wait on the network. */
close_reason_t pool__checkin_verdict_locked(pool_t *pool, pool_conn_t *c, bool hook, int64_t *now_us,
                                            const char **what, char *said);
bool pool__checkin_hook_accepts_locked(pool_t *pool, pool_conn_t *c);
bool pool__checkin_needs_io(const pool_t *pool, const pool_conn_t *c);

/* checkout.c: judging a claimed connection before it is handed out.
   _verdict_locked: CLOSE_NONE to hand c out, else why it is closed (and
   *what, with said, POOL_MSG_LEN bytes, for the log); releases the lock
   around the I/O.  pool__checkout_ready_as_is (inline, at the end of this
   file): nothing more to do (no lock, no I/O but the zero-round-trip
   check's poll). */
typedef struct pool_checkout {
    int64_t now_us;      /* the clock as last read */
    int64_t deadline_us; /* the caller's, INT64_MAX: none */
    bool clock_stale;    /* something took time since now_us was read */
} pool_checkout_t;
close_reason_t pool__checkout_verdict_locked(pool_t *pool, pool_conn_t *c, pool_checkout_t *k,
                                             const char **what, char *said);

static inline int64_t pool__deadline_of(int64_t start_us, int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : start_us + (int64_t)timeout_ms * 1000;
}

/* share.c: fair_share.  _name_init (create) names the connections, *base
   the application_name configured (NULL: none, "pgpool" is used);
   _forked_locked gives a forked child a mark of its own.  The service thread
   calls _tick_locked at share_next_us (a census due claims an idle
   connection into share_conn, or sets share_wanted) and _census_locked when
   share_conn is set (releases the lock around the round trip). */
bool pool__share_name_init(pool_t *pool, const char **base);
void pool__share_forked_locked(pool_t *pool);
void pool__share_tick_locked(pool_t *pool, int64_t now_us);
void pool__share_census_locked(pool_t *pool);

/* service.c: the thread that validates for async requests, fires their
   deadlines and closes what the loop's calls leave behind */
void *pool__service_main(void *arg);
void pool__request_free_locked(pool_t *pool, pool_request_t *r);
bool pool__close_later_locked(pool_t *pool, pool_closing_t *batch);
void pool__service_forget_locked(pool_t *pool);
void pool__service_return_locked(pool_t *pool, pool_conn_t *c);

/* async.c: what pool_destroy does for the event-loop requests */
void pool__async_close_locked(pool_t *pool);
void pool__async_finish(pool_t *pool);
void pool__async_free(pool_t *pool);

/* fast.c: borrowing and returning without the lock */
pool_conn_t *pool__fast_take(pool_t *pool);
void pool__fast_checked_out(pool_conn_t *c, int64_t now_us);
bool pool__fast_return(pool_t *pool, PGconn *pg);
void pool__fast_remember(const pool_t *pool, pool_conn_t *c);
pool_conn_t *pool__fast_mine(const pool_t *pool);
void pool__shard_add_to(const conn_shard_t *sh, pool_stats_t *out);

/* workers.c, maint.c: the background threads' bodies; threads.c starts them
   (with every signal blocked) and joins them */
void *pool__connect_worker_main(void *arg);
void *pool__maint_main(void *arg);
int pool__start_threads(pool_t *pool);
void pool__join_threads(pool_t *pool, bool started);

/* fork.c */
void pool__fork_register(pool_t *pool);
void pool__fork_unregister(pool_t *pool);
void pool__enter_locked(pool_t *pool); /* first, under the lock, in every entry point */

/* Open connections never exceed this.  Caller holds pool->lock. */
static inline int pool_max_total(const pool_t *pool)
{
    return pool->cfg.max_size + pool->cfg.max_overflow;
}

/* The most connections the pool may open now, with no learnt ceiling
   (workers.c): max_size + max_overflow, or fair_share's lower share. */
static inline int pool_share_limit(const pool_t *pool)
{
    int max = pool_max_total(pool);
    return pool->share > 0 && pool->share < max ? pool->share : max;
}

/* The ceiling in force: pool_share_limit, or the lower one learnt from the
   server's refusals (workers.c). */
static inline int pool_limit(const pool_t *pool)
{
    int max = pool_share_limit(pool);
    return pool->ceiling > 0 && pool->ceiling < max ? pool->ceiling : max;
}

/* Releases the pool's lock, then wakes the waiters this thread handed
   connections to meanwhile.  Every unlock in lib/ goes through here. */
static inline void pool_unlock(pool_t *pool)
{
    /* The fast path's gate, from the state this lock holder leaves behind.
       Closing it where a caller starts to wait is done at once, in
       claim_locked (the handshake in fast.c); here it catches the rest. */
    bool ok = !pool->closed && !pool->paused && pool->waiters.len == 0 && !pool->share_wanted &&
              pool->nopen <= pool->cfg.max_size && pool->nopen <= pool_limit(pool);
    if (atomic_load_explicit(&pool->fast_ok, memory_order_relaxed) != ok)
        atomic_store(&pool->fast_ok, ok);
    pthread_mutex_unlock(&pool->lock);
    pool__wake_pending();
}

/* The next delay of a capped exponential backoff: min after none, then
   doubling, never above max. */
static inline int64_t backoff_next(int64_t current_us, int64_t min_us, int64_t max_us)
{
    int64_t next = current_us == 0 ? min_us : 2 * current_us;
    return next < max_us ? next : max_us;
}

/* No pgpool call is a cancellation point (see "Threads" in pgpool.h): a call
   that can reach one (poll, send, recv, connect, close, a hook, on_log)
   turns cancellation off for its duration and restores it as it leaves, so
   its bookkeeping always completes.  A pair costs ~12 ns: the lock-free
   paths do without, having no cancellation point (conn.c's poll_now). */
static inline int pool__cancel_off(void)
{
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}

static inline void pool__cancel_restore(int old)
{
    int ignored;
    pthread_setcancelstate(old, &ignored);
}

static inline bool pool_is_live(const pool_t *pool)
{
    return pool && pool->magic == POOL_MAGIC;
}

/* Retired by pool_evict or by its host's eviction: never handed out again.
   Read without the lock by the connection's holder (fast.c) as well. */
static inline bool conn_stale(const pool_t *pool, const pool_conn_t *c)
{
    return c->epoch != atomic_load_explicit(&pool->epoch, memory_order_relaxed) ||
           atomic_load_explicit(&c->evicted, memory_order_relaxed);
}

/* Why a retired connection (conn_stale) that is claimed or returned closes:
   dropped when its host was evicted (the server is suspect), else gracefully. */
static inline close_reason_t retired_why(const pool_conn_t *c)
{
    return atomic_load_explicit(&c->evicted, memory_order_relaxed) ? CLOSE_SUSPECT : CLOSE_EVICTED;
}

static inline bool conn_inherited(const pool_t *pool, const pool_conn_t *c)
{
    return c->fork_gen != atomic_load_explicit(&pool->fork_gen, memory_order_relaxed);
}

/* Whether a round trip is due on c before it is handed out (checkout.c). */
static inline bool pool__ping_due(const pool_t *pool, const pool_conn_t *c, int64_t now)
{
    return pool->cfg.pre_ping && now - c->idle_since_us >= (int64_t)pool->cfg.ping_idle_ms * 1000;
}

/* Whether c, taken back by the fast path, can be handed out with nothing
   more to do: not retired or old, no hook, no round trip due, and the
   zero-round-trip check passes without reading (unasked input, if any, is
   read on the locked path, where a cancellation cannot reach it).  Inline:
   the lock-free checkout's (getconn.c) own cost. */
static inline bool pool__checkout_ready_as_is(pool_t *pool, pool_conn_t *c, int64_t now)
{
    return !conn_stale(pool, c) && !pool__past_lifetime(pool, c, now) && !pool->cfg.on_checkout &&
           !pool__ping_due(pool, c, now) &&
           pool__conn_peek_nowait(c->pg, pool->cfg.pre_ping) == CONN_ALIVE;
}

#endif /* POOL_INTERNAL_H */
