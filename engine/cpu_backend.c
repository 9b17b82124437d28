/*
 * cpu_backend.c: the CPU backend's table, memory, scratch arenas, thread
 * count, matrix product and elementwise ops.
 *
 * Every parallel loop, the engine's own and oneDNN's, runs on the one
 * OpenMP thread pool, so mrt_threads_set controls all of them and no two
 * pools compete for the cores. The matrix product is oneDNN's sgemm
 * (dnnl_sgemm, OpenMP-threaded) when the build has oneDNN, else OpenBLAS,
 * which then gets the same thread count.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#ifdef MRT_HAVE_DNNL
#include <dnnl.h>
#else
#include <cblas.h>
#endif

#include "cpu.h"

typedef struct cpu_impl {
    float *scratch[MRT_CPU_SCRATCH_SLOTS];
    int64_t scratch_count[MRT_CPU_SCRATCH_SLOTS];
    void *dnnl;                 /* dnnl_conv.c's engine, stream and plans */
} cpu_impl;

static int threads_current;

int mrt_threads_set(int n)
{
    /*
     * More threads than cores only adds switching: 4096 threads on 2 cores
     * made one forward pass of 8 images take 8 s, and libgomp crashes from
     * 65536 threads on. The floor of 64 keeps explicit counts usable on
     * machines with few cores.
     */
    int procs = omp_get_num_procs();
    int limit = 4 * procs > 64 ? 4 * procs : 64;

    if (n < 0 || n > limit)
        return mrt_fail(MRT_EINVAL, "mrt_threads_set: %d threads (expected 0 for all cores, or "
                        "1 to %d: 4 per core on %d cores, at least 64)", n, limit, procs);
    if (n == 0)
        n = procs;
    omp_set_num_threads(n);
#ifndef MRT_HAVE_DNNL
    openblas_set_num_threads(n);
#endif
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
    mrt_cpu_dnnl_free(impl->dnnl);
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

void **mrt_cpu_dnnl_slot(mrt_ctx *ctx)
{
    return &((cpu_impl *)ctx->impl)->dnnl;
}

/* Loops shorter than this run on one thread: forking costs more than it saves. */
#define PARALLEL_MIN 32768

int mrt_cpu_threads_for(int64_t n)
{
    return n > PARALLEL_MIN ? omp_get_max_threads() : 1;
}

int mrt_cpu_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                  int64_t ldc)
{
    if (m == 0 || n == 0)
        return MRT_OK;
    if (k == 0) {
        /* BLAS scales C by beta when the inner dimension is empty; do the same. */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return MRT_OK;
    }
#ifdef MRT_HAVE_DNNL
    dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a,
                                      lda, b, ldb, beta, c, ldc);
    if (status != dnnl_success)
        return mrt_fail(status == dnnl_out_of_memory ? MRT_ENOMEM : MRT_EINVAL,
                        "mrt_cpu_sgemm: dnnl_sgemm of [%lld,%lld] by [%lld,%lld] failed with "
                        "status %d", (long long)m, (long long)k, (long long)k, (long long)n,
                        (int)status);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda, b,
                (int)ldb, beta, c, (int)ldc);
#endif
    return MRT_OK;
}

/* acc[j] += row[j] in double, for one row of a column sum. */
MRT_CPU_CLONES static void add_row(double *restrict acc, const float *restrict row, int64_t n)
{
#pragma omp simd
    for (int64_t j = 0; j < n; j++)
        acc[j] += row[j];
}

int mrt_cpu_column_sums(mrt_ctx *ctx, const float *x, int64_t rows, int64_t cols, float beta,
                        float *out)
{
    const int threads = mrt_cpu_threads_for(rows * cols);
    /* Per-thread partial sums, double, in float units of the scratch slot. */
    double *part = (double *)mrt_cpu_scratch(ctx, MRT_CPU_REDUCE_SLOT, 2 * threads * cols + 2);

    if (part == NULL)
        return MRT_ENOMEM;
    /* Zeroed here: the runtime may start fewer threads than asked for. */
    memset(part, 0, (size_t)(threads * cols) * sizeof(double));
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), count = omp_get_num_threads();
        double *acc = part + t * cols;
        for (int64_t i = rows * t / count; i < rows * (t + 1) / count; i++)
            add_row(acc, x + i * cols, cols);
    }
    for (int64_t j = 0; j < cols; j++) {
        double sum = 0.0;
        for (int t = 0; t < threads; t++)
            sum += part[t * cols + j];
        out[j] = beta == 0.0f ? (float)sum : (float)(beta * (double)out[j] + sum);
    }
    return MRT_OK;
}

void mrt_cpu_accumulate(float *y, const float *x, int64_t n, float beta)
{
#pragma omp parallel for simd if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = beta == 0.0f ? x[i] : beta * y[i] + x[i];
}

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
    .channels_last = 1,
    .to_channels_last = mrt_cpu_to_channels_last,
    .to_channels_first = mrt_cpu_to_channels_first,
    .batchnorm_act_forward = mrt_cpu_batchnorm_act_forward,
    .batchnorm_act_backward = mrt_cpu_batchnorm_act_backward,
};

const mrt_backend *mrt_cpu_backend(void)
{
    return &cpu_backend;
}
