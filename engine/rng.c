/*
 * rng.c: the Philox-4x32-10 counter-based generator (Salmon et al.,
 * "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
 *
 * The key is the 64-bit seed and the counter numbers the 32-bit words drawn
 * so far: word i is lane i%4 of the block encrypted from counter i/4. Any
 * position of the stream is therefore computable directly, and saving
 * (seed, counter) saves the generator.
 */
#include <math.h>

#include "cpu.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void philox_block(uint64_t seed, uint64_t block, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);

    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void mrt_rng_init(mrt_rng *rng, uint64_t seed)
{
    rng->seed = seed;
    rng->counter = 0;
}

uint32_t mrt_rng_u32(mrt_rng *rng)
{
    uint32_t block[4];
    uint64_t i = rng->counter++;

    philox_block(rng->seed, i >> 2, block);
    return block[i & 3];
}

static double u32_to_unit(uint32_t u)
{
    return (double)(u >> 8) * (1.0 / 16777216.0);
}

double mrt_rng_uniform(mrt_rng *rng)
{
    return u32_to_unit(mrt_rng_u32(rng));
}

/* Blocks that fill_words encrypts side by side, so the loops over them vectorise. */
#define LANES 16

/*
 * Encrypts the LANES counters first, first+1, ... into out (word w of block
 * j at out[4*j + w]), the same rounds as philox_block in arrays.
 */
MRT_CPU_CLONES static void philox_lanes(uint64_t seed, uint64_t first, uint32_t *out)
{
    uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);

    for (int j = 0; j < LANES; j++) {
        c0[j] = (uint32_t)(first + (uint64_t)j);
        c1[j] = (uint32_t)((first + (uint64_t)j) >> 32);
        c2[j] = 0;
        c3[j] = 0;
    }
    for (int round = 0; round < 10; round++) {
        for (int j = 0; j < LANES; j++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[j];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1;
            c3[j] = (uint32_t)p0;
            c0[j] = n0;
            c2[j] = n2;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    for (int j = 0; j < LANES; j++) {
        out[4 * j] = c0[j];
        out[4 * j + 1] = c1[j];
        out[4 * j + 2] = c2[j];
        out[4 * j + 3] = c3[j];
    }
}

/* Fills words[0..n) with the next n words of the stream. */
static void fill_words(mrt_rng *rng, uint32_t *words, int64_t n)
{
    uint32_t block[4];
    int64_t i = 0;

    /* Up to the next block boundary, then LANES whole blocks at a time. */
    while (i < n && (rng->counter & 3) != 0)
        words[i++] = mrt_rng_u32(rng);
    while (n - i >= 4 * LANES) {
        philox_lanes(rng->seed, rng->counter >> 2, words + i);
        i += 4 * LANES;
        rng->counter += 4 * LANES;
    }
    while (i < n) {
        uint64_t pos = rng->counter;
        philox_block(rng->seed, pos >> 2, block);
        for (unsigned lane = (unsigned)(pos & 3); lane < 4 && i < n; lane++) {
            words[i++] = block[lane];
            rng->counter++;
        }
    }
}

#define CHUNK 1024
/* Fills of at least this many values split their chunks over the OpenMP threads. */
#define PARALLEL_MIN 65536

/*
 * The fills below convert each chunk of CHUNK values from its own words of
 * the stream. A chunk's first word follows from its index, so the chunks can
 * run on any thread in any order and the values do not depend on the thread
 * count. The generator then advances past every word used.
 */

void mrt_rng_fill_uniform(mrt_rng *rng, float *out, int64_t n, float lo, float hi)
{
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;

#pragma omp parallel for if (n >= PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        uint32_t words[CHUNK];
        const int64_t base = c * CHUNK, m = n - base < CHUNK ? n - base : CHUNK;
        mrt_rng at = {rng->seed, rng->counter + (uint64_t)base};
        fill_words(&at, words, m);
        for (int64_t i = 0; i < m; i++)
            out[base + i] = lo + (hi - lo) * (float)u32_to_unit(words[i]);
    }
    rng->counter += (uint64_t)n;
}

/* Box-Muller on two words per value; u1 is kept away from zero. */
void mrt_rng_fill_normal(mrt_rng *rng, float *out, int64_t n, float mean, float std)
{
    const int64_t per = CHUNK / 2, chunks = (n + per - 1) / per;

#pragma omp parallel for if (n >= PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        uint32_t words[CHUNK];
        const int64_t base = c * per, m = n - base < per ? n - base : per;
        mrt_rng at = {rng->seed, rng->counter + 2 * (uint64_t)base};
        fill_words(&at, words, 2 * m);
        for (int64_t i = 0; i < m; i++) {
            double u1 = ((double)(words[2 * i] >> 8) + 0.5) * (1.0 / 16777216.0);
            double u2 = u32_to_unit(words[2 * i + 1]);
            double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
            out[base + i] = (float)(mean + std * z);
        }
    }
    rng->counter += 2 * (uint64_t)n;
}

/*
 * A value is 1 when the word's top 24 bits, read as a fraction of 2^24, are
 * below p. p*2^24 is exact in double, so comparing the integer with it is the
 * same test.
 */
void mrt_rng_fill_bernoulli(mrt_rng *rng, float *out, int64_t n, float p)
{
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
    const double threshold = (double)p * 16777216.0;

#pragma omp parallel for if (n >= PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        uint32_t words[CHUNK];
        const int64_t base = c * CHUNK, m = n - base < CHUNK ? n - base : CHUNK;
        mrt_rng at = {rng->seed, rng->counter + (uint64_t)base};
        fill_words(&at, words, m);
        for (int64_t i = 0; i < m; i++)
            out[base + i] = (double)(words[i] >> 8) < threshold ? 1.0f : 0.0f;
    }
    rng->counter += (uint64_t)n;
}

/* Uniform integer in [0, range) without modulo bias (rejection sampling). */
static uint64_t uniform_below(mrt_rng *rng, uint64_t range)
{
    uint64_t limit = UINT32_MAX - (UINT32_MAX % range);

    for (;;) {
        uint64_t u = mrt_rng_u32(rng);
        if (u < limit)
            return u % range;
    }
}

void mrt_rng_permutation(mrt_rng *rng, int64_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)uniform_below(rng, (uint64_t)i + 1);
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}
