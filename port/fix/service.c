/*
 * The service registry (service.h, docs/services.md): a service's
 * configuration, the scope a job runs in, the per-service and global
 * breakers and deploy counts, and the refusal to fix an unknown service.
 */
#include "service.h"

#include <stdio.h>
#include <string.h>

#include "fix.h"

#define SERVICE_BREAKER_MAX (SERVICE_NAME_MAX + 16)

/* The sections of a registry entry merged over the global ones; any
 * other key is the entry's own (aliases, owners, descriptor) or ignored,
 * so an entry can never move the state directory, the audit key, the
 * scrubber or the model (SelfHeal.Config refuses such keys at boot too). */
static const char *const MERGED[] = {"fix", "deploy", "gate", "notify", "recover", "tickets"};

static int merged_section(const char *key)
{
    for (size_t i = 0; i < sizeof(MERGED) / sizeof(MERGED[0]); i++)
        if (strcmp(key, MERGED[i]) == 0)
            return 1;
    return 0;
}

/* Merges value over the object at merged[key] (made when absent). */
static void merge_section(json_t *merged, const char *key, json_t *value)
{
    json_t *base = json_object_get(merged, key);
    if (json_is_object(base) && json_is_object(value))
        json_object_update_recursive(base, value);
    else
        json_object_set_new(merged, key, json_deep_copy(value));
}

/* the sections whose global values are kept aside in a service's
 * configuration (service.global): the limits counted globally too */
static const char *const GLOBAL_KEPT[] = {"gate", "llm", "notify"};

static json_t *registry_of(json_t *config)
{
    json_t *services = json_object_get(config, "services");
    return json_is_object(services) && json_object_size(services) > 0 ? services : NULL;
}

int service_registry_on(port_ctx *ctx)
{
    json_t *services = port_config_get(ctx, "services");
    int on = json_is_object(services) && json_object_size(services) > 0;
    json_decref(services);
    return on;
}

int service_known(port_ctx *ctx, const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    json_t *services = port_config_get(ctx, "services");
    int known = json_is_object(json_object_get(services, name));
    json_decref(services);
    return known;
}

json_t *service_config(json_t *config, const char *name)
{
    json_t *entry = name != NULL ? json_object_get(registry_of(config), name) : NULL;
    if (!json_is_object(entry) || strlen(name) >= SERVICE_NAME_MAX)
        return NULL;
    /* copies of both: merging adds references to what it merges, and
     * the pinned configuration's counts are never touched outside the lock */
    json_t *merged = json_deep_copy(config);
    entry = json_deep_copy(entry);
    if (merged == NULL || entry == NULL) {
        json_decref(merged);
        json_decref(entry);
        return NULL;
    }
    json_t *service = json_object_get(merged, "service");
    if (!json_is_object(service)) {
        service = json_object();
        json_object_set_new(merged, "service", service);
    }
    /* the global limits, kept before the service's replace them (a scope
     * entered inside another keeps the first one's) */
    if (json_object_get(service, "global") == NULL) {
        json_t *global = json_object();
        for (size_t i = 0; i < sizeof(GLOBAL_KEPT) / sizeof(GLOBAL_KEPT[0]); i++) {
            json_t *section = json_object_get(config, GLOBAL_KEPT[i]);
            json_object_set_new(global, GLOBAL_KEPT[i],
                                json_is_object(section) ? json_deep_copy(section) : json_object());
        }
        json_object_set_new(service, "global", global);
    }
    const char *key;
    json_t *value;
    json_object_foreach(entry, key, value)
    {
        if (merged_section(key))
            merge_section(merged, key, value);
    }
    /* of the model's section only its budget: the model is the global one */
    json_t *budget = json_object_get(json_object_get(entry, "llm"), "budget");
    if (budget != NULL) {
        json_t *llm = json_object_get(merged, "llm");
        if (!json_is_object(llm)) {
            llm = json_object();
            json_object_set_new(merged, "llm", llm);
        }
        merge_section(llm, "budget", budget);
    }
    json_object_set_new(service, "name", json_string(name));
    json_t *descriptor = json_object_get(entry, "descriptor");
    if (descriptor != NULL)
        json_object_set_new(service, "descriptor", json_deep_copy(descriptor));
    json_t *owners = json_object_get(entry, "owners");
    if (owners != NULL)
        json_object_set_new(service, "owners", json_deep_copy(owners));
    json_decref(entry);
    return merged;
}

const char *service_of_group(json_t *group)
{
    json_t *s = json_object_get(group, "service");
    return json_is_string(s) && json_string_length(s) > 0 ? json_string_value(s) : NULL;
}

const char *service_of_groups(json_t *groups)
{
    return service_of_group(json_array_get(groups, 0));
}

const char *service_of_fix(json_t *fix)
{
    return service_of_group(json_object_get(json_object_get(fix, "input"), "group"));
}

const char *service_current(port_ctx *ctx, char *buf, size_t len)
{
    buf[0] = '\0';
    json_t *global = port_config_get(ctx, "service.global");
    if (global != NULL)
        port_config_string(ctx, "service.name", "", buf, len);
    json_decref(global);
    return buf;
}

void service_enter(service_scope *s, port_ctx *ctx, const char *name)
{
    memset(s, 0, sizeof(*s));
    if (name == NULL || !service_known(ctx, name))
        return;
    char now[SERVICE_NAME_MAX];
    if (strcmp(service_current(ctx, now, sizeof(now)), name) == 0)
        return; /* already in it */
    port_pin_take(&s->pin, ctx);
    /* the pinned configuration is never changed: read without the lock,
     * as port_config_get does */
    json_t *merged = service_config(s->pin.config, name);
    if (merged == NULL) {
        port_pin_release(&s->pin);
        return;
    }
    pthread_mutex_lock(&ctx->lock); /* every count of a pinned configuration */
    json_t *old = s->pin.config;
    s->pin.config = merged;
    json_decref(old);
    pthread_mutex_unlock(&ctx->lock);
    port_pin_enter(&s->pin);
    s->entered = 1;
}

void service_enter_fix(service_scope *s, port_ctx *ctx, int64_t id)
{
    memset(s, 0, sizeof(*s));
    state_db *db = port_state(ctx);
    if (db == NULL || !service_registry_on(ctx))
        return;
    json_t *fix = state_fix_get(db, id);
    service_enter(s, ctx, service_of_fix(fix));
    json_decref(fix);
}

void service_leave(service_scope *s)
{
    if (!s->entered)
        return;
    port_pin_end(&s->pin);
    s->entered = 0;
}

int service_may_fix(port_ctx *ctx, json_t *members)
{
    if (!service_registry_on(ctx))
        return 1;
    const char *name = service_of_groups(members);
    if (service_known(ctx, name))
        return 1;
    json_t *first = json_array_get(members, 0);
    json_t *fp = json_object_get(first, "fingerprint");
    if (!json_is_string(fp))
        fp = json_object_get(first, "id");
    json_t *fields = json_pack("{s:O?, s:s?, s:s, s:s}", "fingerprint", fp, "service", name,
                               "reason", "unknown_service", "text",
                               "the service is not in the registry (services): the error is "
                               "grouped, ticketed and reported, never fixed");
    fix_audit(ctx, "fix_skipped", fields);
    port_notify(ctx, "fix_skipped", fields);
    return 0;
}

/* The path of key's global value: under service.global in a service's
 * scope, else key itself. */
static void global_path(port_ctx *ctx, const char *key, char *path, size_t len)
{
    json_t *global = port_config_get(ctx, "service.global");
    snprintf(path, len, "%s%s", global != NULL ? "service.global." : "", key);
    json_decref(global);
}

json_t *service_global_get(port_ctx *ctx, const char *key)
{
    char path[160];
    global_path(ctx, key, path, sizeof(path));
    return port_config_get(ctx, path);
}

static long long global_int(port_ctx *ctx, const char *key, long long dflt)
{
    char path[160];
    global_path(ctx, key, path, sizeof(path));
    return port_config_int(ctx, path, dflt);
}

static void breaker_name(char *out, size_t len, const char *service)
{
    snprintf(out, len, "%s:%s", FIX_BREAKER, service);
}

/* The automatic deploys of service started in the last hour. */
static long long service_deploys(state_db *db, const char *service)
{
    int64_t since = port_now() - 3600;
    json_t *rows =
        state_select(db,
                     "SELECT json_extract(f.input, '$.group.service') AS service FROM deploys d"
                     " JOIN fixes f ON f.id = d.fix_id WHERE d.kind = 'deploy' AND d.status ="
                     " 'started' AND d.auto = 1 AND d.at > ?1",
                     &since, 1);
    if (rows == NULL)
        return -1;
    long long n = 0;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *s = json_string_value(json_object_get(row, "service"));
        n += s != NULL && strcmp(s, service) == 0;
    }
    json_decref(rows);
    return n;
}

void service_gate_facts(port_ctx *ctx, state_db *db, policy_input *in)
{
    char name[SERVICE_NAME_MAX];
    if (service_current(ctx, name, sizeof(name))[0] == '\0')
        return; /* no service: the global counts are the gate's own */
    long long global_max = global_int(ctx, "gate.max_auto_deploys_per_hour", 5);
    long long global_n = in->auto_deploys_last_hour;
    long long own_n = service_deploys(db, name);
    long long own_max = in->max_auto_deploys_per_hour;
    if (own_n < 0 || global_n < 0) {
        in->auto_deploys_last_hour = -1; /* unknown counts as over */
    } else if (own_n >= own_max) {
        in->auto_deploys_last_hour = own_n;
    } else {
        in->auto_deploys_last_hour = global_n;
        in->max_auto_deploys_per_hour = global_max < 0 ? 0 : global_max;
    }
    char breaker[SERVICE_BREAKER_MAX];
    breaker_name(breaker, sizeof(breaker), name);
    int open = 0;
    long long failures = 0;
    state_breaker_get(db, breaker, &open, &failures);
    in->breaker_open = in->breaker_open || open;
}

int service_breaker_record(port_ctx *ctx, state_db *db, int failed, long long service_threshold,
                           int *open)
{
    char name[SERVICE_NAME_MAX];
    service_current(ctx, name, sizeof(name));
    if (name[0] == '\0')
        return state_breaker_record(db, FIX_BREAKER, failed, service_threshold, open);
    long long global = global_int(ctx, "gate.breaker_threshold", 3);
    int global_open = 0, own_open = 0;
    int rc = state_breaker_record(db, FIX_BREAKER, failed, global >= 1 ? global : 3, &global_open);
    char breaker[SERVICE_BREAKER_MAX];
    breaker_name(breaker, sizeof(breaker), name);
    if (state_breaker_record(db, breaker, failed, service_threshold, &own_open) != 0)
        rc = -1;
    if (open != NULL)
        *open = global_open || own_open;
    return rc;
}

int service_breaker_reset(state_db *db, const char *name)
{
    if (name == NULL)
        return state_breaker_reset(db, FIX_BREAKER);
    char breaker[SERVICE_BREAKER_MAX];
    breaker_name(breaker, sizeof(breaker), name);
    return state_breaker_reset(db, breaker);
}

json_t *service_gate_status(port_ctx *ctx, state_db *db)
{
    json_t *out = json_object();
    json_t *services = port_config_get(ctx, "services");
    const char *name;
    json_t *entry;
    json_object_foreach(services, name, entry)
    {
        char breaker[SERVICE_BREAKER_MAX];
        breaker_name(breaker, sizeof(breaker), name);
        int open = 0;
        long long failures = 0;
        state_breaker_get(db, breaker, &open, &failures);
        json_object_set_new(out, name,
                            json_pack("{s:{s:s, s:I}, s:I}", "breaker", "state",
                                      open ? "open" : "closed", "failures", (json_int_t)failures,
                                      "auto_deploys_last_hour",
                                      (json_int_t)service_deploys(db, name)));
    }
    json_decref(services);
    return out;
}

int service_any_fix_enabled(port_ctx *ctx)
{
    json_t *services = port_config_get(ctx, "services");
    int any = 0;
    const char *name;
    json_t *entry;
    json_object_foreach(services, name, entry)
    {
        if (any)
            break;
        SERVICE_SCOPE(scope, ctx, name);
        fix_config cfg;
        cmd_error err = {NULL, ""};
        if (fix_config_load(&cfg, ctx, &err) == 0) {
            any = cfg.enabled;
            fix_config_free(&cfg);
        }
    }
    json_decref(services);
    return any;
}

int service_fix_status(port_ctx *ctx, json_t *status, cmd_error *err)
{
    json_t *services = port_config_get(ctx, "services");
    if (services != NULL && !json_is_object(services)) {
        json_decref(services);
        cmd_error_set(err, "bad_config", "services must be an object of service names");
        return -1;
    }
    json_t *each = json_object();
    int rc = 0;
    const char *name;
    json_t *entry;
    json_object_foreach(services, name, entry)
    {
        if (!json_is_object(entry) || name[0] == '\0' || strlen(name) >= SERVICE_NAME_MAX) {
            cmd_error_set(err, "bad_config", "services.%.64s must be an object", name);
            rc = -1;
            break;
        }
        SERVICE_SCOPE(scope, ctx, name);
        json_t *one = fix_config_status(ctx, err);
        if (one == NULL) {
            char why[sizeof(err->message)];
            snprintf(why, sizeof(why), "%s", err->message);
            cmd_error_set(err, err->code != NULL ? err->code : "bad_config", "services.%s: %s",
                          name, why);
            rc = -1;
            break;
        }
        json_object_set_new(each, name, one);
    }
    json_decref(services);
    if (rc == 0 && json_object_size(each) > 0)
        json_object_set(status, "services", each);
    json_decref(each);
    return rc;
}
