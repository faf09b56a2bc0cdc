/*
 * The service registry (docs/services.md): `services` in the configuration
 * maps a service's name to its own sections (fix, deploy, gate, notify,
 * recover, tickets, descriptor, owners), each merged over the global
 * section of the same name; what a service does not set, the global
 * configuration gives, so a configuration without `services` works as one
 * service.
 *
 * A job runs in its service's configuration: service_enter takes and
 * enters a pin (ctx.h) whose configuration is the global one with the
 * service's sections merged over it, so every port_config_* read of the
 * job (fix.repo, deploy.argv, gate.consent, recover.actions, service.name
 * keying trust and recovery, ...) gives the service's value. A thread that
 * starts another (a fix drive, a deploy) copies that pin, and the other
 * thread stays in the service. The pin's configuration is made once, is
 * never changed, and is freed by the pin's release like any replaced one.
 *
 * Budgets, rate limits and breakers are counted per service and
 * globally: the deploy breaker "deploy" counts every failed deploy
 * (threshold: the global gate.breaker_threshold) and "deploy:<service>"
 * the service's own (its gate.breaker_threshold); the automatic deploys of
 * the last hour are held to the global gate.max_auto_deploys_per_hour and
 * to the service's own. A service's breaker open stops its deploys only;
 * the global one stops all. The analysis model's budgets (llm.c) and the
 * notification channels' rate limits (notify.c) are counted the same way:
 * the global limits (kept under service.global) over every service's use,
 * the service's own over its use.
 *
 * An event of a service the registry does not name (while one is
 * configured) is analysed, ticketed and notified, never fixed: the fix step
 * is skipped with the reason recorded (audit "fix_skipped", a
 * "fix_skipped" notification).
 */
#ifndef SELF_HEAL_PORT_SERVICE_H
#define SELF_HEAL_PORT_SERVICE_H

#include <jansson.h>

#include "cmd.h"
#include "ctx.h"
#include "policy.h"
#include "state.h"

#define SERVICE_NAME_MAX 128

/* A service's scope: the pin entered by service_enter, if any. */
typedef struct service_scope {
    port_pin pin;
    int entered;
} service_scope;

/* Whether the calling thread's configuration has a registry (a non-empty
 * `services` object). */
int service_registry_on(port_ctx *ctx);

/* Whether name is a service of the registry (0 without one). */
int service_known(port_ctx *ctx, const char *name);

/* config with the sections of services.<name> merged over the global ones
 * and `service` set ({"name", "descriptor"?, "owners"?, "global": {"gate",
 * "llm", "notify"}})
 * (a new reference), or NULL when name is not in config's registry. */
json_t *service_config(json_t *config, const char *name);

/* The name of the service the calling thread's configuration is scoped
 * to, into buf ("" when none). */
const char *service_current(port_ctx *ctx, char *buf, size_t len);

/* The global configuration's value at key ("llm.budget", "notify.slack"):
 * in a service's scope the one kept aside before the service's sections
 * replaced it (service.global: the sections gate, llm and notify), else
 * the current one. A new reference, or NULL. */
json_t *service_global_get(port_ctx *ctx, const char *key);

/* The service of a group ("service"), of an escalation's groups (the
 * first group's), of a fix row (its input's group); NULL when none. */
const char *service_of_group(json_t *group);
const char *service_of_groups(json_t *groups);
const char *service_of_fix(json_t *fix);

/* Enters the configuration of service name when the registry names it
 * (else changes nothing); service_leave ends it. */
void service_enter(service_scope *s, port_ctx *ctx, const char *name);
/* The same for the service of fix id (read from the state database). */
void service_enter_fix(service_scope *s, port_ctx *ctx, int64_t id);
void service_leave(service_scope *s);

/* A scope that ends with the block it is declared in. */
#define SERVICE_SCOPE(var, ctx, name)                                                              \
    service_scope var __attribute__((cleanup(service_leave)));                                     \
    service_enter(&var, ctx, name)
#define SERVICE_SCOPE_FIX(var, ctx, id)                                                            \
    service_scope var __attribute__((cleanup(service_leave)));                                     \
    service_enter_fix(&var, ctx, id)

/* Whether the members' fix may start: 0 when a registry is configured and
 * their service is not in it, after recording why (audit "fix_skipped",
 * notification "fix_skipped"); else 1. */
int service_may_fix(port_ctx *ctx, json_t *members);

/* The gate's counts for a fix of the current service: the automatic
 * deploys of the last hour against the global limit and the service's,
 * the global breaker and the service's (in->breaker_open). */
void service_gate_facts(port_ctx *ctx, state_db *db, policy_input *in);

/* Records a deploy's outcome in the global breaker (its threshold: the
 * global gate.breaker_threshold) and in the current service's (threshold:
 * service_threshold); *open (may be NULL): either is open now. */
int service_breaker_record(port_ctx *ctx, state_db *db, int failed, long long service_threshold,
                           int *open);

/* Resets the breaker of service name (NULL: the global one). */
int service_breaker_reset(state_db *db, const char *name);

/* The breakers and counts of every registered service, for the gate
 * status: {name: {"breaker": {"state", "failures"}, "auto_deploys_last_hour"}}
 * (an empty object without a registry). */
json_t *service_gate_status(port_ctx *ctx, state_db *db);

/* At configure: each service's fix loop as fix_config_status gives it,
 * under status's "services"; -1 with err naming the service when one is
 * unusable (the configure is refused). */
int service_fix_status(port_ctx *ctx, json_t *status, cmd_error *err);

/* Whether any registered service has a usable fix loop (the scheduler
 * starts for it even when the global configuration has none). */
int service_any_fix_enabled(port_ctx *ctx);

#endif
