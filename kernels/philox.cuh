/*
 * philox.cuh: the engine's Philox-4x32-10 stream on the device, word for
 * word the stream of engine/rng.c.
 *
 * Word i of the stream (seed, counter) is lane i%4 of the block that
 * Philox-4x32-10 encrypts from the 64-bit block number i/4 under the key
 * (seed low, seed high). The block number fills counter words 0 (low half)
 * and 1 (high half), and words 2 and 3 are zero. A normal takes two
 * consecutive words through
 * Box-Muller exactly as mrt_rng_fill_normal does, in double precision, so
 * CPU and GPU draw the same numbers up to the last-bit differences of the
 * two libraries' log and cos.
 */
#ifndef MRT_KERNELS_PHILOX_CUH
#define MRT_KERNELS_PHILOX_CUH

#include <math.h>
#include <stdint.h>

#include "portable.cuh"

#define MRT_PHILOX_M0 0xD2511F53u
#define MRT_PHILOX_M1 0xCD9E8D57u
#define MRT_PHILOX_W0 0x9E3779B9u
#define MRT_PHILOX_W1 0xBB67AE85u

/* High 32 bits of a*b. */
MRT_HD uint32_t mrt_mulhi32(uint32_t a, uint32_t b)
{
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return (uint32_t)(((uint64_t)a * b) >> 32);
#endif
}

/* Encrypts block number `block` under `seed` into out[0..4). */
MRT_HD void mrt_philox_block(uint64_t seed, uint64_t block, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);

    for (int round = 0; round < 10; round++) {
        const uint32_t hi0 = mrt_mulhi32(MRT_PHILOX_M0, c0), lo0 = MRT_PHILOX_M0 * c0;
        const uint32_t hi1 = mrt_mulhi32(MRT_PHILOX_M1, c2), lo1 = MRT_PHILOX_M1 * c2;
        const uint32_t n0 = hi1 ^ c1 ^ k0;
        const uint32_t n2 = hi0 ^ c3 ^ k1;
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        k0 += MRT_PHILOX_W0;
        k1 += MRT_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Word `index` of the stream and the word after it. */
MRT_HD void mrt_philox_word_pair(uint64_t seed, uint64_t index, uint32_t *a, uint32_t *b)
{
    uint32_t block[4];
    const unsigned lane = (unsigned)(index & 3);

    mrt_philox_block(seed, index >> 2, block);
    /* A switch instead of block[lane]: a run-time index would put block in local memory. */
    switch (lane) {
    case 0:
        *a = block[0];
        *b = block[1];
        break;
    case 1:
        *a = block[1];
        *b = block[2];
        break;
    case 2:
        *a = block[2];
        *b = block[3];
        break;
    default:
        *a = block[3];
        mrt_philox_block(seed, (index >> 2) + 1, block);
        *b = block[0];
        break;
    }
}

/*
 * The standard normal made from words `index` and `index + 1`: Box-Muller
 * with u1 = (top 24 bits of the first word + 0.5) / 2^24, kept away from 0,
 * and u2 = top 24 bits of the second word / 2^24.
 */
MRT_HD double mrt_philox_normal(uint64_t seed, uint64_t index)
{
    uint32_t a, b;

    mrt_philox_word_pair(seed, index, &a, &b);
    const double u1 = ((double)(a >> 8) + 0.5) * (1.0 / 16777216.0);
    const double u2 = (double)(b >> 8) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
