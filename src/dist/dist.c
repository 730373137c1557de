// What does not depend on the transport (dist_mpi.c, dist_single.c).
#include "dist/dist.h"

// Rounded up: the lower ranks take the extra items (rank 0 has the first one).
void dist_share_of(int64_t n, int rank, int64_t *begin, int64_t *end) {
    const int64_t size = dist_size();
    *begin = (n * rank + size - 1) / size;
    *end = (n * (rank + 1) + size - 1) / size;
}

void dist_share(int64_t n, int64_t *begin, int64_t *end) { dist_share_of(n, dist_rank(), begin, end); }

bool dist_bcast_bool(bool v) {
    unsigned char b = v;
    dist_bcast(&b, 1);
    return b != 0;
}
