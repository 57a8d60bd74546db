/* SPDX-License-Identifier: MIT */
/*
 * fuzz_settings.c - libFuzzer target for taking pool_* settings out of a
 * conninfo (lib/settings.c).  Invariants: no crash or sanitizer report; on
 * success every applied value is in range and libpq never meets a pool_* key
 * in what is left (it would call it an invalid option); on failure a
 * terminated message that names a pool_ key.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DPGPOOL_FUZZ=ON -DPGPOOL_BUILD_TESTS=OFF
 *   cmake --build build-fuzz --target fuzz_settings
 *   build-fuzz/fuzz_settings -max_total_time=60 tests/fuzz/corpus/settings
 */
#include "pool_internal.h"

#include <stdlib.h>
#include <string.h>

static void check_ranges(const pool_config_t *c)
{
    if (c->min_size < 0 || c->max_size < 1 || c->max_overflow < 0 || c->acquire_timeout_ms < -1 ||
        c->connect_timeout_ms < 1 || c->idle_timeout_ms < 0 || c->max_lifetime_ms < 0 ||
        (c->pre_ping != 0 && c->pre_ping != 1) || c->ping_idle_ms < 0 || c->max_waiting < 0 ||
        c->leak_timeout_ms < 0)
        abort();
    if (c->reset_query && !*c->reset_query)
        abort(); /* an empty reset query means none */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *conninfo = malloc(size + 1);
    if (!conninfo)
        return 0;
    memcpy(conninfo, data, size);
    conninfo[size] = '\0';

    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    pool_settings_t s;
    char err[POOL_MSG_LEN];
    memset(err, 'x', sizeof err);
    int rc = pool__settings_from_conninfo(&cfg, &s, err, sizeof err);
    if (rc != POOL_OK) {
        if (!memchr(err, '\0', sizeof err) ||
            (!strstr(err, "pool_") && !strstr(err, "load_balance_hosts")))
            abort();
        free(conninfo);
        return 0;
    }
    if (strlen(s.conninfo) > 2 * size || s.cfg.conninfo != s.conninfo)
        abort();
    check_ranges(&s.cfg);

    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(s.conninfo, &perr);
    if (!opts && perr &&
        (strncmp(perr, "invalid connection option \"pool_", 32) == 0 ||
         strncmp(perr, "invalid URI query parameter: \"pool_", 35) == 0))
        abort(); /* a pool_* key got through to libpq */
    PQconninfoFree(opts);
    PQfreemem(perr);
    pool__settings_free(&s);
    free(conninfo);
    return 0;
}
