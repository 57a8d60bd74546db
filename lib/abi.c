/* SPDX-License-Identifier: MIT */
/*
 * abi.c - the entry points of programs built against version 1.0's header.
 *
 * A program passes sizeof its pool_config_t, pool_stats_t or
 * pool_host_stats_t (the header's macros do it), so the library never reads
 * or writes past the end of a struct compiled from an older header.  1.0's
 * header passed no size: its plain-named calls land here and mean 1.0's
 * sizes, which are frozen in pool_internal.h.
 */
#include "pool_internal.h"

_Static_assert(POOL_CONFIG_SIZE_1_0 <= sizeof(pool_config_t), "1.0's config is a prefix");
_Static_assert(POOL_STATS_SIZE_1_0 <= sizeof(pool_stats_t), "1.0's stats are a prefix");
_Static_assert(POOL_HOST_STATS_SIZE_1_0 <= sizeof(pool_host_stats_t), "1.0's host stats too");

/* The parenthesised names are the functions, not the header's macros. */

void(pool_config_init)(pool_config_t *cfg)
{
    pool_config_init_sized(cfg, POOL_CONFIG_SIZE_1_0);
}

pool_t *(pool_create)(const pool_config_t *cfg, char *errbuf, size_t errlen)
{
    return pool_create_sized(cfg, POOL_CONFIG_SIZE_1_0, errbuf, errlen);
}

int(pool_get_stats)(pool_t *pool, pool_stats_t *out)
{
    return pool_get_stats_sized(pool, out, POOL_STATS_SIZE_1_0);
}

int(pool_stats_format)(const pool_stats_t *s, pool_format_t fmt, const char *name, char *buf,
                       size_t len)
{
    return pool_stats_format_sized(s, POOL_STATS_SIZE_1_0, fmt, name, buf, len);
}

int(pool_get_host_stats)(pool_t *pool, pool_host_stats_t *out, int max)
{
    return pool_get_host_stats_sized(pool, out, max, POOL_HOST_STATS_SIZE_1_0);
}

int(pool_host_stats_format)(const pool_host_stats_t *hs, int n, pool_format_t fmt,
                            const char *name, char *buf, size_t len)
{
    return pool_host_stats_format_sized(hs, n, POOL_HOST_STATS_SIZE_1_0, fmt, name, buf, len);
}
