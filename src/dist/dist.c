// What does not depend on the process layer (dist_mpi.c, dist_single.c):
// shares, the device of each process and the transport of the gathers' payload.
#include "dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist_internal.h"
#include "tensor/backend.h"
#include "util/common.h"

// Rounded up: the lower ranks take the extra items (rank 0 has the first one).
void dist_share_of(int64_t n, int rank, int64_t *begin, int64_t *end) {
    const int64_t size = dist_size();
    *begin = (n * rank + size - 1) / size;
    *end = (n * (rank + 1) + size - 1) / size;
}

void dist_share(int64_t n, int64_t *begin, int64_t *end) { dist_share_of(n, dist_rank(), begin, end); }

int dist_gather_shares(int64_t n, bool ok, void (*put)(void *user, int64_t i, as_sbuf *buf),
                       const char *(*get)(void *user, int64_t i, const char *p), void *user) {
    if (dist_size() == 1) return ok ? AS_OK : AS_FAIL;
    int64_t b, e;
    dist_share(n, &b, &e);
    as_sbuf mine = {0};
    for (int64_t i = b; ok && i < e; i++) put(user, i, &mine);
    char *all;
    size_t *off;
    const int rc = dist_allgather(mine.s, mine.len, ok, &all, &off);
    free(mine.s);
    if (rc) return AS_FAIL;
    for (int r = 0; r < dist_size(); r++) {
        if (r == dist_rank()) continue;
        int64_t rb, re;
        dist_share_of(n, r, &rb, &re);
        const char *p = all + off[r];
        for (int64_t i = rb; i < re; i++) p = get(user, i, p);
    }
    free(all), free(off);
    return AS_OK;
}

bool dist_bcast_bool(bool v) {
    unsigned char b = v;
    dist_bcast(&b, 1);
    return b != 0;
}

// ---- devices ----

const as_backend *dist_open_device(const char *spec) {
    if (dist_size() == 1 || !spec) return as_backend_open(spec);
    if (!strcmp(spec, "cuda")) {
        char local[32];
        snprintf(local, sizeof local, "cuda:%d", dist_local_rank());
        const as_backend *be = as_backend_open(local);
        if (!be) {
            char why[512];
            snprintf(why, sizeof why, "%s", as_last_error());
            as_error("rank %d of %d (local rank %d of %d on this machine): %s (device cuda: each process takes the GPU of its local rank)",
                     dist_rank(), dist_size(), dist_local_rank(), dist_local_size(), why);
        }
        return be;
    }
    if (!strncmp(spec, "cuda:", 5) && dist_local_size() > 1)
        return as_error("device %s: the %d processes of this job on this machine would all use that one GPU (NCCL takes one GPU per process): "
                        "give device cuda, and each process takes the GPU of its local rank",
                        spec, dist_local_size()),
               NULL;
    return as_backend_open(spec);
}

// ---- the payload's transport ----

static const as_backend *t_be; // whose comm_* carry the payload; NULL: MPI
static as_comm *t_comm;

// The loopback transport (tests): the comm_* contract over MPI_Allgather.
struct as_comm {
    unsigned char id[AS_COMM_ID_BYTES];
    int nranks, rank;
};

static const char *lb_status(void) { return NULL; }

static int lb_unique_id(void *id, char *err, size_t n) {
    (void)err, (void)n;
    // Any bytes rank 0 alone knows: comm_init checks that every rank got them.
    unsigned char *u = id;
    const uint64_t seed = ((uint64_t)getpid() << 32) ^ (uint64_t)(as_time() * 1e9);
    for (int i = 0; i < AS_COMM_ID_BYTES; i++) u[i] = (unsigned char)(seed >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
    return AS_OK;
}

static as_comm *lb_init(const void *id, int nranks, int rank, char *err, size_t n) {
    if (nranks != dist_size() || rank != dist_rank())
        return snprintf(err, n, "loopback: rank %d of %d asked for, this process is rank %d of %d", rank, nranks, dist_rank(), dist_size()),
               NULL;
    // Collective, as ncclCommInitRank: every rank's id, which must be rank 0's.
    unsigned char *ids = as_malloc((size_t)nranks * AS_COMM_ID_BYTES);
    dist_raw_allgather(id, ids, AS_COMM_ID_BYTES);
    for (int r = 1; r < nranks; r++)
        if (memcmp(ids, ids + (size_t)r * AS_COMM_ID_BYTES, AS_COMM_ID_BYTES)) {
            free(ids);
            return snprintf(err, n, "loopback: rank %d joined with another communicator id than rank 0's", r), NULL;
        }
    free(ids);
    as_comm *c = as_calloc(1, sizeof *c);
    memcpy(c->id, id, sizeof c->id);
    c->nranks = nranks, c->rank = rank;
    return c;
}

static int lb_allgather(as_comm *c, const void *send, void *recv, size_t block, char *err, size_t n) {
    (void)err, (void)n;
    if (c->nranks != dist_size()) return snprintf(err, n, "loopback: communicator of %d ranks, job of %d", c->nranks, dist_size()), AS_FAIL;
    dist_raw_allgather(send, recv, block);
    return AS_OK;
}

static void lb_destroy(as_comm *c) { free(c); }

static const as_backend loopback = {
    .name = "loopback",
    .comm_status = lb_status,
    .comm_unique_id = lb_unique_id,
    .comm_init = lb_init,
    .comm_allgather = lb_allgather,
    .comm_destroy = lb_destroy,
};

const char *dist_transport_name(void) { return t_be ? t_be->name : NULL; }

int dist_use_transport(const as_backend *be) {
    if (t_be) return AS_OK;
    const char *env = getenv("ALPHASPIN_DIST_TRANSPORT"), *mode = env && *env ? env : "auto";
    const bool required = !strcmp(mode, "device");
    const as_backend *use;
    if (!strcmp(mode, "mpi")) return AS_OK;
    if (!strcmp(mode, "loopback")) use = &loopback;
    else if (!strcmp(mode, "auto") || required) {
        const bool has = be && be->comm_init && be->comm_unique_id && be->comm_allgather && be->comm_destroy;
        if (!has) {
            if (!required) return AS_OK;
            return as_error("ALPHASPIN_DIST_TRANSPORT=device: device %s has no collectives between processes (the CUDA backend's NCCL has)",
                            be ? be->name : "(none)");
        }
        if (dist_size() == 1 && !required) return AS_OK;
        use = be;
    } else return as_error("ALPHASPIN_DIST_TRANSPORT=%s: unknown (expected auto, mpi, device or loopback)", mode);
    // Can every rank use it?  (The first failing rank's reason, on all.)
    const char *why = use->comm_status ? use->comm_status() : NULL;
    if (why) as_error("%s", why);
    char *all;
    size_t *off;
    if (dist_allgather(NULL, 0, why == NULL, &all, &off)) {
        if (required) return AS_FAIL;
        if (dist_rank() == 0) fprintf(stderr, "alphaspin: the gathers between processes go over MPI: %s\n", as_last_error());
        return AS_OK;
    }
    free(all), free(off);
    // Rank 0's id, broadcast (or why it has none).
    struct {
        unsigned char id[AS_COMM_ID_BYTES];
        int32_t ok;
        char msg[400];
    } boot = {.ok = 1};
    if (dist_rank() == 0 && use->comm_unique_id(boot.id, boot.msg, sizeof boot.msg)) boot.ok = 0;
    dist_bcast(&boot, sizeof boot);
    if (!boot.ok) return as_error("%s: rank 0 could not make a communicator id: %.400s", use->name, boot.msg);
    // Every rank joins; one that cannot stops the job (the others wait in the collective).
    char err[512] = "";
    as_comm *c = use->comm_init(boot.id, dist_size(), dist_rank(), err, sizeof err);
    if (!c) {
        fprintf(stderr, "alphaspin: rank %d of %d: %s: joining the communicator failed (%s); the job stops\n", dist_rank(), dist_size(),
                use->name, *err ? err : "no reason given");
        dist_abort(1);
    }
    t_be = use, t_comm = c;
    return AS_OK;
}

bool dist_transport_gather(const void *buf, size_t n, const size_t *off, char *out) {
    if (!t_be) return false;
    const int size = dist_size(), rank = dist_rank();
    size_t block = 0;
    for (int r = 0; r < size; r++) block = AS_MAX(block, off[r + 1] - off[r]);
    if (!block) return true;
    // Equal blocks, this rank's zero-padded; then each rank's bytes to their place.
    char *send = as_calloc(1, block), *recv = as_malloc(block * (size_t)size);
    if (n) memcpy(send, buf, n);
    char err[512] = "";
    if (t_be->comm_allgather(t_comm, send, recv, block, err, sizeof err)) {
        fprintf(stderr, "alphaspin: rank %d of %d: %s all-gather of %zu bytes per rank failed (%s); the job stops, and the same command resumes it\n",
                rank, size, t_be->name, block, *err ? err : "no reason given");
        dist_abort(1);
    }
    for (int r = 0; r < size; r++) memcpy(out + off[r], recv + (size_t)r * block, off[r + 1] - off[r]);
    free(send), free(recv);
    return true;
}

void dist_transport_end(void) {
    if (t_be && t_comm) t_be->comm_destroy(t_comm);
    t_be = NULL, t_comm = NULL;
}
