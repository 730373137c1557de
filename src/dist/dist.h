// Processes working on one job (data parallelism), over MPI when the build has
// it and the program was started by an MPI launcher (mpirun, mpiexec, srun);
// otherwise one process, and every function below is the one-process identity.
//
// The model: every process (rank) runs the same command on the same inputs, so
// all of them take the same decisions in the same order; where the work splits
// (prompts, sequences, items, micro-batches) each takes a contiguous share
// (dist_share), computes it exactly as one process would, and the results are
// gathered to every rank in rank order (dist_allgather).  Rank 0 alone writes
// files (util/common.h's atomic writes do nothing on the others) and prints to
// stdout.  What makes N processes give one process's bytes is in the callers:
// a share is computed by the same calls with the same inputs as one process
// makes (README, "Running on several processes").
//
// Errors: a rank whose share failed passes its status to the gather, and every
// rank then fails with the first failing rank's message, so all stop at the
// same point.  An MPI failure (a peer that died) stops the job with one line.
#ifndef AS_DIST_H
#define AS_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Starts MPI when the build has it and the environment says an MPI launcher
// started this process (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK; or
// ALPHASPIN_MPI=1 forces it, ALPHASPIN_MPI=0 forbids it).  Call once, first.
void dist_init(int *argc, char ***argv);
// Ends MPI (a no-op otherwise).  After a failure on any rank call dist_abort instead.
void dist_finalize(void);
// Stops every process of the job with exit status `code` (MPI_Abort), or exits.
void dist_abort(int code) __attribute__((noreturn));

int dist_rank(void);       // 0 .. dist_size() - 1
int dist_size(void);       // 1 without MPI
int dist_local_size(void); // processes of the job on this machine (1 without MPI)
int dist_local_rank(void);  // this process's index among them, 0 .. dist_local_size() - 1
bool dist_have_mpi(void);  // the build has MPI (whether or not it was started)

void dist_barrier(void);
// Rank 0's n bytes into buf on every rank.
void dist_bcast(void *buf, size_t n);
// Rank 0's v, on every rank (decisions that read the file system: rank 0 decides).
bool dist_bcast_bool(bool v);

// Every rank's n bytes of buf, in rank order, to every rank: *all (heap, the
// caller frees) holds them back to back, rank r's at (*offsets)[r] ..
// (*offsets)[r + 1] (heap, dist_size() + 1 entries).  `ok` is this rank's
// status (whether its share was computed); when a rank's is false every rank
// returns -1 with as_error naming that rank and its as_last_error() (*all and
// *offsets are then NULL).
int dist_allgather(const void *buf, size_t n, bool ok, char **all, size_t **offsets);
// dist_allgather into a buffer the caller keeps from call to call: *all
// (heap, *cap bytes; NULL and 0 at first) grows when needed and stays the
// caller's (not freed on failure either), to free when done.  A training
// step's exchange reuses it: MPI moves a reused buffer several times faster
// than freshly allocated pages (BENCHMARKS.md, "Several processes").
int dist_allgather_reuse(const void *buf, size_t n, bool ok, char **all, size_t *cap, size_t **offsets);

// ---- devices, and the transport of the gathers' payload (issue 23) ----
//
// dist_allgather exchanges every rank's size and status over MPI.  Its payload
// goes over MPI too, unless a transport is in use (dist_use_transport): then
// every rank's bytes, padded to the largest rank's, go through one all-gather
// of equal-size blocks of that transport (with device cuda: NCCL, GPU to GPU)
// and are unpadded into the same *all and *offsets.  A byte copy either way:
// what the callers compute from the gathered bytes (train/loop.c: the fixed
// tree of gradient pieces) is the same bits whichever carries them, which is
// why the gradients are gathered and not all-reduced (ncclAllReduce would sum
// in an order that depends on the number of ranks and the topology).

// The backend of the device `spec` names (as_backend_open), for this process:
// with several processes, "cuda" is the GPU of this process's local rank
// ("cuda:<dist_local_rank()>"), and "cuda:N" is refused (one line) when
// several processes of the job share this machine: they would all use GPU N,
// and NCCL takes one GPU per process.  One process: as_backend_open(spec).
struct as_backend;
const struct as_backend *dist_open_device(const char *spec);

// Carries dist_allgather's payload over be's collectives (backend.h's comm_*:
// the CUDA backend's NCCL) when several processes run and be has them,
// bootstrapped as llm.c does: rank 0 makes the communicator's id, MPI
// broadcasts it, every rank joins.  ALPHASPIN_DIST_TRANSPORT chooses:
//   auto      (the default) be's collectives when it has them and they can
//             be used (else MPI, rank 0 saying why in one line); one process: none
//   mpi       MPI alone
//   device    be's collectives, required (AS_FAIL when be has none or they
//             cannot be used), also with one process (the device check)
//   loopback  a transport for tests, also with one process: the same
//             bootstrap and padded blocks as the device's, the blocks over
//             MPI_Allgather (tests/dist: run and sft under mpirun keep one
//             process's bytes with a transport in the path)
// Collective: every rank calls it at the same point, once the device is
// open; later calls do nothing.  AS_OK, or AS_FAIL with the same as_error on
// every rank; a failure inside the communicator's creation, or of a transfer
// later, stops the job with one line (as an MPI failure does).
int dist_use_transport(const struct as_backend *be);
// The transport in use ("cuda": its NCCL; "loopback"), or NULL: MPI.
const char *dist_transport_name(void);

// Rank r's share of n items: [*begin, *end), contiguous, in rank order, sizes
// differing by at most one.
void dist_share_of(int64_t n, int rank, int64_t *begin, int64_t *end);
void dist_share(int64_t n, int64_t *begin, int64_t *end);

// Items [begin, end) of n computed here (dist_share), every other rank's to
// this one: put(user, i, buf) appends item i's bytes, get(user, i, p) reads
// them back from p for an item of another rank and returns the byte after
// them.  ok: this rank's share was computed (dist_allgather's failure then).
// One process: nothing to do, returns AS_OK when ok.
typedef struct as_sbuf as_sbuf;
int dist_gather_shares(int64_t n, bool ok, void (*put)(void *user, int64_t i, as_sbuf *buf),
                       const char *(*get)(void *user, int64_t i, const char *p), void *user);

#endif
