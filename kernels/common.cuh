/*
 * common.cuh: what every kernel file shares: grid sizing, the launch check
 * and fixed-order block reductions.
 *
 * Reductions use no atomics. Each thread accumulates a fixed set of
 * elements, then a shared-memory tree combines the threads in a fixed
 * pattern, so a result depends only on the input and the launch size.
 * Launch sizes depend only on the problem size, never on the device.
 */
#ifndef MRT_KERNELS_COMMON_CUH
#define MRT_KERNELS_COMMON_CUH

#include <stdint.h>

#include <cuda_runtime.h>

#include "../engine/cuda/cuda_kernels.h"
#include "../engine/include/mrt_core.h"

/* Threads per block of the elementwise kernels. */
#define MRT_BLOCK 256
/* Most blocks of a grid-stride loop: enough to fill any current GPU many times over. */
#define MRT_MAX_BLOCKS 65536

/* Checks the launch just queued; returns from the launcher on failure. */
#define MRT_LAUNCH_CHECK(kernel) mrt_cuda_check_launch(kernel, __FILE__, __LINE__)

/* Returns from a launcher with MRT_EINVAL when a size is outside what it can run. */
#define MRT_LAUNCHER_ASSERT(cond, launcher, problem, value)                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return mrt_cuda_fail_launcher(launcher, problem, (long long)(value));                 \
    } while (0)

static inline int64_t mrt_ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Blocks for a grid-stride loop over n elements: ceil(n/block), capped. */
static inline unsigned mrt_grid_for(int64_t n, int block)
{
    int64_t blocks = mrt_ceil_div(n, block);
    if (blocks > MRT_MAX_BLOCKS)
        blocks = MRT_MAX_BLOCKS;
    return (unsigned)(blocks > 0 ? blocks : 1);
}

/* Index of this thread in a 1-D grid, and the stride of a grid-stride loop. */
static __device__ __forceinline__ int64_t mrt_thread_index()
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

static __device__ __forceinline__ int64_t mrt_grid_stride()
{
    return (int64_t)gridDim.x * blockDim.x;
}

/*
 * Sums v over the block in a fixed tree order and returns the total to every
 * thread. blockDim.x must be a power of two of at most 1024 and `shared`
 * must hold blockDim.x values.
 */
template <typename T> __device__ T mrt_block_sum(T v, T *shared)
{
    const unsigned tid = threadIdx.x;

    shared[tid] = v;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half)
            shared[tid] = shared[tid] + shared[tid + half];
        __syncthreads();
    }
    T total = shared[0];
    __syncthreads();    /* the caller may reuse `shared` at once */
    return total;
}

/* Smallest power of two >= n, clamped to [32, limit] (limit a power of two). */
static inline int mrt_block_for(int64_t n, int limit)
{
    int block = 32;
    while (block < limit && block < n)
        block *= 2;
    return block;
}

#endif
