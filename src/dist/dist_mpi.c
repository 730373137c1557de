// MPI: the build with it (CMake's ALPHASPIN_MPI, on when MPI is found).
//
// MPI starts only when a launcher started the process: Open MPI's mpirun sets
// OMPI_COMM_WORLD_SIZE, MPICH's Hydra and Slurm's PMI set PMI_SIZE, PMIx
// launchers (srun --mpi=pmix, prterun) PMIX_RANK.  A plain `alphaspin ...` is
// one process without touching MPI: Open MPI's singleton start costs a
// fraction of a second (BENCHMARKS.md) that short commands should not pay.
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dist/dist_internal.h"
#include "util/common.h"

static bool started;
static int rank_, size_ = 1, local_size_ = 1, local_rank_;

// An MPI call that failed (a peer died, the network went away) stops the job
// here, with one line, on every rank that sees it.
static void check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fprintf(stderr, "alphaspin: rank %d of %d: MPI %s failed (%.*s); the job stops, and the same command resumes it\n", rank_, size_,
            what, len, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

// The launcher ends the job with SIGTERM when one of its processes ends
// (killed, or failed): rank 0 says so once.
static void on_term(int sig) {
    static const char msg[] = "alphaspin: the job stops (one of its processes ended, or it was cancelled); the same command resumes it\n";
    if (rank_ == 0) {
        const ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
    }
    _exit(128 + sig);
}

static bool launched(void) {
    const char *force = getenv("ALPHASPIN_MPI");
    if (force && *force) return strcmp(force, "0") != 0;
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

void dist_init(int *argc, char ***argv) {
    if (started || !launched()) return;
    int provided;
    // Only the main thread calls MPI (OpenMP threads compute between calls).
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "alphaspin: MPI_Init failed\n");
        exit(1);
    }
    started = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_size(local, &local_size_);
        MPI_Comm_rank(local, &local_rank_);
        MPI_Comm_free(&local);
    }
    if (size_ > 1) {
        struct sigaction sa = {.sa_handler = on_term};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
    }
}

void dist_finalize(void) {
    dist_transport_end();
    if (started) MPI_Finalize();
    started = false;
}

void dist_abort(int code) {
    if (started && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int dist_rank(void) { return rank_; }
int dist_size(void) { return size_; }
int dist_local_size(void) { return local_size_; }
int dist_local_rank(void) { return local_rank_; }
bool dist_have_mpi(void) { return true; }

void dist_barrier(void) {
    if (size_ > 1) check(MPI_Barrier(MPI_COMM_WORLD), "barrier");
}

// MPI counts are int: large buffers go in pieces of 1 GiB.
#define CHUNK ((size_t)1 << 30)

static void bcast_from(void *buf, size_t n, int root) {
    for (size_t off = 0; off < n; off += CHUNK) {
        const size_t k = n - off < CHUNK ? n - off : CHUNK;
        check(MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
    }
}

void dist_bcast(void *buf, size_t n) {
    if (size_ > 1) bcast_from(buf, n, 0);
}

void dist_raw_allgather(const void *send, void *recv, size_t block) {
    if (size_ == 1) {
        if (block) memcpy(recv, send, block);
        return;
    }
    // In pieces whose gathered size MPI's int counts hold.
    const size_t piece = CHUNK / (size_t)size_;
    if (block <= piece) {
        check(MPI_Allgather(send, (int)block, MPI_BYTE, recv, (int)block, MPI_BYTE, MPI_COMM_WORLD), "allgather");
        return;
    }
    char *tmp = as_malloc(piece * (size_t)size_);
    for (size_t off = 0; off < block; off += piece) {
        const size_t k = block - off < piece ? block - off : piece;
        check(MPI_Allgather((const char *)send + off, (int)k, MPI_BYTE, tmp, (int)k, MPI_BYTE, MPI_COMM_WORLD), "allgather");
        for (int r = 0; r < size_; r++) memcpy((char *)recv + (size_t)r * block + off, tmp + (size_t)r * k, k);
    }
    free(tmp);
}

// What every rank says before its bytes: how many, and whether it has them.
typedef struct block_head {
    uint64_t n;
    int32_t ok;
    char msg[500];
} block_head;

// The receive buffer of `need` bytes: new (cap NULL), or the caller's *all grown to it.
static char *recv_buf(char **all, size_t *cap, size_t need) {
    if (!cap) return *all = as_malloc(need);
    if (*cap < need) free(*all), *all = as_malloc(need), *cap = need;
    return *all;
}

// cap NULL: *all is a new buffer; else the caller's, grown to the size.
static int gather(const void *buf, size_t n, bool ok, char **all, size_t *cap, size_t **offsets) {
    *offsets = NULL;
    if (!cap) *all = NULL;
    if (size_ == 1) {
        if (!ok) return AS_FAIL;
        *offsets = as_malloc(2 * sizeof **offsets);
        (*offsets)[0] = 0, (*offsets)[1] = n;
        recv_buf(all, cap, n ? n : 1);
        // A transport in use with one process (ALPHASPIN_DIST_TRANSPORT=device or loopback) carries it still.
        if (!dist_transport_gather(buf, n, *offsets, *all) && n) memcpy(*all, buf, n);
        return AS_OK;
    }
    block_head me = {.n = ok ? n : 0, .ok = ok};
    if (!ok) snprintf(me.msg, sizeof me.msg, "%s", as_last_error());
    block_head *heads = as_malloc(sizeof *heads * (size_t)size_);
    check(MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, heads, (int)sizeof me, MPI_BYTE, MPI_COMM_WORLD), "allgather");
    for (int r = 0; r < size_; r++) {
        if (heads[r].ok) continue;
        // This rank's own message stands; the others say whose it was.
        if (r != rank_) as_error("rank %d of %d failed: %s", r, size_, heads[r].msg);
        free(heads);
        return AS_FAIL;
    }
    size_t *off = as_malloc(sizeof *off * (size_t)(size_ + 1));
    off[0] = 0;
    for (int r = 0; r < size_; r++) off[r + 1] = off[r] + heads[r].n;
    char *out = recv_buf(all, cap, off[size_] ? off[size_] : 1);
    // The sizes and statuses went over MPI; the bytes over the transport in use, else MPI.
    if (!dist_transport_gather(buf, n, off, out)) {
        if (n) memcpy(out + off[rank_], buf, n);
        for (int r = 0; r < size_; r++) bcast_from(out + off[r], heads[r].n, r);
    }
    free(heads);
    *offsets = off;
    return AS_OK;
}

int dist_allgather(const void *buf, size_t n, bool ok, char **all, size_t **offsets) { return gather(buf, n, ok, all, NULL, offsets); }
int dist_allgather_reuse(const void *buf, size_t n, bool ok, char **all, size_t *cap, size_t **offsets) {
    return gather(buf, n, ok, all, cap, offsets);
}
