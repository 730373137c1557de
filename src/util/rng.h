// Explicit, seedable random number generator (xoshiro256**, seeded by
// splitmix64).  Every random decision in alphaspin takes one of these, so the
// same seed gives the same stream on every machine.
#ifndef AS_RNG_H
#define AS_RNG_H

#include <stdint.h>

typedef struct as_rng { uint64_t s[4]; } as_rng;

static inline uint64_t as_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void as_rng_seed(as_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = as_splitmix64(&seed);
}

static inline uint64_t as_rng_u64(as_rng *r) {
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

// Uniform in [0, 1) with 53 bits.
static inline double as_rng_uniform(as_rng *r) { return (as_rng_u64(r) >> 11) * 0x1.0p-53; }

// Uniform integer in [0, n), n > 0 (Lemire's nearly-divisionless method is not
// needed at our rates; the modulo bias of a 64-bit draw is < 2^-32 for n < 2^32).
static inline uint64_t as_rng_below(as_rng *r, uint64_t n) { return as_rng_u64(r) % n; }

#endif
