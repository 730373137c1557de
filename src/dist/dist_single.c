// One process: the build without MPI.
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/dist_internal.h"
#include "util/common.h"

void dist_init(int *argc, char ***argv) { (void)argc, (void)argv; }
void dist_finalize(void) { dist_transport_end(); }
void dist_abort(int code) { exit(code); }
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
int dist_local_size(void) { return 1; }
int dist_local_rank(void) { return 0; }
bool dist_have_mpi(void) { return false; }
void dist_barrier(void) {}
void dist_bcast(void *buf, size_t n) { (void)buf, (void)n; }

void dist_raw_allgather(const void *send, void *recv, size_t block) {
    if (block) memcpy(recv, send, block);
}

// cap NULL: *all is a new buffer; else the caller's, grown to the size.
static int gather(const void *buf, size_t n, bool ok, char **all, size_t *cap, size_t **offsets) {
    *offsets = NULL;
    if (!cap) *all = NULL;
    if (!ok) return AS_FAIL; // this rank's own error stands
    *offsets = as_malloc(2 * sizeof **offsets);
    (*offsets)[0] = 0, (*offsets)[1] = n;
    if (!cap) *all = as_malloc(n ? n : 1);
    else if (*cap < (n ? n : 1)) free(*all), *all = as_malloc(n ? n : 1), *cap = n ? n : 1;
    // A transport in use (ALPHASPIN_DIST_TRANSPORT=device or loopback) carries it still.
    if (!dist_transport_gather(buf, n, *offsets, *all) && n) memcpy(*all, buf, n);
    return AS_OK;
}

int dist_allgather(const void *buf, size_t n, bool ok, char **all, size_t **offsets) { return gather(buf, n, ok, all, NULL, offsets); }
int dist_allgather_reuse(const void *buf, size_t n, bool ok, char **all, size_t *cap, size_t **offsets) {
    return gather(buf, n, ok, all, cap, offsets);
}
