/*
 * cpu_backend.c: the CPU backend's table, memory, scratch arenas, thread
 * count and elementwise ops.
 *
 * Heavy loops use OpenMP; BLAS is OpenBLAS. Both get the same thread count
 * from mrt_threads_set so that they do not oversubscribe the cores.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "cpu.h"

typedef struct cpu_impl {
    float *scratch[MRT_CPU_SCRATCH_SLOTS];
    int64_t scratch_count[MRT_CPU_SCRATCH_SLOTS];
} cpu_impl;

static int threads_current;

int mrt_threads_set(int n)
{
    if (n < 0)
        return mrt_fail(MRT_EINVAL, "mrt_threads_set: %d threads (expected 0 for all cores, or more)",
                        n);
    if (n == 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    threads_current = n;
    return MRT_OK;
}

int mrt_threads_get(void)
{
    return threads_current > 0 ? threads_current : omp_get_max_threads();
}

static void *cpu_alloc(int64_t nbytes)
{
    size_t size = ((size_t)nbytes + 63) & ~(size_t)63;
    return aligned_alloc(64, size);
}

static void cpu_free(void *ptr)
{
    free(ptr);
}

static int cpu_memcpy(int dst_device, void *dst, int src_device, const void *src, int64_t nbytes)
{
    (void)dst_device;
    (void)src_device;
    memmove(dst, src, (size_t)nbytes);
    return MRT_OK;
}

static int cpu_ctx_init(mrt_ctx *ctx)
{
    ctx->impl = calloc(1, sizeof(cpu_impl));
    if (ctx->impl == NULL)
        return mrt_fail(MRT_ENOMEM, "mrt_ctx_new: out of memory");
    return MRT_OK;
}

static void cpu_ctx_free(mrt_ctx *ctx)
{
    cpu_impl *impl = ctx->impl;

    if (impl == NULL)
        return;
    for (int i = 0; i < MRT_CPU_SCRATCH_SLOTS; i++)
        free(impl->scratch[i]);
    free(impl);
    ctx->impl = NULL;
}

float *mrt_cpu_scratch(mrt_ctx *ctx, int slot, int64_t count)
{
    cpu_impl *impl = ctx->impl;

    if (slot < 0 || slot >= MRT_CPU_SCRATCH_SLOTS) {
        mrt_fail(MRT_EINVAL, "mrt_cpu_scratch: slot %d out of range", slot);
        return NULL;
    }
    if (count > impl->scratch_count[slot]) {
        free(impl->scratch[slot]);
        impl->scratch[slot] = cpu_alloc(count * (int64_t)sizeof(float));
        impl->scratch_count[slot] = impl->scratch[slot] != NULL ? count : 0;
        if (impl->scratch[slot] == NULL) {
            mrt_fail(MRT_ENOMEM, "out of memory for %lld floats of scratch", (long long)count);
            return NULL;
        }
    }
    return impl->scratch[slot];
}

/* Loops shorter than this run on one thread: forking costs more than it saves. */
#define PARALLEL_MIN 32768

int mrt_cpu_fill(mrt_ctx *ctx, mrt_tensor *t, float value)
{
    float *p = t->data;
    int64_t n = t->numel;

    (void)ctx;
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        p[i] = value;
    return MRT_OK;
}

int mrt_cpu_axpby(mrt_ctx *ctx, float alpha, const mrt_tensor *x, float beta, mrt_tensor *y)
{
    const float *xp = x->data;
    float *yp = y->data;
    int64_t n = x->numel;

    (void)ctx;
    if (beta == 0.0f) {
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            yp[i] = alpha * xp[i];
    } else {
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            yp[i] = alpha * xp[i] + beta * yp[i];
    }
    return MRT_OK;
}

int mrt_cpu_add(mrt_ctx *ctx, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *y)
{
    const float *ap = a->data, *bp = b->data;
    float *yp = y->data;
    int64_t n = a->numel;

    (void)ctx;
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        yp[i] = ap[i] + bp[i];
    return MRT_OK;
}

int mrt_cpu_mul(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *mask, mrt_tensor *y)
{
    const float *xp = x->data, *mp = mask->data;
    float *yp = y->data;
    int64_t n = x->numel;

    (void)ctx;
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        yp[i] = xp[i] * mp[i];
    return MRT_OK;
}

int mrt_cpu_sum(mrt_ctx *ctx, const mrt_tensor *x, double *sum)
{
    const float *p = x->data;
    double s = 0.0;

    (void)ctx;
    for (int64_t i = 0; i < x->numel; i++)
        s += p[i];
    *sum = s;
    return MRT_OK;
}

int mrt_cpu_sumsq(mrt_ctx *ctx, const mrt_tensor *x, double *sumsq)
{
    const float *p = x->data;
    double s = 0.0;

    (void)ctx;
    for (int64_t i = 0; i < x->numel; i++)
        s += (double)p[i] * p[i];
    *sumsq = s;
    return MRT_OK;
}

int mrt_cpu_nonfinite(mrt_ctx *ctx, const mrt_tensor *x, int *bad)
{
    const float *p = x->data;

    (void)ctx;
    *bad = 0;
    for (int64_t i = 0; i < x->numel; i++) {
        if (!isfinite(p[i])) {
            *bad = 1;
            break;
        }
    }
    return MRT_OK;
}

static const mrt_backend cpu_backend = {
    .name = "cpu",
    .device = MRT_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .ctx_init = cpu_ctx_init,
    .ctx_free = cpu_ctx_free,
    .memcpy = cpu_memcpy,
    .fill = mrt_cpu_fill,
    .axpby = mrt_cpu_axpby,
    .add = mrt_cpu_add,
    .mul = mrt_cpu_mul,
    .sum = mrt_cpu_sum,
    .sumsq = mrt_cpu_sumsq,
    .nonfinite = mrt_cpu_nonfinite,
    /* CPU_BACKEND_OPS: layer and optimizer entries are added below this line. */
    .sgd_update = mrt_cpu_sgd_update,
    .adam_update = mrt_cpu_adam_update,
    .average = mrt_cpu_average,
    .mask_mul = mrt_cpu_mask_mul,
    .masked_sgd = mrt_cpu_masked_sgd,
    .linear_forward = mrt_cpu_linear_forward,
    .linear_backward = mrt_cpu_linear_backward,
    .conv2d_forward = mrt_cpu_conv2d_forward,
    .conv2d_backward = mrt_cpu_conv2d_backward,
    .batchnorm_forward = mrt_cpu_batchnorm_forward,
    .batchnorm_backward = mrt_cpu_batchnorm_backward,
    .relu_forward = mrt_cpu_relu_forward,
    .relu_backward = mrt_cpu_relu_backward,
    .maxpool2d_forward = mrt_cpu_maxpool2d_forward,
    .maxpool2d_backward = mrt_cpu_maxpool2d_backward,
    .avgpool2d_forward = mrt_cpu_avgpool2d_forward,
    .avgpool2d_backward = mrt_cpu_avgpool2d_backward,
    .global_avgpool_forward = mrt_cpu_global_avgpool_forward,
    .global_avgpool_backward = mrt_cpu_global_avgpool_backward,
    .xent_forward = mrt_cpu_xent_forward,
    .xent_backward = mrt_cpu_xent_backward,
    .resize_bilinear = mrt_cpu_resize_bilinear,
    .normalize = mrt_cpu_normalize,
    .crop_flip = mrt_cpu_crop_flip,
};

const mrt_backend *mrt_cpu_backend(void)
{
    return &cpu_backend;
}
