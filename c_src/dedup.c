/*
 * Batch deduplication of fingerprinted events: an open-addressing hash
 * table (linear probing) from fingerprint to group index, groups kept in
 * first-seen order, service names interned once per batch.
 */
#include "self_heal/dedup.h"

#include <stdlib.h>
#include <string.h>

typedef struct service_entry {
    char *name;
    size_t len;
    uint64_t hash;
} service_entry;

struct sh_dedup {
    sh_dedup_group *groups;
    size_t ngroups;
    size_t groups_cap;
    uint32_t *slots; /* group index + 1; 0 is empty */
    size_t nslots;   /* power of two */

    service_entry *services;
    size_t nservices;
    size_t services_cap;
    uint32_t *service_slots; /* service id + 1 */
    size_t nservice_slots;
};

static uint64_t fp_hash(const uint8_t fp[SH_FP_BYTES])
{
    uint64_t h;
    memcpy(&h, fp, sizeof(h)); /* SHA-256 output is already uniform */
    return h;
}

/* FNV-1a: service names are short. */
static uint64_t str_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

int sh_dedup_new(sh_dedup **out, size_t expected_events)
{
    *out = NULL;
    sh_dedup *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -1;
    /* Start small: a batch usually has far fewer groups than events. */
    size_t guess = expected_events < 1024 ? expected_events : 1024;
    d->nslots = pow2_at_least(guess * 2);
    d->slots = calloc(d->nslots, sizeof(*d->slots));
    d->nservice_slots = 64;
    d->service_slots = calloc(d->nservice_slots, sizeof(*d->service_slots));
    if (d->slots == NULL || d->service_slots == NULL) {
        sh_dedup_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void sh_dedup_free(sh_dedup *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nservices; i++)
        free(d->services[i].name);
    free(d->services);
    free(d->service_slots);
    free(d->groups);
    free(d->slots);
    free(d);
}

static int grow_slots(sh_dedup *d)
{
    size_t nslots = d->nslots * 2;
    uint32_t *slots = calloc(nslots, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t g = 0; g < d->ngroups; g++) {
        size_t i = fp_hash(d->groups[g].fingerprint) & (nslots - 1);
        while (slots[i] != 0)
            i = (i + 1) & (nslots - 1);
        slots[i] = (uint32_t)(g + 1);
    }
    free(d->slots);
    d->slots = slots;
    d->nslots = nslots;
    return 0;
}

static sh_dedup_group *new_group(sh_dedup *d, size_t slot, const uint8_t fp[SH_FP_BYTES],
                                 int64_t ts, size_t index)
{
    if (d->ngroups >= UINT32_MAX - 1)
        return NULL;
    if (d->ngroups == d->groups_cap) {
        size_t cap = d->groups_cap ? d->groups_cap * 2 : 64;
        sh_dedup_group *groups = realloc(d->groups, cap * sizeof(*groups));
        if (groups == NULL)
            return NULL;
        d->groups = groups;
        d->groups_cap = cap;
    }
    sh_dedup_group *g = &d->groups[d->ngroups];
    memset(g, 0, sizeof(*g));
    memcpy(g->fingerprint, fp, SH_FP_BYTES);
    g->first_seen = ts;
    g->last_seen = ts;
    g->sample_index = index;
    d->slots[slot] = (uint32_t)(++d->ngroups);
    return g;
}

static int grow_service_slots(sh_dedup *d)
{
    size_t n = d->nservice_slots * 2;
    uint32_t *slots = calloc(n, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t s = 0; s < d->nservices; s++) {
        size_t i = d->services[s].hash & (n - 1);
        while (slots[i] != 0)
            i = (i + 1) & (n - 1);
        slots[i] = (uint32_t)(s + 1);
    }
    free(d->service_slots);
    d->service_slots = slots;
    d->nservice_slots = n;
    return 0;
}

/* Interns a service name; returns its id or -1. */
static long intern_service(sh_dedup *d, const char *name, size_t len)
{
    uint64_t h = str_hash(name, len);
    size_t mask = d->nservice_slots - 1;
    size_t i = h & mask;
    while (d->service_slots[i] != 0) {
        const service_entry *e = &d->services[d->service_slots[i] - 1];
        if (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0)
            return (long)(d->service_slots[i] - 1);
        i = (i + 1) & mask;
    }
    if (d->nservices == d->services_cap) {
        size_t cap = d->services_cap ? d->services_cap * 2 : 16;
        service_entry *s = realloc(d->services, cap * sizeof(*s));
        if (s == NULL)
            return -1;
        d->services = s;
        d->services_cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, name, len);
    copy[len] = '\0';
    service_entry *e = &d->services[d->nservices];
    e->name = copy;
    e->len = len;
    e->hash = h;
    d->service_slots[i] = (uint32_t)(++d->nservices);
    if (d->nservices * 2 > d->nservice_slots && grow_service_slots(d) != 0)
        return -1;
    return (long)(d->nservices - 1);
}

static int add_service(sh_dedup *d, sh_dedup_group *g, const char *name, size_t len)
{
    long id = intern_service(d, name, len);
    if (id < 0)
        return -1;
    for (uint32_t i = 0; i < g->nservices; i++)
        if (g->services[i] == (uint32_t)id)
            return 0;
    if (g->nservices < SH_DEDUP_MAX_SERVICES)
        g->services[g->nservices++] = (uint32_t)id;
    else if (g->services_dropped < UINT32_MAX)
        g->services_dropped++;
    return 0;
}

int sh_dedup_add(sh_dedup *d, const uint8_t fp[SH_FP_BYTES], int64_t ts, const char *service,
                 size_t service_len, size_t index)
{
    size_t mask = d->nslots - 1;
    size_t i = fp_hash(fp) & mask;
    sh_dedup_group *g = NULL;
    while (d->slots[i] != 0) {
        sh_dedup_group *cand = &d->groups[d->slots[i] - 1];
        if (memcmp(cand->fingerprint, fp, SH_FP_BYTES) == 0) {
            g = cand;
            break;
        }
        i = (i + 1) & mask;
    }
    if (g == NULL) {
        g = new_group(d, i, fp, ts, index);
        if (g == NULL)
            return -1;
        if (d->ngroups * 2 > d->nslots) {
            size_t gi = d->ngroups - 1;
            if (grow_slots(d) != 0)
                return -1;
            g = &d->groups[gi];
        }
    } else {
        if (ts < g->first_seen)
            g->first_seen = ts;
        if (ts > g->last_seen)
            g->last_seen = ts;
    }
    g->count++;
    if (service != NULL && service_len > 0)
        return add_service(d, g, service, service_len);
    return 0;
}

size_t sh_dedup_count(const sh_dedup *d)
{
    return d->ngroups;
}

const sh_dedup_group *sh_dedup_group_at(const sh_dedup *d, size_t i)
{
    return i < d->ngroups ? &d->groups[i] : NULL;
}

sh_slice sh_dedup_service(const sh_dedup *d, uint32_t id)
{
    if (id >= d->nservices)
        return SH_SLICE_EMPTY;
    sh_slice s = {d->services[id].name, d->services[id].len};
    return s;
}
