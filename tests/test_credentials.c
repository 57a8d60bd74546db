/* SPDX-License-Identifier: MIT */
/*
 * test_credentials.c - get_password: asked before each new connection, asked
 * again once (refresh 1) when the server rejects the password, so that a
 * password rotated on the server (ALTER ROLE ... PASSWORD) is picked up by
 * new connections while the ones open keep working until evicted; and the
 * password never shows in an error or a log line.  The test's role needs a
 * password (scram-sha-256) in a cluster that trusts everyone else: a line
 * for it goes first in pg_hba.conf for the test and is taken out after.
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROLE "pgpool_rot"

static char hba_path[1024];
static char *hba_saved;

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static bool write_all(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs(a, f);
    fputs(b, f);
    return fclose(f) == 0;
}

/* Whether the role can connect without a password (trust): false once the
   reload took the new pg_hba.conf line. */
static bool trusted(void *unused)
{
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE, test_conninfo("rot_probe"));
    PGconn *c = PQconnectdb(conninfo);
    bool ok = PQstatus(c) == CONNECTION_OK;
    PQfinish(c);
    return ok;
}

static bool not_trusted(void *unused)
{
    return !trusted(NULL);
}

static int setup(void **state)
{
    if (!test_server_controllable())
        return 0; /* the tests skip: pg_hba.conf is not ours to edit */
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    test_admin_int("CREATE ROLE " ROLE " LOGIN PASSWORD 'first-secret'");
    PGconn *c = PQconnectdb(test_conninfo("rot_admin"));
    PGresult *r = PQexec(c, "SHOW hba_file");
    snprintf(hba_path, sizeof hba_path, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    hba_saved = read_all(hba_path);
    if (!hba_saved || !write_all(hba_path, "local all " ROLE " scram-sha-256\n", hba_saved)) {
        PQfinish(c);
        return -1;
    }
    PQclear(PQexec(c, "SELECT pg_reload_conf()"));
    PQfinish(c);
    return test_wait_for(not_trusted, NULL, 10000) ? 0 : -1;
}

static int teardown(void **state)
{
    if (!hba_saved)
        return 0;
    write_all(hba_path, hba_saved, "");
    free(hba_saved);
    test_admin_int("SELECT pg_reload_conf()");
    test_wait_for(trusted, NULL, 10000);
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    return 0;
}

/* The application's credential source: a cache (what refresh 0 gets) in
   front of the vault (what refresh 1 fetches). */
typedef struct vault {
    test_log_t log;      /* first: cfg.arg serves on_log (test_log_cb) too */
    pthread_mutex_t lock;
    char cached[64], current[64];
    int asked, refreshed;
    bool fail;
} vault_t;

static int get_password(char *buf, size_t len, int refresh, void *arg)
{
    vault_t *v = arg;
    pthread_mutex_lock(&v->lock);
    if (refresh) {
        v->refreshed++;
        snprintf(v->cached, sizeof v->cached, "%s", v->current);
    } else {
        v->asked++;
    }
    snprintf(buf, len, "%s", v->cached);
    bool fail = v->fail;
    pthread_mutex_unlock(&v->lock);
    return fail ? 7 : 0;
}

static pool_t *vault_pool(vault_t *v, const char *app)
{
    static char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE, test_conninfo(app));
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.conninfo = conninfo;
    cfg.min_size = 1;
    cfg.max_size = 2;
    cfg.get_password = get_password;
    cfg.on_log = test_log_cb;
    cfg.arg = v;
    return test_pool_create(&cfg);
}

static void test_a_rotated_password_is_picked_up_after_one_refresh(void **state)
{
    if (!test_server_controllable())
        skip();
    static vault_t v = {.lock = PTHREAD_MUTEX_INITIALIZER, .cached = "first-secret",
                        .current = "first-secret"};
    pool_t *pool = vault_pool(&v, "rot_rotate");
    PGconn *old = pool_getconn(pool);
    assert_non_null(old);
    int old_pid = test_backend_pid(old);
    assert_int_equal(v.refreshed, 0);
    assert_true(v.asked >= 1);

    /* Rotated on the server and in the vault; the cache still has the old. */
    test_admin_int("ALTER ROLE " ROLE " PASSWORD 'second-secret'");
    pthread_mutex_lock(&v.lock);
    snprintf(v.current, sizeof v.current, "second-secret");
    pthread_mutex_unlock(&v.lock);
    assert_int_equal(test_query_int(old, "SELECT 1"), 1); /* open ones keep working */
    pool_putconn(pool, old);

    /* Evicted: new connections try the cached password, are rejected, ask
       once with refresh 1, and succeed. */
    assert_int_equal(pool_evict(pool), POOL_OK);
    PGconn *c = pool_getconn_timeout(pool, 10000);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), old_pid);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pthread_mutex_lock(&v.lock);
    int refreshed = v.refreshed;
    pthread_mutex_unlock(&v.lock);
    assert_int_equal(refreshed, 1);
    pool_destroy(pool);
    test_admin_int("ALTER ROLE " ROLE " PASSWORD 'first-secret'");
}

static void test_a_password_never_shows_in_errors_or_logs(void **state)
{
    if (!test_server_controllable())
        skip();
    static vault_t v = {.lock = PTHREAD_MUTEX_INITIALIZER, .cached = "wrong-hunter2",
                        .current = "wrong-hunter2"};
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE, test_conninfo("rot_secret"));
    pool_config_t cfg;
    test_config(&cfg, "rot_secret");
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.get_password = get_password;
    cfg.on_log = test_log_cb;
    cfg.arg = &v;
    pool_t *pool = test_pool_create(&cfg);
    assert_null(pool_getconn_timeout(pool, 5000));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(pool_errmsg(), "password authentication failed"));
    assert_null(strstr(pool_errmsg(), "hunter2"));
    assert_int_equal(v.refreshed, 1); /* asked again once, then gave up */
    pool_destroy(pool);
    assert_true(test_log_contains(&v.log, "password authentication failed"));
    assert_false(test_log_contains(&v.log, "hunter2"));

    /* get_password failing fails the attempt, saying so. */
    v.fail = true;
    cfg.min_size = 1;
    char err[POOL_ERRMSG_SIZE];
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "get_password failed (returned 7)"));
    assert_false(test_log_contains(&v.log, "hunter2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_rotated_password_is_picked_up_after_one_refresh),
        cmocka_unit_test(test_a_password_never_shows_in_errors_or_logs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
