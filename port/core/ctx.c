/*
 * port_ctx helpers shared by every command module: pins and replacements
 * of what configure swaps (ctx.h), configuration access, error filling,
 * and the state directory's database and audit log opened for commands.
 */
#include "ctx.h"

#include <time.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "cmd.h"
#include "self_heal/scrub.h"
#include "state.h"

/* ------------------------------------------------------------ pins */

/* The pins the calling thread has entered, innermost first (via outer). */
static _Thread_local port_pin *thread_pin;

static port_pin *pin_of(port_ctx *ctx)
{
    for (port_pin *p = thread_pin; p != NULL; p = p->outer)
        if (p->ctx == ctx)
            return p;
    return NULL;
}

/* Whether a pin holds obj (ctx->lock held). */
static int pinned(port_ctx *ctx, const void *obj)
{
    for (port_pin *p = ctx->pins; p != NULL; p = p->next)
        if ((const void *)p->scrub == obj || (const void *)p->state == obj ||
            (const void *)p->audit == obj)
            return 1;
    return 0;
}

/* obj when it is neither current (cur) nor pinned: nothing can reach it
 * any more and the caller frees it (ctx->lock held). */
static void *unreachable(port_ctx *ctx, void *obj, const void *cur)
{
    return obj != NULL && obj != cur && !pinned(ctx, obj) ? obj : NULL;
}

/* A replaced state database and audit log of one directory that pins
 * still hold (either may be gone already: NULL). */
struct port_held {
    port_held *next;
    state_db *state;
    audit_log *audit;
    char *dir;
};

/* Objects about to be freed leave the held pairs (ctx->lock held): a
 * pointer in ctx->held is always alive. */
static void held_forget(port_ctx *ctx, const state_db *state, const audit_log *audit)
{
    for (port_held **h = &ctx->held; *h != NULL;) {
        port_held *e = *h;
        if (state != NULL && e->state == state)
            e->state = NULL;
        if (audit != NULL && e->audit == audit)
            e->audit = NULL;
        if (e->state == NULL && e->audit == NULL) {
            *h = e->next;
            free(e->dir);
            free(e);
        } else {
            h = &e->next;
        }
    }
}

/* Frees what unreachable() found, outside the lock. */
static void free_objects(sh_scrubber *scrub, state_db *state, audit_log *audit)
{
    sh_scrubber_free(scrub);
    if (state != NULL)
        state_close(state);
    if (audit != NULL)
        audit_close(audit);
}

void port_pin_take(port_pin *pin, port_ctx *ctx)
{
    port_pin *from = pin_of(ctx);
    memset(pin, 0, sizeof(*pin));
    pthread_mutex_lock(&ctx->lock);
    pin->ctx = ctx;
    pin->config = from != NULL ? from->config : ctx->config;
    json_incref(pin->config);
    pin->scrub = from != NULL ? from->scrub : ctx->scrub;
    pin->state = from != NULL ? from->state : ctx->state;
    pin->audit = from != NULL ? from->audit : ctx->audit;
    pin->next = ctx->pins;
    ctx->pins = pin;
    pthread_mutex_unlock(&ctx->lock);
}

void port_pin_enter(port_pin *pin)
{
    pin->outer = thread_pin;
    thread_pin = pin;
}

void port_pin_leave(port_pin *pin)
{
    if (thread_pin == pin)
        thread_pin = pin->outer;
    pin->outer = NULL;
}

void port_pin_release(port_pin *pin)
{
    port_ctx *ctx = pin->ctx;
    if (ctx == NULL)
        return;
    pthread_mutex_lock(&ctx->lock);
    for (port_pin **p = &ctx->pins; *p != NULL; p = &(*p)->next)
        if (*p == pin) {
            *p = pin->next;
            break;
        }
    sh_scrubber *scrub = unreachable(ctx, pin->scrub, ctx->scrub);
    state_db *state = unreachable(ctx, pin->state, ctx->state);
    audit_log *audit = unreachable(ctx, pin->audit, ctx->audit);
    held_forget(ctx, state, audit);
    json_decref(pin->config); /* under the lock, like every count of the shared object */
    pthread_mutex_unlock(&ctx->lock);
    free_objects(scrub, state, audit);
    memset(pin, 0, sizeof(*pin));
}

int port_pins_wait(port_ctx *ctx, long long ms)
{
    long long end = port_now_ms() + ms;
    for (;;) {
        pthread_mutex_lock(&ctx->lock);
        int held = ctx->pins != NULL;
        pthread_mutex_unlock(&ctx->lock);
        if (!held)
            return 0;
        if (port_now_ms() >= end)
            return -1;
        port_sleep_ms(10, NULL);
    }
}

void port_pin_begin(port_pin *pin, port_ctx *ctx)
{
    port_pin_take(pin, ctx);
    port_pin_enter(pin);
}

void port_pin_end(port_pin *pin)
{
    port_pin_leave(pin);
    port_pin_release(pin);
}

/* ------------------------------------------------------------ replacing */

void port_set_config(port_ctx *ctx, json_t *config)
{
    pthread_mutex_lock(&ctx->lock);
    json_t *old = ctx->config;
    ctx->config = config;
    json_decref(old);
    pthread_mutex_unlock(&ctx->lock);
}

void port_set_scrubber(port_ctx *ctx, sh_scrubber *scrub)
{
    pthread_mutex_lock(&ctx->lock);
    sh_scrubber *old = ctx->scrub;
    ctx->scrub = scrub;
    old = unreachable(ctx, old, scrub);
    pthread_mutex_unlock(&ctx->lock);
    free_objects(old, NULL, NULL);
}

/* Makes state, audit (of dir, owned; NULL: unknown) current (ctx->lock
 * held). The pair replaced is kept in ctx->held while a pin holds part of
 * it and its directory is known; what no pin holds is returned for
 * free_objects. */
static void swap_state_locked(port_ctx *ctx, state_db *state, audit_log *audit, char *dir,
                              state_db **free_state, audit_log **free_audit)
{
    state_db *old_state = ctx->state;
    audit_log *old_audit = ctx->audit;
    char *old_dir = ctx->state_dir;
    ctx->state = state;
    ctx->audit = audit;
    ctx->state_dir = dir;
    *free_state = unreachable(ctx, old_state, state);
    *free_audit = unreachable(ctx, old_audit, audit);
    held_forget(ctx, *free_state, *free_audit);
    state_db *kept_state = *free_state == NULL && old_state != state ? old_state : NULL;
    audit_log *kept_audit = *free_audit == NULL && old_audit != audit ? old_audit : NULL;
    port_held *e = NULL;
    if (old_dir != NULL && (kept_state != NULL || kept_audit != NULL))
        e = malloc(sizeof(*e));
    if (e != NULL) {
        *e = (port_held){
            .next = ctx->held, .state = kept_state, .audit = kept_audit, .dir = old_dir};
        ctx->held = e;
    } else {
        free(old_dir);
    }
}

void port_set_state(port_ctx *ctx, state_db *state, audit_log *audit)
{
    state_db *old_state;
    audit_log *old_audit;
    pthread_mutex_lock(&ctx->lock);
    swap_state_locked(ctx, state, audit, NULL, &old_state, &old_audit);
    pthread_mutex_unlock(&ctx->lock);
    free_objects(NULL, old_state, old_audit);
}

int port_state_reuse(port_ctx *ctx, const char *dir)
{
    state_db *old_state = NULL;
    audit_log *old_audit = NULL;
    pthread_mutex_lock(&ctx->lock);
    port_held **h = &ctx->held;
    while (*h != NULL && strcmp((*h)->dir, dir) != 0)
        h = &(*h)->next;
    port_held *e = *h;
    if (e != NULL) {
        *h = e->next;
        swap_state_locked(ctx, e->state, e->audit, e->dir, &old_state, &old_audit);
        free(e);
    }
    pthread_mutex_unlock(&ctx->lock);
    free_objects(NULL, old_state, old_audit);
    return e != NULL;
}

void port_state_opened(port_ctx *ctx, const char *dir)
{
    pthread_mutex_lock(&ctx->lock);
    if (ctx->state_dir == NULL && (ctx->state != NULL || ctx->audit != NULL))
        ctx->state_dir = strdup(dir); /* NULL: never found again, only opened anew */
    pthread_mutex_unlock(&ctx->lock);
}

void port_pin_adopt_state_locked(port_ctx *ctx)
{
    port_pin *pin = pin_of(ctx);
    if (pin != NULL && pin->state == NULL)
        pin->state = ctx->state;
    if (pin != NULL && pin->audit == NULL)
        pin->audit = ctx->audit;
}

/* ------------------------------------------------------------ reading */

state_db *port_state(port_ctx *ctx)
{
    port_pin *pin = pin_of(ctx);
    if (pin != NULL && pin->state != NULL)
        return pin->state;
    pthread_mutex_lock(&ctx->lock);
    state_db *db = ctx->state;
    if (pin != NULL)
        pin->state = db; /* opened after the pin was taken: held from now on */
    pthread_mutex_unlock(&ctx->lock);
    return db;
}

audit_log *port_audit(port_ctx *ctx)
{
    port_pin *pin = pin_of(ctx);
    if (pin != NULL && pin->audit != NULL)
        return pin->audit;
    pthread_mutex_lock(&ctx->lock);
    audit_log *log = ctx->audit;
    if (pin != NULL)
        pin->audit = log;
    pthread_mutex_unlock(&ctx->lock);
    return log;
}

const sh_scrubber *port_scrubber(port_ctx *ctx)
{
    port_pin *pin = pin_of(ctx);
    if (pin != NULL)
        return pin->scrub;
    pthread_mutex_lock(&ctx->lock);
    const sh_scrubber *s = ctx->scrub;
    pthread_mutex_unlock(&ctx->lock);
    return s;
}

/* The value at a dotted path under root (borrowed), or NULL; the empty
 * path is root itself. */
static json_t *config_lookup(json_t *root, const char *path)
{
    json_t *cur = root;
    char key[128];
    const char *p = path;
    while (cur != NULL && *p != '\0') {
        const char *dot = strchr(p, '.');
        size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof(key))
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        cur = json_is_object(cur) ? json_object_get(cur, key) : NULL;
        p += n;
        if (*p == '.')
            p++;
    }
    return cur;
}

json_t *port_config_get(port_ctx *ctx, const char *path)
{
    port_pin *pin = pin_of(ctx);
    if (pin != NULL) /* the pin keeps its configuration alive and unchanged */
        return json_deep_copy(config_lookup(pin->config, path));
    pthread_mutex_lock(&ctx->lock);
    json_t *copy = json_deep_copy(config_lookup(ctx->config, path));
    pthread_mutex_unlock(&ctx->lock);
    return copy;
}

json_t *port_config(port_ctx *ctx)
{
    json_t *copy = port_config_get(ctx, "");
    return copy != NULL ? copy : json_object();
}

const char *port_config_string(port_ctx *ctx, const char *path, const char *dflt, char *buf,
                               size_t buflen)
{
    json_t *v = port_config_get(ctx, path);
    const char *src = json_is_string(v) ? json_string_value(v) : dflt;
    if (src == NULL) {
        json_decref(v);
        return NULL;
    }
    snprintf(buf, buflen, "%s", src);
    json_decref(v);
    return buf;
}

long long port_config_int(port_ctx *ctx, const char *path, long long dflt)
{
    json_t *v = port_config_get(ctx, path);
    long long r = json_is_integer(v) ? (long long)json_integer_value(v)
                  : json_is_real(v)  ? (long long)json_real_value(v)
                                     : dflt;
    json_decref(v);
    return r;
}

double port_config_real(port_ctx *ctx, const char *path, double dflt)
{
    json_t *v = port_config_get(ctx, path);
    double r = json_is_number(v) ? json_number_value(v) : dflt;
    json_decref(v);
    return r;
}

void cmd_error_set(cmd_error *err, const char *code, const char *fmt, ...)
{
    if (err == NULL)
        return;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

int cmd_config_string(port_ctx *ctx, const char *path, const char *dflt, char *buf, size_t len,
                      cmd_error *err)
{
    json_t *v = port_config_get(ctx, path);
    int rc = 0;
    if (v == NULL || json_is_null(v)) {
        snprintf(buf, len, "%s", dflt);
    } else if (!json_is_string(v) || json_string_length(v) >= len ||
               strlen(json_string_value(v)) != json_string_length(v)) {
        cmd_error_set(err, "bad_config", "%s must be a string shorter than %zu bytes", path, len);
        rc = -1;
    } else {
        snprintf(buf, len, "%s", json_string_value(v));
    }
    json_decref(v);
    return rc;
}

/* An array of strings at path: absent or null gives *out NULL. An argv:
 * 1..max strings; else 0..max non-empty strings. */
static int config_list(port_ctx *ctx, const char *path, size_t max, int argv, json_t **out,
                       cmd_error *err)
{
    json_t *v = port_config_get(ctx, path);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        json_decref(v);
        return 0;
    }
    size_t i;
    json_t *a;
    int ok = json_is_array(v) && json_array_size(v) <= max && (!argv || json_array_size(v) > 0);
    json_array_foreach(v, i, a) ok = ok && json_is_string(a) && (argv || json_string_length(a) > 0);
    if (!ok) {
        if (argv)
            cmd_error_set(err, "bad_config", "%s must be an array of strings (an argv, no shell)",
                          path);
        else
            cmd_error_set(err, "bad_config", "%s must be an array of non-empty strings", path);
        json_decref(v);
        return -1;
    }
    *out = v;
    return 0;
}

int cmd_config_strings(port_ctx *ctx, const char *path, json_t **out, cmd_error *err)
{
    return config_list(ctx, path, 256, 0, out, err);
}

int cmd_config_argv(port_ctx *ctx, const char *path, size_t max, json_t **out, cmd_error *err)
{
    return config_list(ctx, path, max, 1, out, err);
}

/* ------------------------------------------------------------ state directory */

int state_ctx_ensure(port_ctx *ctx, cmd_error *err)
{
    char dir[STATE_PATH_MAX];
    char msg[512] = "";
    char path[STATE_PATH_MAX + 32];
    int rc = -1;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->state != NULL && ctx->audit != NULL) {
        rc = 0;
        goto done;
    }
    json_t *v = ctx->config != NULL ? json_object_get(ctx->config, "state_dir") : NULL;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= sizeof(dir)) {
        cmd_error_set(err, "no_state", "no state_dir configured");
        goto done;
    }
    snprintf(dir, sizeof(dir), "%s", json_string_value(v));
    if (ctx->state == NULL && state_open(&ctx->state, dir, msg, sizeof(msg)) != 0) {
        cmd_error_set(err, "no_state", "%s", msg);
        goto done;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, AUDIT_FILE);
    if (ctx->audit == NULL &&
        audit_open_config(&ctx->audit, path, ctx->config, msg, sizeof(msg)) != 0) {
        cmd_error_set(err, "no_state", "%s", msg);
        goto done;
    }
    rc = 0;
done:
    if (rc == 0) /* a configure right after cannot take them from this thread */
        port_pin_adopt_state_locked(ctx);
    pthread_mutex_unlock(&ctx->lock);
    return rc;
}
