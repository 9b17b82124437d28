/*
 * reduce.cu: sum and sum of squares in double, and the non-finite test.
 *
 * The sums take two passes without atomics: blocks write partial sums, one
 * block adds them. The number of blocks depends on n only, so a sum is
 * bit-identical from run to run and from GPU to GPU.
 */
#include "common.cuh"

/* ---- kernels ------------------------------------------------------------ */

__global__ void sum_partials_kernel(const float *x, int64_t n, int squares, double *partials)
{
    __shared__ double shared[MRT_BLOCK];
    double sum = 0.0;

    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride()) {
        double v = (double)x[i];
        sum += squares ? v * v : v;
    }
    sum = mrt_block_sum(sum, shared);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = sum;
}

/* One block adds `count` partial sums. */
__global__ void sum_final_kernel(const double *partials, int count, double *out)
{
    __shared__ double shared[MRT_BLOCK];
    double sum = 0.0;

    for (int i = threadIdx.x; i < count; i += blockDim.x)
        sum += partials[i];
    sum = mrt_block_sum(sum, shared);
    if (threadIdx.x == 0)
        *out = sum;
}

/*
 * Sets *flag to 1 on a NaN or infinity. Every writer stores the same value,
 * so the result does not depend on which thread writes first.
 */
__global__ void nonfinite_kernel(const float *x, int64_t n, int32_t *flag)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride()) {
        if (!isfinite(x[i])) {
            *flag = 1;
            return;
        }
    }
}

/* ---- launchers ---------------------------------------------------------- */

int mrt_cuda_sum(cudaStream_t stream, const float *x, int64_t n, int squares, double *partials,
                 double *out)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_sum", "negative size", n);
    int64_t blocks = mrt_ceil_div(n, MRT_BLOCK);
    if (blocks > MRT_CUDA_REDUCE_BLOCKS)
        blocks = MRT_CUDA_REDUCE_BLOCKS;
    if (blocks < 1)
        blocks = 1;
    sum_partials_kernel<<<(unsigned)blocks, MRT_BLOCK, 0, stream>>>(x, n, squares, partials);
    int status = MRT_LAUNCH_CHECK("sum_partials_kernel");
    if (status != MRT_OK)
        return status;
    sum_final_kernel<<<1, MRT_BLOCK, 0, stream>>>(partials, (int)blocks, out);
    return MRT_LAUNCH_CHECK("sum_final_kernel");
}

int mrt_cuda_nonfinite(cudaStream_t stream, const float *x, int64_t n, int32_t *flag)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_nonfinite", "negative size", n);
    if (n == 0)
        return MRT_OK;
    nonfinite_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(x, n, flag);
    return MRT_LAUNCH_CHECK("nonfinite_kernel");
}
