// One process: the build without MPI.
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "util/common.h"

void dist_init(int *argc, char ***argv) { (void)argc, (void)argv; }
void dist_finalize(void) {}
void dist_abort(int code) { exit(code); }
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
int dist_local_size(void) { return 1; }
bool dist_have_mpi(void) { return false; }
void dist_barrier(void) {}
void dist_bcast(void *buf, size_t n) { (void)buf, (void)n; }

int dist_allgather(const void *buf, size_t n, bool ok, char **all, size_t **offsets) {
    *all = NULL, *offsets = NULL;
    if (!ok) return AS_FAIL; // this rank's own error stands
    *all = as_malloc(n ? n : 1);
    if (n) memcpy(*all, buf, n);
    *offsets = as_malloc(2 * sizeof **offsets);
    (*offsets)[0] = 0, (*offsets)[1] = n;
    return AS_OK;
}
