/*
 * Batch deduplication: events (fingerprint, timestamp, service) in, groups
 * out, in the order of each group's first event in the input. A group keeps
 * its count, first and last timestamp, the input index of its first event
 * (the sample) and its distinct services (the first SH_DEDUP_MAX_SERVICES
 * met; services_dropped counts the events whose service was not kept, not
 * distinct services, so that memory stays bounded per group).
 */
#ifndef SELF_HEAL_DEDUP_H
#define SELF_HEAL_DEDUP_H

#include "self_heal/common.h"
#include "self_heal/fingerprint.h"

#define SH_DEDUP_MAX_SERVICES 16

typedef struct sh_dedup_group {
    uint8_t fingerprint[SH_FP_BYTES];
    uint64_t count;
    int64_t first_seen;
    int64_t last_seen;
    size_t sample_index;
    uint32_t nservices;
    uint32_t services_dropped;
    uint32_t services[SH_DEDUP_MAX_SERVICES]; /* ids from sh_dedup_service() */
} sh_dedup_group;

typedef struct sh_dedup sh_dedup;

int sh_dedup_new(sh_dedup **out, size_t expected_events);
void sh_dedup_free(sh_dedup *dedup);

/* Adds one event; service may be NULL/empty. Returns 0 or -1 (no memory). */
int sh_dedup_add(sh_dedup *dedup, const uint8_t fingerprint[SH_FP_BYTES], int64_t timestamp,
                 const char *service, size_t service_len, size_t index);

size_t sh_dedup_count(const sh_dedup *dedup);
const sh_dedup_group *sh_dedup_group_at(const sh_dedup *dedup, size_t i);
sh_slice sh_dedup_service(const sh_dedup *dedup, uint32_t service_id);

#endif
