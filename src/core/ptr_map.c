/*
 * Live block lookup by address for nf_free: open addressing with linear probing, kept at most half
 * full, and backward-shift deletion so no tombstones accumulate over a long job.
 */
#include <stdlib.h>

#include "pool_internal.h"

static uint64_t slot_of(uint64_t key, uint64_t capacity) {
    /* Addresses are 512-byte aligned: mix the bits so neighbours spread across the table. */
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key & (capacity - 1);
}

bool ptr_map_init(ptr_map *map, uint64_t capacity) {
    map->keys = calloc(capacity, sizeof *map->keys);
    map->values = calloc(capacity, sizeof *map->values);
    map->capacity = capacity;
    map->count = 0;
    if (!map->keys || !map->values) {
        ptr_map_free(map);
        return false;
    }
    return true;
}

void ptr_map_free(ptr_map *map) {
    free(map->keys);
    free(map->values);
    map->keys = NULL;
    map->values = NULL;
    map->capacity = map->count = 0;
}

static void put_unchecked(ptr_map *map, uint64_t key, block *value) {
    uint64_t i = slot_of(key, map->capacity);
    while (map->keys[i] && map->keys[i] != key) i = (i + 1) & (map->capacity - 1);
    if (!map->keys[i]) map->count++;
    map->keys[i] = key;
    map->values[i] = value;
}

bool ptr_map_put(ptr_map *map, uint64_t key, block *value) {
    if ((map->count + 1) * 2 > map->capacity) {
        ptr_map bigger;
        if (!ptr_map_init(&bigger, map->capacity * 2)) return false;
        for (uint64_t i = 0; i < map->capacity; i++)
            if (map->keys[i]) put_unchecked(&bigger, map->keys[i], map->values[i]);
        ptr_map_free(map);
        *map = bigger;
    }
    put_unchecked(map, key, value);
    return true;
}

block *ptr_map_get(const ptr_map *map, uint64_t key) {
    uint64_t i = slot_of(key, map->capacity);
    while (map->keys[i]) {
        if (map->keys[i] == key) return map->values[i];
        i = (i + 1) & (map->capacity - 1);
    }
    return NULL;
}

bool ptr_map_remove(ptr_map *map, uint64_t key) {
    uint64_t mask = map->capacity - 1;
    uint64_t i = slot_of(key, map->capacity);
    while (map->keys[i] && map->keys[i] != key) i = (i + 1) & mask;
    if (!map->keys[i]) return false;
    /* Backward shift: move later entries of the probe run into the hole when their home slot
     * does not lie cyclically within (hole, current]. */
    uint64_t hole = i;
    for (uint64_t j = (i + 1) & mask; map->keys[j]; j = (j + 1) & mask) {
        uint64_t home = slot_of(map->keys[j], map->capacity);
        bool home_in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!home_in_range) {
            map->keys[hole] = map->keys[j];
            map->values[hole] = map->values[j];
            hole = j;
        }
    }
    map->keys[hole] = 0;
    map->values[hole] = NULL;
    map->count--;
    return true;
}
