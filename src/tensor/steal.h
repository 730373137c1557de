// Contiguous ranges of work items with stealing from their backs, for the
// Q8 tile kernels' OpenMP region (kernels_amx.c).
//
// Each thread owns one contiguous range of the items (what a static schedule
// gives: the weights a core prefetches or keeps in its L2 are for the items
// it runs), takes its items from the front, and when its range is empty takes
// the other threads' last items from their backs.  On a shared host the two
// cores' tile units often run at different speeds (on the VM of BENCHMARKS.md
// a tile product measured 12 TSC cycles on one vCPU and 28 on the other at
// once), and a static split left the faster core waiting.
//
// A range is one 64-bit word, front << 32 | back, on a cache line of its own,
// changed by compare-and-swap: an item is claimed exactly once.  Usage, in a
// parallel region of nt threads sharing one steal_ranges:
//   steal_init(r, tid, nt, n_items);   // then a barrier before any claim
//   int victim = tid; int64_t item;
//   while (steal_next(r, tid, nt, &victim, &item)) run item
// with victim != tid after the call when the item was stolen.
#ifndef ALPHASPIN_TENSOR_STEAL_H
#define ALPHASPIN_TENSOR_STEAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define STEAL_MAX_THREADS 64

typedef struct {
    struct {
        _Atomic uint64_t w;
        char pad[64 - sizeof(uint64_t)];
    } range[STEAL_MAX_THREADS] __attribute__((aligned(64)));
} steal_ranges;

// Thread tid's share of n_items (tid < nt <= STEAL_MAX_THREADS).
static inline void steal_init(steal_ranges *r, int tid, int nt, int64_t n_items) {
    const uint64_t lo = (uint64_t)(n_items * tid / nt), hi = (uint64_t)(n_items * (tid + 1) / nt);
    atomic_store_explicit(&r->range[tid].w, lo << 32 | hi, memory_order_relaxed);
}

// The next item of range i from its front (own) or its back (stolen); false when it is empty.
static inline bool steal_claim(steal_ranges *r, int i, bool back, int64_t *item) {
    uint64_t v = atomic_load_explicit(&r->range[i].w, memory_order_relaxed);
    for (;;) {
        const uint64_t f = v >> 32, b = v & 0xffffffffu;
        if (f >= b) return false;
        const uint64_t nv = back ? (f << 32 | (b - 1)) : ((f + 1) << 32 | b);
        if (atomic_compare_exchange_weak_explicit(&r->range[i].w, &v, nv, memory_order_relaxed, memory_order_relaxed)) {
            *item = (int64_t)(back ? b - 1 : f);
            return true;
        }
    }
}

// The calling thread's next item: its own range first, then the others'
// backs in turn (*victim: the range it came from; start it at tid).
static inline bool steal_next(steal_ranges *r, int tid, int nt, int *victim, int64_t *item) {
    if (*victim == tid) {
        if (steal_claim(r, tid, false, item)) return true;
        *victim = (tid + 1) % nt;
    }
    for (; *victim != tid; *victim = (*victim + 1) % nt)
        if (steal_claim(r, *victim, true, item)) return true;
    return false;
}

#endif
