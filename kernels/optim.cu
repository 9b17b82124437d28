/*
 * optim.cu: the fused optimizer updates over flat parameter ranges: SGD
 * with momentum, dampening, Nesterov, weight decay and Langevin noise,
 * Adam/AdamW, averaging of brains, and the random-subgroup (masked) SGD.
 *
 * The arithmetic per element lives in optim.cuh. The Langevin noise comes
 * from philox.cuh: element i uses stream words 2i and 2i + 1 counted from
 * the generator's counter, which is how the CPU backend's
 * mrt_rng_fill_normal hands them out.
 */
#include "common.cuh"
#include "optim.cuh"
#include "philox.cuh"

/* Source pointers of one average launch, passed by value as a kernel argument. */
typedef struct average_sources {
    const float *ptr[MRT_CUDA_AVERAGE_MAX];
} average_sources;

/* ---- kernels ------------------------------------------------------------ */

__global__ void sgd_update_kernel(float *theta, const float *grad, float *buffer, int64_t n,
                                  mrt_sgd_params p, uint64_t seed, uint64_t counter)
{
    const int noisy = p.update_buffer && p.noise_std > 0.0f;

    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride()) {
        if (p.mask != NULL && (p.mask[i] != 0.0f) != (p.mask_on != 0))
            continue;
        /* mrt_rng_fill_normal(rng, ., n, 0, 1) stores (float)(0 + 1*z), which is (float)z. */
        const float z = noisy ? (float)mrt_philox_normal(seed, counter + 2 * (uint64_t)i) : 0.0f;
        mrt_sgd_element(&theta[i], p.update_buffer ? &grad[i] : NULL,
                        buffer != NULL ? &buffer[i] : NULL,
                        p.direction != NULL ? &p.direction[i] : NULL,
                        p.counts != NULL ? &p.counts[i] : NULL, p, z);
    }
}

__global__ void adam_update_kernel(float *theta, const float *grad, float *m, float *v,
                                   int64_t n, mrt_adam_params p, mrt_cuda_adam_factors f)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride()) {
        if (p.mask != NULL && (p.mask[i] != 0.0f) != (p.mask_on != 0))
            continue;
        float step_size = f.step_size, bias2_sqrt = f.bias2_sqrt;
        if (p.counts != NULL && !mrt_adam_count(&p.counts[i], p, &step_size, &bias2_sqrt))
            continue;
        mrt_adam_element(&theta[i], p.update_moments ? &grad[i] : NULL, &m[i], &v[i], p,
                         step_size, bias2_sqrt, f.decay);
    }
}

/* dst may be one of the sources: each element is read from all before it is written. */
__global__ void average_kernel(float *dst, average_sources srcs, int count, int64_t n)
{
    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride())
        dst[i] = mrt_average_element(srcs.ptr, count, i);
}

/* ---- launchers ---------------------------------------------------------- */

int mrt_cuda_sgd_update(cudaStream_t stream, float *theta, const float *grad, float *buffer,
                        int64_t n, const mrt_sgd_params *p, uint64_t seed, uint64_t counter)
{
    const char *launcher = "mrt_cuda_sgd_update";

    MRT_LAUNCHER_ASSERT(n >= 0, launcher, "negative size", n);
    MRT_LAUNCHER_ASSERT(!p->update_buffer || grad != NULL, launcher,
                        "missing gradient with update_buffer", p->update_buffer);
    MRT_LAUNCHER_ASSERT(p->update_buffer || buffer != NULL, launcher,
                        "missing buffer without update_buffer", p->update_buffer);
    MRT_LAUNCHER_ASSERT(p->update_buffer || !p->nesterov || p->direction != NULL, launcher,
                        "missing direction for a nesterov drift step", p->update_buffer);
    MRT_LAUNCHER_ASSERT(!p->update_buffer || p->momentum == 0.0f || buffer != NULL, launcher,
                        "missing buffer with momentum", p->update_buffer);
    if (n == 0)
        return MRT_OK;
    sgd_update_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        theta, grad, buffer, n, *p, seed, counter);
    return MRT_LAUNCH_CHECK("sgd_update_kernel");
}

int mrt_cuda_adam_update(cudaStream_t stream, float *theta, const float *grad, float *m, float *v,
                         int64_t n, const mrt_adam_params *p, const mrt_cuda_adam_factors *f)
{
    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_adam_update", "negative size", n);
    MRT_LAUNCHER_ASSERT(!p->update_moments || grad != NULL, "mrt_cuda_adam_update",
                        "missing gradient with update_moments", p->update_moments);
    if (n == 0)
        return MRT_OK;
    adam_update_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(theta, grad, m, v,
                                                                            n, *p, *f);
    return MRT_LAUNCH_CHECK("adam_update_kernel");
}

int mrt_cuda_average(cudaStream_t stream, float *dst, const float *const *srcs, int count,
                     int64_t n)
{
    average_sources sources;

    MRT_LAUNCHER_ASSERT(n >= 0, "mrt_cuda_average", "negative size", n);
    MRT_LAUNCHER_ASSERT(count >= 1 && count <= MRT_CUDA_AVERAGE_MAX, "mrt_cuda_average",
                        "source count outside 1..MRT_CUDA_AVERAGE_MAX", count);
    if (n == 0)
        return MRT_OK;
    for (int k = 0; k < MRT_CUDA_AVERAGE_MAX; k++)
        sources.ptr[k] = k < count ? srcs[k] : NULL;
    average_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(dst, sources, count, n);
    return MRT_LAUNCH_CHECK("average_kernel");
}
