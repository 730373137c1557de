// What dist.c (devices, the payload's transport) and the process layers
// (dist_mpi.c, dist_single.c) share; not for use outside src/dist.
#ifndef AS_DIST_INTERNAL_H
#define AS_DIST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

// Every rank's `block` bytes at send into recv (dist_size() * block bytes, in
// rank order), over MPI: the loopback transport's wire.  An MPI failure stops the job.
void dist_raw_allgather(const void *send, void *recv, size_t block);
// dist_allgather's payload over the transport in use, when there is one: every
// rank's off[r + 1] - off[r] bytes (this rank's n at buf) into out at off[r].
// false (nothing done) when there is none.  A transport's failure stops the job.
bool dist_transport_gather(const void *buf, size_t n, const size_t *off, char *out);
// Destroys the transport's communicator (dist_finalize).
void dist_transport_end(void);

#endif
