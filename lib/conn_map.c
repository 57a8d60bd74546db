/* SPDX-License-Identifier: MIT */
/*
 * conn_map.c - finds the pool_conn_t of a returned PGconn in O(1).
 *
 * Open addressing with linear probing and backward-shift deletion over a
 * table sized to at least twice the most connections the pool can hold, so
 * it never fills.  It is allocated at create time and again only when
 * pool_resize raises the maximum: never on the borrowing path.  The caller
 * holds pool->lock.
 */
#include "pool_internal.h"

#include <stdlib.h>

static size_t slot_of(const conn_map_t *map, const PGconn *pg)
{
    uintptr_t h = (uintptr_t)pg;
    h ^= h >> 17;
    h *= (uintptr_t)0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return (size_t)h & map->mask;
}

int pool__conn_map_init(conn_map_t *map, size_t max_entries)
{
    size_t cap = 16;
    while (cap < 2 * max_entries)
        cap <<= 1;
    map->slots = calloc(cap, sizeof *map->slots);
    if (!map->slots)
        return POOL_ENOMEM;
    map->mask = cap - 1;
    return POOL_OK;
}

void pool__conn_map_free(conn_map_t *map)
{
    free(map->slots);
    map->slots = NULL;
}

pool_conn_t *pool__conn_map_find(const conn_map_t *map, const PGconn *pg)
{
    for (size_t i = slot_of(map, pg);; i = (i + 1) & map->mask) {
        pool_conn_t *c = map->slots[i];
        if (!c || c->pg == pg)
            return c;
    }
}

void pool__conn_map_insert(conn_map_t *map, pool_conn_t *c)
{
    size_t i = slot_of(map, c->pg);
    while (map->slots[i])
        i = (i + 1) & map->mask;
    map->slots[i] = c;
}

void pool__conn_map_remove(conn_map_t *map, const PGconn *pg)
{
    size_t i = slot_of(map, pg);
    while (map->slots[i] && map->slots[i]->pg != pg)
        i = (i + 1) & map->mask;
    if (!map->slots[i])
        return;
    /* Backward-shift: pull later entries of the same probe run into the hole,
       so lookups never need tombstones. */
    size_t hole = i;
    for (size_t j = (i + 1) & map->mask; map->slots[j]; j = (j + 1) & map->mask) {
        size_t home = slot_of(map, map->slots[j]->pg);
        /* Entry j may move to the hole unless its home lies in (hole, j]. */
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            map->slots[hole] = map->slots[j];
            hole = j;
        }
    }
    map->slots[hole] = NULL;
}

/* Rehashes into a table for max_entries; the old one is kept on failure. */
int pool__conn_map_resize(conn_map_t *map, size_t max_entries)
{
    conn_map_t bigger;
    if (pool__conn_map_init(&bigger, max_entries) != POOL_OK)
        return POOL_ENOMEM;
    for (size_t i = 0; i <= map->mask; i++)
        if (map->slots[i])
            pool__conn_map_insert(&bigger, map->slots[i]);
    pool__conn_map_free(map);
    *map = bigger;
    return POOL_OK;
}
