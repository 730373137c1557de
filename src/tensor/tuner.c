// The thread tuner (tuner.h): two arms per size class of step, measured.
#include "tensor/tuner.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"
#include "util/common.h"

enum { N_CLASSES = 7, FIRST_EXPLORE = 2, MIN_INTERVAL = 32, MAX_INTERVAL = 512 };
enum { MODE_ON, MODE_OFF, MODE_ALTERNATE };

typedef struct arm_state {
    double mean[2];   // running mean of seconds per token (0: not measured)
    int cur;          // the arm steps run on
    int countdown;    // steps until the next one on the other arm
    int interval;     // steps between explorations
    int spikes;       // consecutive steps of the current arm at twice its mean
    unsigned flip;    // MODE_ALTERNATE
} arm_state;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_mode;
static arm_state g_cls[N_CLASSES];

static void set_mode(const char *e) {
    g_mode = !e || !*e || !strcmp(e, "1") ? MODE_ON : !strcmp(e, "alternate") ? MODE_ALTERNATE : MODE_OFF;
    for (int i = 0; i < N_CLASSES; i++) g_cls[i] = (arm_state){.countdown = FIRST_EXPLORE, .interval = MIN_INTERVAL};
}

static void tuner_init(void) { set_mode(getenv("ALPHASPIN_THREAD_TUNER")); }

void tuner_reset(const char *mode) {
    pthread_once(&g_once, tuner_init);
    pthread_mutex_lock(&g_lock);
    set_mode(mode);
    pthread_mutex_unlock(&g_lock);
}

static int size_class(int64_t n) {
    int c = 0;
    while (n > 1 && c < N_CLASSES - 1) n >>= 1, c++;
    return c;
}

void tuner_begin(tuner_step *s, int64_t n_tokens) {
    pthread_once(&g_once, tuner_init);
    s->cls = -1, s->arm = 0, s->tokens = n_tokens, s->old_cap = 0;
    const int max = kernel_get_threads(); // a caller's own cap counts as the maximum
    if (g_mode == MODE_OFF || max < 2 || n_tokens < 1 || n_tokens > TUNER_MAX_TOKENS) return;
    s->cls = size_class(n_tokens);
    pthread_mutex_lock(&g_lock);
    arm_state *a = &g_cls[s->cls];
    if (g_mode == MODE_ALTERNATE) s->arm = (int)(a->flip++ & 1);
    else if (--a->countdown <= 0) s->arm = 1 - a->cur, a->countdown = a->interval;
    else s->arm = a->cur;
    pthread_mutex_unlock(&g_lock);
    s->old_cap = kernel_cap_threads(s->arm ? AS_MAX(max / 2, 1) : max);
    s->t0 = as_time();
}

void tuner_end(tuner_step *s) {
    if (s->cls >= 0) tuner_record(s, as_time() - s->t0);
}

void tuner_record(tuner_step *s, double seconds) {
    if (s->cls < 0) return;
    const double per = seconds / (double)s->tokens;
    kernel_cap_threads(s->old_cap);
    if (g_mode != MODE_ON) return;
    pthread_mutex_lock(&g_lock);
    arm_state *a = &g_cls[s->cls];
    double *m = &a->mean[s->arm];
    if (s->arm == a->cur) {
        // All threads, twice the mean twice in a row: the load changed, look at
        // half soon.  (Half the threads slowing down is more load, which more
        // threads do not help; the explorations find the load gone.)
        a->spikes = s->arm == 0 && *m > 0 && per > 2 * *m ? a->spikes + 1 : 0;
        if (a->spikes >= 2) a->spikes = 0, a->interval = MIN_INTERVAL, a->countdown = AS_MIN(a->countdown, 1);
        *m = *m > 0 ? 0.8 * *m + 0.2 * per : per;
    }
    else { // an exploration: this arm's mean is its latest step
        *m = per;
        if (per < 0.9 * a->mean[a->cur]) a->cur = s->arm, a->interval = MIN_INTERVAL, a->spikes = 0;
        else a->interval = AS_MIN((per > 2 * a->mean[a->cur] ? 4 : 2) * a->interval, MAX_INTERVAL); // a far slower arm: look less often
        a->countdown = a->interval;
    }
    pthread_mutex_unlock(&g_lock);
}
