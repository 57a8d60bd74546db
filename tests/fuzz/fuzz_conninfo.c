/* SPDX-License-Identifier: MIT */
/*
 * fuzz_conninfo.c - libFuzzer target for everything pgpool does with a
 * conninfo string: validation (libpq's PQconninfoParse), finding the password
 * (with libpq, and by hand where libpq refuses the string) and scrubbing it
 * from messages.  Invariants: no crash or sanitizer report, every message is
 * a terminated string, and a message never shows the password pgpool found.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DPGPOOL_FUZZ=ON -DPGPOOL_BUILD_TESTS=OFF
 *   cmake --build build-fuzz --target fuzz_conninfo
 *   build-fuzz/fuzz_conninfo -max_total_time=60 tests/fuzz/corpus/conninfo
 */
#include "pool_internal.h"

#include <stdlib.h>
#include <string.h>

static void check_message(const char *msg, size_t cap, const char *pw)
{
    if (memchr(msg, '\0', cap) == NULL)
        abort(); /* not terminated */
    /* A password made of asterisks could match the mask itself. */
    if (pw && *pw && !strchr(pw, '*') && strstr(msg, pw))
        abort(); /* the password leaked */
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
    char err[POOL_MSG_LEN];
    memset(err, 'x', sizeof err); /* written only on failure */
    int rc = pool__config_validate(&cfg, err, sizeof err);

    pool_t scrubber;
    memset(&scrubber, 0, sizeof scrubber);
    if (!pool__password_of(conninfo, &scrubber.password))
        abort(); /* no allocation fails here: a false "out of memory" */
    /* Our own words ("invalid conninfo: ") may contain a one-letter
       password by chance; what must never show it is libpq's part. */
    const char *prefix = "invalid conninfo: ";
    if (rc != POOL_OK && strncmp(err, prefix, strlen(prefix)) == 0)
        check_message(err + strlen(prefix), sizeof err - strlen(prefix), scrubber.password);
    else if (rc != POOL_OK)
        abort(); /* only the conninfo varies here */

    /* The string as if libpq had echoed it in an error. */
    char msg[POOL_MSG_LEN];
    pool__copy_libpq_message(&scrubber, msg, sizeof msg, conninfo);
    check_message(msg, sizeof msg, scrubber.password);

    free(scrubber.password);
    free(conninfo);
    return 0;
}
