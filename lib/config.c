/* SPDX-License-Identifier: MIT */
/*
 * config.c - defaults and validation of pool_config_t.
 *
 * pool_create() refuses a config it cannot honour, naming the bad field, so
 * that a typo fails at start-up instead of under load.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void config_defaults(pool_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->min_size = 1;
    cfg->max_size = 10;
    cfg->max_overflow = 0;
    cfg->acquire_timeout_ms = 30000;
    cfg->connect_timeout_ms = 10000;
    cfg->idle_timeout_ms = 600000;
    cfg->max_lifetime_ms = 1800000;
    cfg->pre_ping = 1;
    cfg->ping_idle_ms = 1000;
    cfg->max_waiting = 0;
    cfg->leak_timeout_ms = 0;
}

/* Writes exactly `size` bytes: the caller's struct may be older (smaller)
   than ours, or newer (its unknown tail zeroed). */
void pool_config_init_sized(pool_config_t *cfg, size_t size)
{
    if (!cfg || size < POOL_CONFIG_SIZE_MIN)
        return;
    pool_config_t defaults;
    config_defaults(&defaults);
    pool__copy_out(cfg, size, &defaults, sizeof defaults);
}

/* The caller's config of `size` bytes as a whole one of ours: fields its
   struct lacks get their defaults.  A larger struct (built against a newer
   header than this library) is refused unless what we do not know is zero,
   so that a setting is never silently ignored. */
pool_err_t pool__config_from_caller(const pool_config_t *cfg, size_t size, pool_config_t *out,
                                    char *errbuf, size_t errlen)
{
    if (size < POOL_CONFIG_SIZE_MIN) {
        snprintf(errbuf, errlen, "config size %zu is smaller than any pgpool header's (%zu)", size,
                 (size_t)POOL_CONFIG_SIZE_MIN);
        return POOL_EINVAL;
    }
    config_defaults(out);
    memcpy(out, cfg, size < sizeof *out ? size : sizeof *out);
    for (size_t i = sizeof *out; i < size; i++) {
        if (((const unsigned char *)cfg)[i] != 0) {
            snprintf(errbuf, errlen,
                     "config sets a field this library (pgpool %s) does not know, at byte %zu of "
                     "%zu: the program was built against a newer pgpool.h",
                     pool_version_string(), i, size);
            return POOL_EINVAL;
        }
    }
    return POOL_OK;
}

#define CHECK(cond, ...)                                \
    do {                                                \
        if (!(cond)) {                                  \
            snprintf(errbuf, errlen, __VA_ARGS__);      \
            return POOL_EINVAL;                         \
        }                                               \
    } while (0)

/* POOL_OK, or POOL_EINVAL with a message naming the field in errbuf.  The
   conninfo check reports libpq's reason, scrubbed of the password. */
int pool__config_validate(const pool_config_t *cfg, char *errbuf, size_t errlen)
{
    CHECK(cfg, "config is NULL");
    CHECK(cfg->conninfo, "conninfo is required");
    CHECK(cfg->max_size >= 1, "max_size must be at least 1 (got %d)", cfg->max_size);
    CHECK(cfg->min_size >= 0, "min_size must not be negative (got %d)", cfg->min_size);
    CHECK(cfg->min_size <= cfg->max_size, "min_size (%d) must not exceed max_size (%d)",
          cfg->min_size, cfg->max_size);
    CHECK(cfg->max_overflow >= 0, "max_overflow must not be negative (got %d)", cfg->max_overflow);
    CHECK((long)cfg->max_size + cfg->max_overflow <= POOL_MAX_CONNECTIONS,
          "max_size + max_overflow must not exceed %d", POOL_MAX_CONNECTIONS);
    CHECK(cfg->connect_timeout_ms >= 1, "connect_timeout_ms must be at least 1 (got %d)",
          cfg->connect_timeout_ms);
    CHECK(cfg->idle_timeout_ms >= 0, "idle_timeout_ms must not be negative (got %d)",
          cfg->idle_timeout_ms);
    CHECK(cfg->max_lifetime_ms >= 0, "max_lifetime_ms must not be negative (got %d)",
          cfg->max_lifetime_ms);
    CHECK(cfg->pre_ping == 0 || cfg->pre_ping == 1, "pre_ping must be 0 or 1 (got %d)",
          cfg->pre_ping);
    CHECK(cfg->ping_idle_ms >= 0, "ping_idle_ms must not be negative (got %d)", cfg->ping_idle_ms);
    CHECK(cfg->max_waiting >= 0, "max_waiting must not be negative (got %d)", cfg->max_waiting);
    CHECK(cfg->leak_timeout_ms >= 0, "leak_timeout_ms must not be negative (got %d)",
          cfg->leak_timeout_ms);
    CHECK(cfg->lifetime_jitter_ms >= 0, "lifetime_jitter_ms must not be negative (got %d)",
          cfg->lifetime_jitter_ms);
    CHECK(cfg->max_lifetime_ms == 0 || cfg->lifetime_jitter_ms < cfg->max_lifetime_ms,
          "lifetime_jitter_ms (%d) must be less than max_lifetime_ms (%d)", cfg->lifetime_jitter_ms,
          cfg->max_lifetime_ms);
    CHECK(cfg->fair_share == 0 || cfg->fair_share == 1, "fair_share must be 0 or 1 (got %d)",
          cfg->fair_share);
    CHECK(cfg->return_in_background == 0 || cfg->return_in_background == 1,
          "return_in_background must be 0 or 1 (got %d)", cfg->return_in_background);

    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->conninfo, &err);
    if (!opts && pool__parse_out_of_memory(err)) {
        PQfreemem(err);
        snprintf(errbuf, errlen, "out of memory while parsing the conninfo");
        return POOL_ENOMEM;
    }
    if (!opts) {
        char reason[POOL_MSG_LEN];
        pool_err_t rc = pool__copy_scrubbed(cfg->conninfo, reason, sizeof reason, err);
        PQfreemem(err);
        snprintf(errbuf, errlen, rc == POOL_OK ? "invalid conninfo: %s" : "%s while checking the conninfo",
                 reason);
        return rc == POOL_OK ? POOL_EINVAL : POOL_ENOMEM;
    }
    PQconninfoFree(opts);
    return POOL_OK;
}
