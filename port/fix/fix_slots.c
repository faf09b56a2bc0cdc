/*
 * The fix loop's slots (fix_loop.h): at most fix.max_concurrent attempts
 * run at once, the others wait; one deploy at a time.
 */
#include "fix_loop.h"

#include <pthread.h>
#include <time.h>

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_cond = PTHREAD_COND_INITIALIZER;
static int slots_used;
static int slots_waiting;
static int deploy_running;

int fix_slot_acquire(port_ctx *ctx, int max)
{
    pthread_mutex_lock(&slot_lock);
    slots_waiting++;
    while (slots_used >= max && !ctx->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&slot_cond, &slot_lock, &ts);
    }
    slots_waiting--;
    int ok = !ctx->stopping;
    if (ok)
        slots_used++;
    pthread_mutex_unlock(&slot_lock);
    return ok ? 0 : -1;
}

void fix_slot_release(void)
{
    pthread_mutex_lock(&slot_lock);
    slots_used--;
    pthread_cond_broadcast(&slot_cond);
    pthread_mutex_unlock(&slot_lock);
}

int fix_slots_full(int max)
{
    pthread_mutex_lock(&slot_lock);
    int full = slots_waiting + slots_used >= max;
    pthread_mutex_unlock(&slot_lock);
    return full;
}

void fix_deploy_slot_set(int running)
{
    pthread_mutex_lock(&slot_lock);
    deploy_running = running;
    pthread_mutex_unlock(&slot_lock);
}

int fix_deploy_slot_busy(void)
{
    pthread_mutex_lock(&slot_lock);
    int busy = deploy_running;
    pthread_mutex_unlock(&slot_lock);
    return busy;
}

void fix_slots_counts(int *deploy_running_out, int *fixing, int *waiting)
{
    pthread_mutex_lock(&slot_lock);
    *deploy_running_out = deploy_running;
    *fixing = slots_used;
    *waiting = slots_waiting;
    pthread_mutex_unlock(&slot_lock);
}
