/*
 * Notifications to the BEAM, secrets, the clock (base.h).
 */
#include "base.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static port_notify_fn notify_hook;

void port_set_notify_hook(port_notify_fn fn)
{
    notify_hook = fn;
}

int port_notify(port_ctx *ctx, const char *event, json_t *fields)
{
    (void)ctx;
    json_t *msg = fields != NULL && json_is_object(fields) ? fields : json_object();
    if (msg != fields)
        json_decref(fields);
    if (msg == NULL)
        return -1;
    json_object_set_new(msg, "event", json_string(event));
    if (notify_hook == NULL) {
        char *text = json_dumps(msg, JSON_COMPACT);
        if (text != NULL)
            fprintf(stderr, "%s\n", text);
        free(text);
        json_decref(msg);
        return 0;
    }
    return notify_hook(msg);
}

const char *port_secret(const char *env_name)
{
    if (env_name == NULL || env_name[0] == '\0')
        return NULL;
    const char *v = getenv(env_name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

int64_t port_now(void)
{
    const char *fake = getenv("SELF_HEAL_NOW");
    if (fake != NULL && fake[0] != '\0') {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(fake, &end, 10);
        if (errno == 0 && end != fake && *end == '\0' && v >= 0)
            return (int64_t)v;
    }
    return (int64_t)time(NULL);
}

long long port_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int port_sleep_ms(long ms, const atomic_int *cancel)
{
    long long end = port_now_ms() + ms;
    for (;;) {
        if (cancel != NULL && *cancel)
            return 1;
        long long left = end - port_now_ms();
        if (left <= 0)
            return 0;
        long step = left < 50 ? (long)left : 50;
        struct timespec ts = {step / 1000, (step % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}
