/* SPDX-License-Identifier: MIT */
/*
 * conn.c - one connection: opening, validating, resetting and closing it,
 * and what it says of itself (session identity, SQLSTATEs, returnable).
 *
 * Everything here works on one connection its caller holds, without the
 * pool's lock, and is bounded in time: a connect, a round-trip check, a
 * rollback or a reset on a silent network gives up at its deadline instead
 * of hanging, and a broken connection is closed in non-blocking mode so that
 * PQfinish cannot block on a full socket buffer.
 */
#include "pool_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-events.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define IO_SLICE_MS 50 /* how often a long wait looks at pool->stopping */

/* Server notices (e.g. a NOTICE from the user's own query) go to on_log at
   INFO instead of libpq's default of printing to stderr.  on_connect may
   install its own processor. */
static void notice_to_log(void *arg, const char *message)
{
    char msg[POOL_MSG_LEN];
    const pool_t *pool = arg;
    pool__copy_libpq_message(pool, msg, sizeof msg, message);
    pool__log(pool, POOL_LOG_INFO, "server notice: %s", msg);
}

/* Waits until fd is ready for events or the deadline passes.  1 = ready,
   0 = deadline or stop, -1 = poll error. */
static int wait_socket(PGconn *pg, short events, int64_t deadline_us, const atomic_bool *stopping)
{
    for (;;) {
        int64_t now = pool__clock_now_us();
        if (now >= deadline_us || (stopping && atomic_load_explicit(stopping, memory_order_relaxed)))
            return 0;
        struct pollfd pfd = {.fd = PQsocket(pg), .events = events};
        if (pfd.fd < 0)
            return -1;
        int r = poll(&pfd, 1, pool__clock_poll_timeout_ms(deadline_us, now, IO_SLICE_MS));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* libpq words a server's error at connect "SEVERITY:  message"; verbose,
   "SEVERITY:  SQLSTATE: message" and a LOCATION line.  Connects run verbose
   so that the SQLSTATE is known whatever language the server speaks; this
   puts msg back in the default words and copies the first SQLSTATE into
   code (6 bytes; "" when there is none). */
static void unverbose(char *msg, char *code)
{
    bool found = false;
    for (char *p = strstr(msg, ":  "); p; p = strstr(p + 1, ":  ")) {
        char *s = p + 3;
        bool is_code = strlen(s) >= 7 && s[5] == ':' && s[6] == ' ';
        for (int i = 0; is_code && i < 5; i++)
            is_code = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z');
        if (!is_code)
            continue;
        if (!found) {
            memcpy(code, s, 5);
            code[5] = '\0';
            found = true;
        }
        memmove(s, s + 7, strlen(s + 7) + 1);
    }
    for (char *l = strstr(msg, "LOCATION:  "); l; l = strstr(l, "LOCATION:  ")) {
        if (l != msg && l[-1] != '\n') {
            l++;
            continue;
        }
        char *end = strchr(l, '\n');
        memmove(l, end ? end + 1 : l + strlen(l), strlen(end ? end + 1 : l + strlen(l)) + 1);
    }
}

static PGconn *open_failed(PGconn *pg, pool_t *pool, int slot, char *reason, size_t len,
                           const char *why, char *sqlstate)
{
    char said[2 * POOL_MSG_LEN];
    if (!why && pg) {
        snprintf(said, sizeof said, "%s", PQerrorMessage(pg));
        unverbose(said, sqlstate);
        why = said;
    }
    pool__copy_libpq_message(pool, reason, len, why ? why : "out of memory");
    pool__inflight_set(pool, slot, NULL);
    if (pg)
        pool__conn_close(pg);
    return NULL;
}

/* Opens one connection (to one host: hosts.c picks it) with
   PQconnectStartParams/PQconnectPoll, bounded by connect_timeout_ms, then
   runs on_connect.  The PGconn is published in inflight slot `slot` (-1:
   none) from its first step until the caller releases the slot.  NULL with
   libpq's reason, scrubbed, in reason, and the server's SQLSTATE, if it
   said one, in sqlstate (6 bytes). */
PGconn *pool__conn_open_params(pool_t *pool, int slot, const char *const *keywords,
                               const char *const *values, char *reason, size_t len,
                               char *sqlstate)
{
    sqlstate[0] = '\0';
    int64_t deadline = pool__clock_now_us() + (int64_t)pool->cfg.connect_timeout_ms * 1000;

    PGconn *pg = PQconnectStartParams(keywords, values, 0);
    if (!pg)
        return open_failed(NULL, pool, slot, reason, len, "out of memory", sqlstate);
    pool__inflight_set(pool, slot, pg);
    PQsetErrorVerbosity(pg, PQERRORS_VERBOSE); /* for the SQLSTATE of a refusal: unverbose() */
    if (PQstatus(pg) == CONNECTION_BAD)
        return open_failed(pg, pool, slot, reason, len, NULL, sqlstate);

    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED)
            return open_failed(pg, pool, slot, reason, len, NULL, sqlstate);
        int r = wait_socket(pg, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline,
                            &pool->stopping);
        if (r == 0) {
            char why[64];
            snprintf(why, sizeof why, atomic_load(&pool->stopping) ? "pool is closing"
                                                                   : "timeout expired after %d ms",
                     pool->cfg.connect_timeout_ms);
            return open_failed(pg, pool, slot, reason, len, why, sqlstate);
        }
        if (r < 0)
            return open_failed(pg, pool, slot, reason, len, "socket error while connecting",
                               sqlstate);
        st = pool__inflight_poll(pool, slot, pg);
    }

    PQsetErrorVerbosity(pg, PQERRORS_DEFAULT);
    PQsetNoticeProcessor(pg, notice_to_log, pool);
    if (pool->cfg.on_connect) {
        pool__inflight_in_hook(pool, slot, true);
        bool rejected = pool->cfg.on_connect(pg, pool->cfg.arg) != 0;
        bool broken = !rejected && pool__conn_check_nowait(pg, false) != CONN_ALIVE;
        pool__inflight_in_hook(pool, slot, false);
        if (rejected)
            return open_failed(pg, pool, slot, reason, len, "on_connect rejected the connection",
                               sqlstate);
        if (broken)
            return open_failed(pg, pool, slot, reason, len,
                               "on_connect left the connection broken, busy or inside a transaction",
                               sqlstate);
    }
    return pg;
}

/* A poll with timeout 0 that is not a cancellation point (glibc's poll is
   one; see "Threads" in pgpool.h): the raw system call, which also skips
   the cancellation bookkeeping on the borrowing fast path. */
static int poll_now(struct pollfd *pfd)
{
    int r;
    do {
#ifdef SYS_poll /* ~40 ns cheaper than ppoll, which has a timespec to read */
        r = (int)syscall(SYS_poll, pfd, 1, 0);
#else /* aarch64 and the newer ports have ppoll only */
        struct timespec zero = {0, 0};
        r = (int)syscall(SYS_ppoll, pfd, 1, &zero, NULL, 0);
#endif
    } while (r < 0 && errno == EINTR);
    return r;
}

/* The zero-round-trip check without reading: status, transaction state,
   pipeline mode and, with poll_socket, whether the server has hung up
   (CONN_DEAD) or sent something unasked (CONN_SUSPECT, left unread).  No
   cancellation point, no read: the lock-free path may run it. */
conn_health_t pool__conn_peek_nowait(PGconn *pg, bool poll_socket)
{
    /* PQTRANS_IDLE also says the status is CONNECTION_OK and no query is in
       flight (libpq reports PQTRANS_ACTIVE then): PQisBusy would add only
       the cost of parsing input. */
    if (PQtransactionStatus(pg) != PQTRANS_IDLE || PQpipelineStatus(pg) != PQ_PIPELINE_OFF)
        return CONN_DEAD;
    if (!poll_socket)
        return CONN_ALIVE;
    struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN | POLLRDHUP};
    int r = poll_now(&pfd);
    if (r < 0 || (r > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL))))
        return CONN_DEAD;
    return r == 0 ? CONN_ALIVE : CONN_SUSPECT;
}

/* The zero-round-trip check: pool__conn_peek_nowait, then unasked input is
   read and judged by a round trip: a NOTIFY is harmless, but a terminated
   backend sends its FATAL error before it closes the socket, and libpq
   reports that error on an idle connection only as a notice, leaving the
   status at CONNECTION_OK. */
conn_health_t pool__conn_check_nowait(PGconn *pg, bool poll_socket)
{
    conn_health_t health = pool__conn_peek_nowait(pg, poll_socket);
    if (health != CONN_SUSPECT)
        return health;
    if (!PQconsumeInput(pg) || PQtransactionStatus(pg) != PQTRANS_IDLE)
        return CONN_DEAD;
    return CONN_SUSPECT;
}

/* Keeps the first error message (the server's words, or libpq's) in said. */
static void keep_error(char *said, size_t len, const char *msg)
{
    if (said && !*said && msg && *msg)
        snprintf(said, len, "%s", msg);
}

/* wait_socket for a round trip: false at the deadline (said so in said). */
static bool wait_for(PGconn *pg, short events, int64_t deadline_us, char *said, size_t saidlen)
{
    int r = wait_socket(pg, events, deadline_us, NULL);
    if (r == 0)
        keep_error(said, saidlen, "no answer before the deadline");
    return r > 0;
}

/* One statement for exec_steps: its parameters (text) and, when keep is
   not NULL, where its first rows go (the caller PQclears them). */
typedef struct exec_query {
    const char *sql;
    int nparams;
    const char *const *params;
    PGresult **keep;
} exec_query_t;

static bool exec_steps(PGconn *pg, const exec_query_t *q, int64_t deadline_us, char *said,
                       size_t saidlen)
{
    if (PQsetnonblocking(pg, 1) != 0)
        return false;
    if (!(q->nparams ? PQsendQueryParams(pg, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0)
                     : PQsendQuery(pg, q->sql)))
        return false;
    for (;;) {
        int f = PQflush(pg);
        if (f < 0)
            return false;
        if (f == 0)
            break;
        if (!wait_for(pg, POLLIN | POLLOUT, deadline_us, said, saidlen) || !PQconsumeInput(pg))
            return false;
    }
    bool ok = true;
    for (;;) {
        while (!PQisBusy(pg)) {
            PGresult *res = PQgetResult(pg);
            if (!res)
                goto done;
            ExecStatusType s = PQresultStatus(res);
            if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY) {
                keep_error(said, saidlen, PQresultErrorMessage(res));
                ok = false;
            }
            if (q->keep && !*q->keep && s == PGRES_TUPLES_OK) {
                *q->keep = res;
                continue;
            }
            PQclear(res);
            /* COPY cannot be finished here: give up on the connection. */
            if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH)
                return false;
        }
        if (!wait_for(pg, POLLIN, deadline_us, said, saidlen) || !PQconsumeInput(pg))
            return false;
    }
done:
    if (PQsetnonblocking(pg, 0) != 0)
        return false;
    return ok && PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) == PQTRANS_IDLE;
}

/* Runs sql and reads every result, never blocking past deadline_us.  True when
   every result succeeded and the connection is idle again (and back in
   blocking mode).  On false the connection is in an unknown state: close it;
   said (NULL: not wanted) then holds the first error message, when said was
   empty. */
bool pool__conn_exec_bounded(PGconn *pg, const char *sql, int64_t deadline_us, char *said,
                             size_t saidlen)
{
    exec_query_t q = {.sql = sql};
    bool ok = exec_steps(pg, &q, deadline_us, said, saidlen);
    keep_error(said, saidlen, ok ? NULL : PQerrorMessage(pg));
    return ok;
}

/* pool__conn_exec_bounded for one query with text parameters that returns
   rows: its result (the caller PQclears it), or NULL, said as above. */
PGresult *pool__conn_query_bounded(PGconn *pg, const char *sql, int nparams,
                                   const char *const *params, int64_t deadline_us, char *said,
                                   size_t saidlen)
{
    PGresult *res = NULL;
    exec_query_t q = {.sql = sql, .nparams = nparams, .params = params, .keep = &res};
    bool ok = exec_steps(pg, &q, deadline_us, said, saidlen);
    keep_error(said, saidlen, ok ? NULL : PQerrorMessage(pg));
    if (!ok) {
        PQclear(res);
        res = NULL;
    }
    return res;
}

/* Closes a connection without ever blocking on its socket. */
void pool__conn_close(PGconn *pg)
{
    PQsetnonblocking(pg, 1);
    PQfinish(pg);
}

/* Closes a healthy connection and waits (until deadline_us at most) for the
   server to end the backend, seen as end-of-file on a duplicate of the
   socket.  Only then does the backend leave pg_stat_activity, so a pool that
   frees the slot afterwards never has more backends on the server than
   max_size + max_overflow, not even for a moment. */
void pool__conn_close_and_wait(PGconn *pg, int64_t deadline_us)
{
    int fd = PQsocket(pg) >= 0 ? fcntl(PQsocket(pg), F_DUPFD_CLOEXEC, 0) : -1;
    pool__conn_close(pg);
    if (fd < 0)
        return;
    char sink[512];
    for (;;) {
        int64_t now = pool__clock_now_us();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, pool__clock_poll_timeout_ms(deadline_us, now, IO_SLICE_MS));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (r == 0 && pool__clock_now_us() >= deadline_us))
            break;
        if (r == 0)
            continue;
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            break;
    }
    close(fd);
}

/* After fork(): frees an inherited connection without sending anything on its
   socket, which the parent still uses.  /dev/null takes the socket's place, so
   the Terminate message PQfinish writes goes nowhere and the parent's session
   lives on. */
void pool__conn_drop_silently(PGconn *pg)
{
    int fd = PQsocket(pg);
    if (fd >= 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
            dup2(devnull, fd);
            close(devnull);
        }
    }
    pool__conn_close(pg);
}

/* ---- what a connection says of itself ------------------------------------ */

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

/* From now on c keeps track of its session: the identity it has now, and
   every result libpq creates on it.  Without the result counter every return
   checks the identity: still correct, only slower. */
void pool__conn_watch(pool_conn_t *c, bool writes_expected)
{
    c->results = c->results_verified = 0;
    c->doom = DOOM_NONE;
    c->writes_expected = writes_expected;
    record_identity(c);
    c->results_counted = PQregisterEventProc(c->pg, conn_events, "pgpool", c) != 0;
}

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
