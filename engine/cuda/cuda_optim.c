/*
 * cuda_optim.c: the backend table's optimizer entries (mrt_optim.h) on the
 * GPU: the host-side part of each update (generator counter, Adam's bias
 * corrections) around the kernels of kernels/optim.cu.
 */
#include "cuda_common.h"

static cudaStream_t stream_of(mrt_ctx *ctx)
{
    return ((mrt_cuda_impl *)ctx->impl)->stream;
}

/*
 * The Langevin noise of element i uses stream words counter + 2i and
 * counter + 2i + 1. The update therefore draws the normals that the CPU
 * backend's mrt_rng_fill_normal(rng, ., n, 0, 1) draws, and the counter
 * advances by the same 2n words.
 */
static int cuda_sgd_update(mrt_ctx *ctx, float *theta, const float *grad, float *buffer,
                           int64_t n, const mrt_sgd_params *p, mrt_rng *rng)
{
    const int noisy = p->update_buffer && p->noise_std > 0.0f;

    if (noisy && rng == NULL)
        return mrt_fail(MRT_EINVAL, "mrt_sgd_update: noise_std = %g needs a generator 'rng'",
                        (double)p->noise_std);
    MRT_TRY(mrt_cuda_sgd_update(stream_of(ctx), theta, grad, buffer, n, p,
                                noisy ? rng->seed : 0, noisy ? rng->counter : 0));
    if (noisy)
        rng->counter += 2 * (uint64_t)n;
    return MRT_OK;
}

static int cuda_adam_update(mrt_ctx *ctx, float *theta, const float *grad, float *m, float *v,
                            int64_t n, const mrt_adam_params *p)
{
    const mrt_cuda_adam_factors f = mrt_cuda_adam_factors_for(p);

    return mrt_cuda_adam_update(stream_of(ctx), theta, grad, m, v, n, p, &f);
}

static int cuda_average(mrt_ctx *ctx, float *dst, const float *const *srcs, int count, int64_t n)
{
    if (count < 1)
        return mrt_fail(MRT_EINVAL, "mrt_average: %d sources (expected 1 or more)", count);
    if (count > MRT_CUDA_AVERAGE_MAX)
        return mrt_fail(MRT_ENYI, "NYI: mrt_average of %d buffers on cuda (at most %d)", count,
                        MRT_CUDA_AVERAGE_MAX);
    return mrt_cuda_average(stream_of(ctx), dst, srcs, count, n);
}

static int cuda_mask_mul(mrt_ctx *ctx, float *y, const float *mask, int64_t n)
{
    return mrt_cuda_mul(stream_of(ctx), y, mask, y, n);
}

void mrt_cuda_register_optim_ops(mrt_backend *table)
{
    table->sgd_update = cuda_sgd_update;
    table->adam_update = cuda_adam_update;
    table->average = cuda_average;
    table->mask_mul = cuda_mask_mul;
}
