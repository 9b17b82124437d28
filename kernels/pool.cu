/*
 * pool.cu: 2-D max and average pooling and global average pooling, forward
 * and backward, on NCHW tensors. The per-element rules live in pool.cuh.
 * The backward passes gather instead of scatter, so they need no atomics
 * and give the same result on every run.
 */
#include "common.cuh"
#include "pool.cuh"

typedef mrt_cuda_pool_shape pool_shape;

/* ---- kernels ------------------------------------------------------------ */

__global__ void maxpool2d_forward_kernel(pool_shape s, const float *x, float *y)
{
    const int64_t total = s.n * s.c * s.oh * s.ow;

    for (int64_t i = mrt_thread_index(); i < total; i += mrt_grid_stride())
        y[i] = mrt_maxpool_forward_at(s, x, i);
}

__global__ void maxpool2d_backward_kernel(pool_shape s, const float *dy, const float *x,
                                          const float *y, float *dx)
{
    const int64_t total = s.n * s.c * s.h * s.w;

    for (int64_t i = mrt_thread_index(); i < total; i += mrt_grid_stride())
        dx[i] = mrt_maxpool_backward_at(s, dy, x, y, i);
}

__global__ void avgpool2d_forward_kernel(pool_shape s, const float *x, float *y)
{
    const int64_t total = s.n * s.c * s.oh * s.ow;

    for (int64_t i = mrt_thread_index(); i < total; i += mrt_grid_stride())
        y[i] = mrt_avgpool_forward_at(s, x, i);
}

__global__ void avgpool2d_backward_kernel(pool_shape s, const float *dy, float *dx)
{
    const int64_t total = s.n * s.c * s.h * s.w;

    for (int64_t i = mrt_thread_index(); i < total; i += mrt_grid_stride())
        dx[i] = mrt_avgpool_backward_at(s, dy, i);
}

/* One warp per plane: lanes read the plane in coalesced strides, shuffles add the lanes. */
__global__ void global_avgpool_forward_kernel(const float *x, int64_t planes, int64_t size,
                                              float *y)
{
    const int64_t warps = mrt_grid_stride() / 32;
    const int lane = threadIdx.x & 31;

    for (int64_t plane = mrt_thread_index() / 32; plane < planes; plane += warps) {
        const float *xp = x + plane * size;
        double sum = 0.0;
        for (int64_t k = lane; k < size; k += 32)
            sum += (double)xp[k];
        for (int offset = 16; offset > 0; offset >>= 1)
            sum += __shfl_down_sync(0xffffffffu, sum, offset);
        if (lane == 0)
            y[plane] = (float)(sum / (double)size);
    }
}

__global__ void global_avgpool_backward_kernel(const float *dy, int64_t planes, int64_t size,
                                               float *dx)
{
    const int64_t total = planes * size;

    for (int64_t i = mrt_thread_index(); i < total; i += mrt_grid_stride())
        dx[i] = (float)((double)dy[i / size] / (double)size);
}

/* ---- launchers ---------------------------------------------------------- */

/* Checks a pooling geometry; returns MRT_OK or the launcher's failure. */
static int check_shape(const char *launcher, const pool_shape *s)
{
    MRT_LAUNCHER_ASSERT(s->n >= 0 && s->c >= 0, launcher, "negative batch or channel count",
                        s->n < 0 ? s->n : s->c);
    MRT_LAUNCHER_ASSERT(s->h >= 1 && s->w >= 1, launcher, "input plane smaller than 1x1",
                        s->h < 1 ? s->h : s->w);
    MRT_LAUNCHER_ASSERT(s->oh >= 1 && s->ow >= 1, launcher, "output plane smaller than 1x1",
                        s->oh < 1 ? s->oh : s->ow);
    MRT_LAUNCHER_ASSERT(s->kernel_h >= 1 && s->kernel_w >= 1, launcher, "kernel below 1",
                        s->kernel_h < 1 ? s->kernel_h : s->kernel_w);
    MRT_LAUNCHER_ASSERT(s->stride_h >= 1 && s->stride_w >= 1, launcher, "stride below 1",
                        s->stride_h < 1 ? s->stride_h : s->stride_w);
    MRT_LAUNCHER_ASSERT(s->pad_h >= 0 && s->pad_w >= 0, launcher, "negative padding",
                        s->pad_h < 0 ? s->pad_h : s->pad_w);
    return MRT_OK;
}

int mrt_cuda_maxpool2d_forward(cudaStream_t stream, const mrt_cuda_pool_shape *s, const float *x,
                               float *y)
{
    int status = check_shape("mrt_cuda_maxpool2d_forward", s);
    const int64_t total = s->n * s->c * s->oh * s->ow;

    if (status != MRT_OK || total == 0)
        return status;
    maxpool2d_forward_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(*s, x, y);
    return MRT_LAUNCH_CHECK("maxpool2d_forward_kernel");
}

int mrt_cuda_maxpool2d_backward(cudaStream_t stream, const mrt_cuda_pool_shape *s,
                                const float *dy, const float *x, const float *y, float *dx)
{
    int status = check_shape("mrt_cuda_maxpool2d_backward", s);
    const int64_t total = s->n * s->c * s->h * s->w;

    if (status != MRT_OK || total == 0)
        return status;
    maxpool2d_backward_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        *s, dy, x, y, dx);
    return MRT_LAUNCH_CHECK("maxpool2d_backward_kernel");
}

int mrt_cuda_avgpool2d_forward(cudaStream_t stream, const mrt_cuda_pool_shape *s, const float *x,
                               float *y)
{
    int status = check_shape("mrt_cuda_avgpool2d_forward", s);
    const int64_t total = s->n * s->c * s->oh * s->ow;

    if (status != MRT_OK || total == 0)
        return status;
    avgpool2d_forward_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(*s, x, y);
    return MRT_LAUNCH_CHECK("avgpool2d_forward_kernel");
}

int mrt_cuda_avgpool2d_backward(cudaStream_t stream, const mrt_cuda_pool_shape *s,
                                const float *dy, float *dx)
{
    int status = check_shape("mrt_cuda_avgpool2d_backward", s);
    const int64_t total = s->n * s->c * s->h * s->w;

    if (status != MRT_OK || total == 0)
        return status;
    avgpool2d_backward_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(*s, dy,
                                                                                        dx);
    return MRT_LAUNCH_CHECK("avgpool2d_backward_kernel");
}

int mrt_cuda_global_avgpool_forward(cudaStream_t stream, const float *x, int64_t planes,
                                    int64_t plane_size, float *y)
{
    MRT_LAUNCHER_ASSERT(planes >= 0, "mrt_cuda_global_avgpool_forward", "negative plane count",
                        planes);
    MRT_LAUNCHER_ASSERT(plane_size >= 1, "mrt_cuda_global_avgpool_forward",
                        "plane size below 1", plane_size);
    if (planes == 0)
        return MRT_OK;
    /* 32 threads (one warp) per plane */
    global_avgpool_forward_kernel<<<mrt_grid_for(planes * 32, MRT_BLOCK), MRT_BLOCK, 0,
                                    stream>>>(x, planes, plane_size, y);
    return MRT_LAUNCH_CHECK("global_avgpool_forward_kernel");
}

int mrt_cuda_global_avgpool_backward(cudaStream_t stream, const float *dy, int64_t planes,
                                     int64_t plane_size, float *dx)
{
    MRT_LAUNCHER_ASSERT(planes >= 0, "mrt_cuda_global_avgpool_backward", "negative plane count",
                        planes);
    MRT_LAUNCHER_ASSERT(plane_size >= 1, "mrt_cuda_global_avgpool_backward",
                        "plane size below 1", plane_size);
    const int64_t total = planes * plane_size;
    if (total == 0)
        return MRT_OK;
    global_avgpool_backward_kernel<<<mrt_grid_for(total, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        dy, planes, plane_size, dx);
    return MRT_LAUNCH_CHECK("global_avgpool_backward_kernel");
}
