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

// Rank r's share of n items: [*begin, *end), contiguous, in rank order, sizes
// differing by at most one.
void dist_share_of(int64_t n, int rank, int64_t *begin, int64_t *end);
void dist_share(int64_t n, int64_t *begin, int64_t *end);

#endif
