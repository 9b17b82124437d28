/*
 * elementwise.cu: fill, axpby, add, mul, ReLU, the row fill that seeds a
 * linear layer's output with its bias, and the per-channel sum behind the
 * bias gradients.
 *
 * The Makefile compiles kernels with -fmad=false, so a*b + c rounds the
 * product and the sum separately, as the CPU backend's C code does: the
 * elementwise results then agree with the CPU bit for bit.
 */
#include "common.cuh"

/* ---- kernels ------------------------------------------------------------ */

__global__ void fill_kernel(float *y, int64_t n, float value)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        y[i] = value;
}

__global__ void axpby_kernel(float alpha, const float *x, float beta, float *y, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        y[i] = alpha * x[i] + beta * y[i];
}

/* y := alpha*x for beta = 0: this kernel reads no y, so NaN or garbage there cannot leak in. */
__global__ void scale_kernel(float alpha, const float *x, float *y, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        y[i] = alpha * x[i];
}

__global__ void add_kernel(const float *a, const float *b, float *y, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        y[i] = a[i] + b[i];
}

__global__ void mul_kernel(const float *x, const float *mask, float *y, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        y[i] = x[i] * mask[i];
}

__global__ void relu_forward_kernel(const float *x, float *y, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride()) {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

__global__ void relu_backward_kernel(const float *dy, const float *y, float *dx, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void fill_rows_kernel(const float *row, float *y, int64_t rows, int64_t cols)
{
    const int64_t n = rows * cols;

    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        y[i] = row[i % cols];
}

/*
 * One block per channel c: the threads stride over the outer*inner elements
 * of x[:,c,:] in a fixed order, summing in double as the CPU backend does,
 * and the block tree adds the per-thread sums.
 */
__global__ void channel_sum_kernel(const float *x, int64_t outer, int64_t channels,
                                   int64_t inner, float beta, float *out)
{
    __shared__ double shared[MRT_BLOCK];
    const int64_t c = blockIdx.x;
    const int64_t count = outer * inner;
    double sum = 0.0;

    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
        int64_t a = k / inner, b = k - a * inner;
        sum += (double)x[(a * channels + c) * inner + b];
    }
    sum = mrt_block_sum(sum, shared);
    if (threadIdx.x == 0)
        out[c] = beta == 0.0f ? (float)sum : (float)((double)beta * (double)out[c] + sum);
}

/* ---- launchers ---------------------------------------------------------- */

int mrt_cuda_fill(cudaStream_t stream, float *y, int64_t n, float value)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_fill", "negative size", n);
    if (n == 0)
        return MRT_OK;
    fill_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(y, n, value);
    return MRT_LAUNCH_CHECK("fill_kernel");
}

int mrt_cuda_axpby(cudaStream_t stream, float alpha, const float *x, float beta, float *y,
                   int64_t n)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_axpby", "negative size", n);
    if (n == 0)
        return MRT_OK;
    if (beta == 0.0f) {
        scale_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(alpha, x, y, n);
        return MRT_LAUNCH_CHECK("scale_kernel");
    }
    axpby_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(alpha, x, beta, y, n);
    return MRT_LAUNCH_CHECK("axpby_kernel");
}

int mrt_cuda_add(cudaStream_t stream, const float *a, const float *b, float *y, int64_t n)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_add", "negative size", n);
    if (n == 0)
        return MRT_OK;
    add_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(a, b, y, n);
    return MRT_LAUNCH_CHECK("add_kernel");
}

int mrt_cuda_mul(cudaStream_t stream, const float *x, const float *mask, float *y, int64_t n)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_mul", "negative size", n);
    if (n == 0)
        return MRT_OK;
    mul_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(x, mask, y, n);
    return MRT_LAUNCH_CHECK("mul_kernel");
}

int mrt_cuda_relu_forward(cudaStream_t stream, const float *x, float *y, int64_t n)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_relu_forward", "negative size", n);
    if (n == 0)
        return MRT_OK;
    relu_forward_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(x, y, n);
    return MRT_LAUNCH_CHECK("relu_forward_kernel");
}

int mrt_cuda_relu_backward(cudaStream_t stream, const float *dy, const float *y, float *dx,
                           int64_t n)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_relu_backward", "negative size", n);
    if (n == 0)
        return MRT_OK;
    relu_backward_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(dy, y, dx, n);
    return MRT_LAUNCH_CHECK("relu_backward_kernel");
}

int mrt_cuda_fill_rows(cudaStream_t stream, const float *row, float *y, int64_t rows,
                       int64_t cols)
{
    MRT_LAUNCHER_ASSERT(rows >= 0, "mrt_cuda_fill_rows", "negative row count", rows);
    MRT_LAUNCHER_ASSERT(cols >= 0, "mrt_cuda_fill_rows", "negative column count", cols);
    if (rows == 0 || cols == 0)
        return MRT_OK;
    const int64_t n = rows * cols;
    fill_rows_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(row, y, rows, cols);
    return MRT_LAUNCH_CHECK("fill_rows_kernel");
}

int mrt_cuda_channel_sum(cudaStream_t stream, const float *x, int64_t outer, int64_t channels,
                         int64_t inner, float beta, float *out)
{
    MRT_LAUNCHER_ASSERT(outer >= 0, "mrt_cuda_channel_sum", "negative outer size", outer);
    MRT_LAUNCHER_ASSERT(inner >= 0, "mrt_cuda_channel_sum", "negative inner size", inner);
    MRT_LAUNCHER_ASSERT(channels >= 0 && channels <= INT32_MAX, "mrt_cuda_channel_sum",
                        "channel count outside 0..2^31-1 (one block per channel)", channels);
    if (channels == 0)
        return MRT_OK;
    channel_sum_kernel<<<(unsigned)channels, MRT_BLOCK, 0, stream>>>(x, outer, channels, inner,
                                                                     beta, out);
    return MRT_LAUNCH_CHECK("channel_sum_kernel");
}
