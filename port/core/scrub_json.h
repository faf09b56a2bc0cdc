/*
 * JSON values scrubbed whole (c_src/scrub.c on every string), for what the
 * port stores at rest: an escalation's groups, a fix's input.
 */
#ifndef SELF_HEAL_PORT_SCRUB_JSON_H
#define SELF_HEAL_PORT_SCRUB_JSON_H

#include <jansson.h>

typedef struct sh_scrubber sh_scrubber; /* include/self_heal/scrub.h */

/* A new value: v with every string scrubbed by s (NULL: built-in rules);
 * object keys, numbers, booleans and null stay. Strings nested deeper than
 * 32 levels become "[REDACTED:too_deep]". Never NULL for a non-NULL v. */
json_t *scrub_json(const sh_scrubber *s, json_t *v);

#endif
