/* SPDX-License-Identifier: MIT */
/*
 * version.c - what differs between versions: the version itself, and
 * copying a struct whose size the caller passes (see "ABI" in pgpool.h), so
 * that the library never reads or writes past the end of a struct compiled
 * from an older header, and a newer header's larger struct gets its tail
 * zeroed.
 */
#include "pool_internal.h"

#include <string.h>

void pool__copy_in(void *ours, size_t ours_size, const void *theirs, size_t size)
{
    size_t n = size < ours_size ? size : ours_size;
    memcpy(ours, theirs, n);
    memset((char *)ours + n, 0, ours_size - n);
}

void pool__copy_out(void *theirs, size_t size, const void *ours, size_t ours_size)
{
    size_t n = size < ours_size ? size : ours_size;
    memcpy(theirs, ours, n);
    memset((char *)theirs + n, 0, size - n);
}

unsigned pool_version(void)
{
    return PGPOOL_VERSION_NUMBER;
}

#define POOL_STR_(x) #x
#define POOL_STR(x) POOL_STR_(x)

const char *pool_version_string(void)
{
    return POOL_STR(PGPOOL_VERSION_MAJOR) "." POOL_STR(PGPOOL_VERSION_MINOR) "." POOL_STR(
        PGPOOL_VERSION_PATCH);
}
