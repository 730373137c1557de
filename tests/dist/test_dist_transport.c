// dist_allgather with a transport in the path (issue 23): every rank's bytes,
// padded to equal blocks, over the transport's all-gather and unpadded back
// (dist/dist.h, dist_use_transport).  Plain C, no cmocka: it runs under mpirun.
//
//   test_dist_transport loopback   the loopback transport (the blocks over
//                                  MPI_Allgather): ctest runs it under
//                                  mpirun -np 2 and as one process
//                                  (tests/dist/test_mpi_transport.sh)
//   test_cuda_nccl cuda            the CUDA backend's NCCL: one process on one
//                                  GPU, a one-rank communicator (this file built
//                                  with src/dist's one-process layer in
//                                  tests/tensor, label gpu; scripts/device_check.sh).  Skips (77) where
//                                  no CUDA device can be opened: here, every
//                                  machine it was written on.  NOT YET RUN ON A GPU.
//
// Cases: equal sizes, sizes that differ by rank (rank 0 the largest, then the
// smallest), a rank with none, one of 65 MiB + a few bytes (over the CUDA
// transport's 64 MiB chunk), and a rank whose share failed (every rank then
// fails, with that rank's message).  Exit 0: passed; 1: failed; 77: skipped.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "tensor/backend.h"
#include "util/common.h"

static int failures;

#define CHECK(cond, ...)                                                                                                                    \
    do {                                                                                                                                   \
        if (!(cond)) {                                                                                                                     \
            fprintf(stderr, "FAIL (rank %d): ", dist_rank());                                                                             \
            fprintf(stderr, __VA_ARGS__);                                                                                                  \
            fprintf(stderr, "\n");                                                                                                         \
            failures++;                                                                                                                    \
        }                                                                                                                                  \
    } while (0)

static unsigned char byte_of(int rank, size_t i, int c) { return (unsigned char)(rank * 131 + (int)(i * 7) + c * 13 + (int)(i >> 9)); }

// Case c: rank r's size.
static size_t size_of(int c, int r, int size) {
    switch (c) {
    case 0: return 1000;
    case 1: return (size_t)(size - r) * 4097 + 3;
    case 2: return (size_t)r * 4097 + 5;
    case 3: return r == 0 ? 0 : 12345;
    case 4: return r == size - 1 ? ((size_t)65 << 20) + 17 : (size_t)r * 1000;
    default: return 0;
    }
}

static void gather_case(int c) {
    const int size = dist_size(), rank = dist_rank();
    const size_t n = size_of(c, rank, size);
    unsigned char *buf = as_malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) buf[i] = byte_of(rank, i, c);
    char *all;
    size_t *off;
    const int rc = dist_allgather(buf, n, true, &all, &off);
    CHECK(rc == AS_OK, "case %d: dist_allgather failed: %s", c, as_last_error());
    if (rc == AS_OK) {
        size_t at = 0;
        for (int r = 0; r < size; r++) {
            const size_t want = size_of(c, r, size);
            CHECK(off[r] == at && off[r + 1] - off[r] == want, "case %d: rank %d's block at [%zu, %zu), expected [%zu, %zu)", c, r, off[r],
                  off[r + 1], at, at + want);
            size_t bad = 0;
            for (size_t i = 0; i < want && off[r + 1] - off[r] == want; i++) bad += (unsigned char)all[off[r] + i] != byte_of(r, i, c);
            CHECK(bad == 0, "case %d: %zu of rank %d's %zu bytes differ", c, bad, r, want);
            at += want;
        }
        free(all), free(off);
    }
    free(buf);
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    const char *mode = argc > 1 ? argv[1] : "loopback";
    const as_backend *be = NULL;
    if (!strcmp(mode, "loopback")) setenv("ALPHASPIN_DIST_TRANSPORT", "loopback", 1);
    else if (!strcmp(mode, "cuda")) {
        setenv("ALPHASPIN_DIST_TRANSPORT", "device", 1);
        if (dist_size() > 1) {
            if (dist_rank() == 0) fprintf(stderr, "test_dist_transport cuda: one process (one GPU), not %d\n", dist_size());
            dist_abort(2);
        }
        if (!(be = dist_open_device("cuda"))) {
            printf("SKIP: %s\n", as_last_error());
            dist_finalize();
            return 77;
        }
        const char *why = be->comm_status ? be->comm_status() : "the cuda backend has no comm_status";
        if (why) {
            printf("FAIL: cuda device open, but no NCCL: %s\n", why);
            dist_finalize();
            return 1;
        }
    } else {
        fprintf(stderr, "usage: test_dist_transport [loopback|cuda]\n");
        return 2;
    }
    if (dist_use_transport(be)) {
        fprintf(stderr, "FAIL (rank %d): dist_use_transport: %s\n", dist_rank(), as_last_error());
        dist_abort(1);
    }
    const char *want = !strcmp(mode, "cuda") ? "cuda" : "loopback", *name = dist_transport_name();
    CHECK(name && !strcmp(name, want), "transport %s in use, expected %s", name ? name : "mpi", want);
    // A second call changes nothing.
    CHECK(dist_use_transport(be) == AS_OK && dist_transport_name() == name, "a second dist_use_transport changed the transport");
    for (int c = 0; c < 5; c++) gather_case(c);
    // The last rank's share failed: every rank fails, naming it.
    {
        const int last = dist_size() - 1;
        if (dist_rank() == last) as_error("share %d broken on purpose", last);
        char *all;
        size_t *off;
        const char x[3] = {1, 2, 3};
        const int rc = dist_allgather(x, sizeof x, dist_rank() != last, &all, &off);
        CHECK(rc != AS_OK && !all && !off, "a failed share: dist_allgather returned %d", rc);
        CHECK(strstr(as_last_error(), "broken on purpose") != NULL, "a failed share: message '%s'", as_last_error());
        if (dist_size() > 1 && dist_rank() != last) {
            char who[64];
            snprintf(who, sizeof who, "rank %d of %d failed", last, dist_size());
            CHECK(strstr(as_last_error(), who) != NULL, "a failed share: message '%s' does not name rank %d", as_last_error(), last);
        }
        // And the transport still carries the next gather.
        gather_case(1);
    }
    // Every rank's verdict, to rank 0 (over the transport too).
    const unsigned char mine = failures != 0;
    char *all;
    size_t *off;
    int bad = 0;
    if (dist_allgather(&mine, 1, true, &all, &off) == AS_OK) {
        for (int r = 0; r < dist_size(); r++) bad += all[r] != 0;
        free(all), free(off);
    } else bad = 1;
    if (dist_rank() == 0)
        printf("%s: 8 gathers over %s, %d process%s, %d failing\n", bad ? "FAIL" : "PASS", name ? name : "mpi", dist_size(),
               dist_size() == 1 ? "" : "es", bad);
    dist_finalize();
    return bad ? 1 : 0;
}
