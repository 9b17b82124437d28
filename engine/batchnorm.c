/*
 * batchnorm.c: batch normalisation per channel of x[N,C] or x[N,C,H,W], as
 * PyTorch's BatchNorm1d and BatchNorm2d: argument checks and the CPU
 * implementation.
 *
 * The CPU path accumulates every statistic and every gradient sum in
 * double. Channels-last activations [N,H,W,C] arrive as x[N*H*W, C]. For
 * such 2-D input, OpenMP threads take blocks of rows and keep per-thread
 * partial sums per channel. The partial sums are added in thread order, so
 * results depend on the thread count only. For NCHW input, threads take
 * whole channels. The variance comes from one pass over x: the mean square
 * of x minus a per-channel shift (the channel's first value), minus the
 * squared mean of the same differences. The shift keeps the cancellation
 * small when the mean is large against the spread.
 */
#include <math.h>
#include <string.h>

#include <omp.h>

#include "cpu.h"

/* Loops over fewer elements than this run on one thread. */
#define BATCHNORM_PARALLEL_MIN 32768

/* Checks that an activation is 2-D [N,C] or 4-D [N,C,H,W]. */
static int check_activation(mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t)
{
    char ts[160];

    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, -1));
    if (t->ndim != 2 && t->ndim != 4)
        return mrt_fail(MRT_EINVAL, "%s: expected 2-D or 4-D '%s', got %d-D %s", fn, name,
                        (int)t->ndim, mrt_tensor_shape_str(t, ts, sizeof ts));
    return MRT_OK;
}

/* Checks a per-channel tensor [C]. */
static int check_channels(mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                          int64_t channels)
{
    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, -1));
    return mrt_check_shape(fn, name, t, 1, &channels);
}

/* Returns the number of values per channel: N, or N*H*W. */
static int64_t channel_count(const mrt_tensor *x)
{
    return x->ndim == 4 ? x->shape[0] * x->shape[2] * x->shape[3] : x->shape[0];
}

static int check_options(const char *fn, const mrt_tensor *x, int training, int update_running,
                         double momentum, double eps)
{
    char xs[160];

    if (!(eps >= 0.0) || isinf(eps))
        return mrt_fail(MRT_EINVAL, "%s: eps %g is invalid (expected a finite value >= 0)", fn,
                        eps);
    if (training && update_running && !(momentum >= 0.0 && momentum <= 1.0))
        return mrt_fail(MRT_EINVAL, "%s: momentum %g is invalid (expected 0 to 1)", fn,
                        momentum);
    if (training && channel_count(x) < 2)
        return mrt_fail(MRT_EINVAL, "%s: training needs more than one value per channel, got "
                        "'x' %s", fn, mrt_tensor_shape_str(x, xs, sizeof xs));
    return MRT_OK;
}

int mrt_batchnorm_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                          const mrt_tensor *beta_, mrt_tensor *running_mean,
                          mrt_tensor *running_var, mrt_tensor *save_mean,
                          mrt_tensor *save_invstd, mrt_tensor *y, int training,
                          int update_running, double momentum, double eps)
{
    static const char fn[] = "mrt_batchnorm_forward";

    MRT_TRY(check_activation(ctx, fn, "x", x));
    const int64_t c = x->shape[1];
    MRT_TRY(check_channels(ctx, fn, "gamma", gamma, c));
    MRT_TRY(check_channels(ctx, fn, "beta", beta_, c));
    MRT_TRY(check_channels(ctx, fn, "running_mean", running_mean, c));
    MRT_TRY(check_channels(ctx, fn, "running_var", running_var, c));
    /* Evaluation leaves save_* untouched, so it accepts NULL for them. */
    if (training || save_mean != NULL)
        MRT_TRY(check_channels(ctx, fn, "save_mean", save_mean, c));
    if (training || save_invstd != NULL)
        MRT_TRY(check_channels(ctx, fn, "save_invstd", save_invstd, c));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_shape(fn, "y", y, x->ndim, x->shape));
    MRT_TRY(check_options(fn, x, training, update_running, momentum, eps));
    return MRT_DISPATCH(ctx, batchnorm_forward, x, gamma, beta_, running_mean, running_var,
                        save_mean, save_invstd, y, training != 0, update_running != 0, momentum,
                        eps);
}

int mrt_batchnorm_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                           const mrt_tensor *gamma, const mrt_tensor *save_mean,
                           const mrt_tensor *save_invstd, mrt_tensor *dx, mrt_tensor *dgamma,
                           mrt_tensor *dbeta, float beta)
{
    static const char fn[] = "mrt_batchnorm_backward";

    MRT_TRY(check_activation(ctx, fn, "x", x));
    const int64_t c = x->shape[1];
    MRT_TRY(mrt_check_tensor(ctx, fn, "dy", dy, -1));
    MRT_TRY(mrt_check_shape(fn, "dy", dy, x->ndim, x->shape));
    MRT_TRY(check_channels(ctx, fn, "gamma", gamma, c));
    MRT_TRY(check_channels(ctx, fn, "save_mean", save_mean, c));
    MRT_TRY(check_channels(ctx, fn, "save_invstd", save_invstd, c));
    if (dx != NULL) {
        MRT_TRY(mrt_check_tensor(ctx, fn, "dx", dx, -1));
        MRT_TRY(mrt_check_shape(fn, "dx", dx, x->ndim, x->shape));
    }
    if (dgamma != NULL)
        MRT_TRY(check_channels(ctx, fn, "dgamma", dgamma, c));
    if (dbeta != NULL)
        MRT_TRY(check_channels(ctx, fn, "dbeta", dbeta, c));
    return MRT_DISPATCH(ctx, batchnorm_backward, dy, x, gamma, save_mean, save_invstd, dx,
                        dgamma, dbeta, beta);
}

/* Checks an optional tensor of x's shape. */
static int check_like_x(mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                        const mrt_tensor *x)
{
    if (t == NULL)
        return MRT_OK;
    MRT_TRY(mrt_check_tensor(ctx, fn, name, t, -1));
    return mrt_check_shape(fn, name, t, x->ndim, x->shape);
}

static int check_relu_flag(const char *fn, int relu)
{
    if (relu != 0 && relu != 1)
        return mrt_fail(MRT_EINVAL, "%s: relu is %d (expected 0 or 1)", fn, relu);
    return MRT_OK;
}

int mrt_batchnorm_act_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                              const mrt_tensor *beta_, mrt_tensor *running_mean,
                              mrt_tensor *running_var, mrt_tensor *save_mean,
                              mrt_tensor *save_invstd, const mrt_tensor *residual, mrt_tensor *y,
                              int training, int update_running, double momentum, double eps,
                              int relu)
{
    static const char fn[] = "mrt_batchnorm_act_forward";

    MRT_TRY(check_activation(ctx, fn, "x", x));
    const int64_t c = x->shape[1];
    MRT_TRY(check_channels(ctx, fn, "gamma", gamma, c));
    MRT_TRY(check_channels(ctx, fn, "beta", beta_, c));
    MRT_TRY(check_channels(ctx, fn, "running_mean", running_mean, c));
    MRT_TRY(check_channels(ctx, fn, "running_var", running_var, c));
    if (training || save_mean != NULL)
        MRT_TRY(check_channels(ctx, fn, "save_mean", save_mean, c));
    if (training || save_invstd != NULL)
        MRT_TRY(check_channels(ctx, fn, "save_invstd", save_invstd, c));
    MRT_TRY(check_like_x(ctx, fn, "residual", residual, x));
    MRT_TRY(mrt_check_tensor(ctx, fn, "y", y, -1));
    MRT_TRY(mrt_check_shape(fn, "y", y, x->ndim, x->shape));
    MRT_TRY(check_options(fn, x, training, update_running, momentum, eps));
    MRT_TRY(check_relu_flag(fn, relu));
    return MRT_DISPATCH(ctx, batchnorm_act_forward, x, gamma, beta_, running_mean, running_var,
                        save_mean, save_invstd, residual, y, training != 0, update_running != 0,
                        momentum, eps, relu);
}

int mrt_batchnorm_act_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                               const mrt_tensor *y, const mrt_tensor *gamma,
                               const mrt_tensor *save_mean, const mrt_tensor *save_invstd,
                               mrt_tensor *dx, mrt_tensor *dresidual, mrt_tensor *dgamma,
                               mrt_tensor *dbeta, float beta, int relu)
{
    static const char fn[] = "mrt_batchnorm_act_backward";

    MRT_TRY(check_activation(ctx, fn, "x", x));
    const int64_t c = x->shape[1];
    MRT_TRY(check_relu_flag(fn, relu));
    MRT_TRY(mrt_check_tensor(ctx, fn, "dy", dy, -1));
    MRT_TRY(mrt_check_shape(fn, "dy", dy, x->ndim, x->shape));
    if (relu && y == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing tensor 'y' (the forward output, needed when "
                        "relu is 1)", fn);
    MRT_TRY(check_like_x(ctx, fn, "y", y, x));
    MRT_TRY(check_channels(ctx, fn, "gamma", gamma, c));
    MRT_TRY(check_channels(ctx, fn, "save_mean", save_mean, c));
    MRT_TRY(check_channels(ctx, fn, "save_invstd", save_invstd, c));
    MRT_TRY(check_like_x(ctx, fn, "dx", dx, x));
    MRT_TRY(check_like_x(ctx, fn, "dresidual", dresidual, x));
    if (dgamma != NULL)
        MRT_TRY(check_channels(ctx, fn, "dgamma", dgamma, c));
    if (dbeta != NULL)
        MRT_TRY(check_channels(ctx, fn, "dbeta", dbeta, c));
    return MRT_DISPATCH(ctx, batchnorm_act_backward, dy, x, relu ? y : NULL, gamma, save_mean,
                        save_invstd, dx, dresidual, dgamma, dbeta, beta);
}

int mrt_batchnorm_act_supported(const mrt_ctx *ctx)
{
    return ctx != NULL && ctx->backend->batchnorm_act_forward != NULL &&
           ctx->backend->batchnorm_act_backward != NULL;
}

/* ---- CPU implementation ------------------------------------------------- */

/* An activation viewed as [N,C,S], with S = H*W or 1. */
typedef struct bn_shape {
    int64_t n, c, s;
} bn_shape;

static bn_shape shape_of(const mrt_tensor *x)
{
    bn_shape shape = {x->shape[0], x->shape[1], 1};

    if (x->ndim == 4)
        shape.s = x->shape[2] * x->shape[3];
    return shape;
}

/*
 * What a forward pass applies after the normalisation, and what the
 * matching backward pass needs: the sum with a residual, then ReLU.
 */
typedef struct bn_epilogue {
    const float *residual;  /* added after the affine transform, or NULL */
    int relu;               /* 1: y := max(y, 0) last */
} bn_epilogue;

/* Per-channel arrays of one call, carved out of MRT_CPU_REDUCE_SLOT. */
typedef struct bn_work {
    double *part;           /* [threads][2][C] per-thread partial sums (row layout) */
    double *sum1, *sum2;    /* [C] */
    float *mean, *scale, *shift, *proj, *mean_g;   /* [C] */
    int threads;
} bn_work;

static int work_of(mrt_ctx *ctx, const bn_shape *s, int64_t numel, bn_work *w)
{
    const int64_t c = s->c;

    w->threads = mrt_cpu_threads_for(numel);
    const int64_t doubles = 2 * w->threads * c + 2 * c;
    float *base = mrt_cpu_scratch(ctx, MRT_CPU_REDUCE_SLOT, 2 * doubles + 5 * c + 1);
    if (base == NULL)
        return MRT_ENOMEM;
    w->part = (double *)base;
    w->sum1 = w->part + 2 * w->threads * c;
    w->sum2 = w->sum1 + c;
    w->mean = base + 2 * doubles;
    w->scale = w->mean + c;
    w->shift = w->scale + c;
    w->proj = w->shift + c;
    w->mean_g = w->proj + c;
    return MRT_OK;
}

/* ---- kernels over one row of x[M,C] (all channels) or one plane of NCHW --- */

/* s1 += x - k, s2 += (x - k)^2 per channel, in double. */
MRT_CPU_CLONES static void stats_row(double *restrict s1, double *restrict s2,
                                     const float *restrict row, const float *restrict k,
                                     int64_t c)
{
#pragma omp simd
    for (int64_t j = 0; j < c; j++) {
        const double d = (double)row[j] - (double)k[j];
        s1[j] += d;
        s2[j] += d * d;
    }
}

/* Returns sum(x - k) in *s1 and sum((x - k)^2) in *s2 over a plane of n values. */
MRT_CPU_CLONES static void stats_plane(const float *restrict x, int64_t n, double k, double *s1,
                                       double *s2)
{
    double a = 0.0, b = 0.0;

#pragma omp simd reduction(+ : a, b)
    for (int64_t q = 0; q < n; q++) {
        const double d = (double)x[q] - k;
        a += d;
        b += d * d;
    }
    *s1 += a;
    *s2 += b;
}

/*
 * y := (x - mean)*scale + shift (+ residual), then max(y, 0) when relu; per
 * channel j of a row. y may be x. NaN passes ReLU, as in PyTorch.
 */
MRT_CPU_CLONES static void normalize_row(float *y, const float *x, const float *restrict mean,
                                         const float *restrict scale,
                                         const float *restrict shift,
                                         const float *restrict residual, int relu, int64_t c)
{
    if (residual != NULL) {
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            const float v = (x[j] - mean[j]) * scale[j] + shift[j] + residual[j];
            y[j] = relu && v < 0.0f ? 0.0f : v;
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            const float v = (x[j] - mean[j]) * scale[j] + shift[j];
            y[j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* The same over one plane of n values of a single channel. */
MRT_CPU_CLONES static void normalize_plane(float *y, const float *x, int64_t n, float mean,
                                           float scale, float shift,
                                           const float *restrict residual, int relu)
{
    if (residual != NULL) {
#pragma omp simd
        for (int64_t q = 0; q < n; q++) {
            const float v = (x[q] - mean) * scale + shift + residual[q];
            y[q] = relu && v < 0.0f ? 0.0f : v;
        }
    } else {
#pragma omp simd
        for (int64_t q = 0; q < n; q++) {
            const float v = (x[q] - mean) * scale + shift;
            y[q] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/*
 * g: dy masked by a fused ReLU's output y, 0 where y <= 0 and dy elsewhere
 * (so NaN in y passes, as in PyTorch). The mask is a bitwise AND, which
 * GCC 12 vectorizes in the loops below, where a select between the two
 * floats keeps them scalar.
 */
static inline float masked(float dy, float y)
{
    uint32_t bits;
    float g;

    memcpy(&bits, &dy, sizeof bits);
    bits &= (uint32_t) - (int32_t)!(y <= 0.0f);
    memcpy(&g, &bits, sizeof g);
    return g;
}

/*
 * Backward sums per channel: s1 += g, s2 += g*(x - mean), with g as in
 * masked(). A NULL y has its own loops, so that no loop loads through it.
 */
MRT_CPU_CLONES static void grad_sums_row(double *restrict s1, double *restrict s2,
                                         const float *restrict dy, const float *restrict x,
                                         const float *restrict y, const float *restrict mean,
                                         int64_t c)
{
    if (y != NULL) {
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            const float g = masked(dy[j], y[j]);
            s1[j] += g;
            s2[j] += (double)g * ((double)x[j] - (double)mean[j]);
        }
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < c; j++) {
        s1[j] += dy[j];
        s2[j] += (double)dy[j] * ((double)x[j] - (double)mean[j]);
    }
}

MRT_CPU_CLONES static void grad_sums_plane(const float *restrict dy, const float *restrict x,
                                           const float *restrict y, int64_t n, double mean,
                                           double *s1, double *s2)
{
    double a = 0.0, b = 0.0;

    if (y != NULL) {
#pragma omp simd reduction(+ : a, b)
        for (int64_t q = 0; q < n; q++) {
            const float g = masked(dy[q], y[q]);
            a += g;
            b += (double)g * ((double)x[q] - mean);
        }
    } else {
#pragma omp simd reduction(+ : a, b)
        for (int64_t q = 0; q < n; q++) {
            a += dy[q];
            b += (double)dy[q] * ((double)x[q] - mean);
        }
    }
    *s1 += a;
    *s2 += b;
}

/* Per-channel factors of the input gradient: one set per value, or one for all (stride 0). */
typedef struct grad_factors {
    const float *mean, *mean_g, *proj, *scale;
    int stride;
} grad_factors;

/*
 * dx := (g - mean_g - (x - mean)*proj)*scale for n values, with g as in
 * masked() (dy itself when y is NULL); stores g in dres when given. dx may
 * be dy. Each case has its own loop, with no NULL pointer inside.
 */
MRT_CPU_CLONES static void grad_input_values(float *dx, const float *dy,
                                             const float *restrict x, const float *restrict y,
                                             float *restrict dres, const grad_factors *f,
                                             int64_t n)
{
    const float *restrict mean = f->mean, *restrict mean_g = f->mean_g;
    const float *restrict proj = f->proj, *restrict scale = f->scale;
    const int64_t k = f->stride;

    if (y != NULL && dres != NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            const float g = masked(dy[j], y[j]);
            dres[j] = g;
            dx[j] = (g - mean_g[j * k] - (x[j] - mean[j * k]) * proj[j * k]) * scale[j * k];
        }
    } else if (y != NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            const float g = masked(dy[j], y[j]);
            dx[j] = (g - mean_g[j * k] - (x[j] - mean[j * k]) * proj[j * k]) * scale[j * k];
        }
    } else if (dres != NULL) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            const float g = dy[j];
            dres[j] = g;
            dx[j] = (g - mean_g[j * k] - (x[j] - mean[j * k]) * proj[j * k]) * scale[j * k];
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dx[j] = (dy[j] - mean_g[j * k] - (x[j] - mean[j * k]) * proj[j * k]) * scale[j * k];
    }
}

/* ---- passes --------------------------------------------------------------- */

/*
 * Sums per channel into w->sum1 and w->sum2: of x - k (forward, dy NULL) or
 * of g and g*(x - mean) (backward). Rows use the per-thread partials.
 */
static void channel_sums(const bn_shape *s, const float *x, const float *dy, const float *y,
                         const float *center, bn_work *w)
{
    const int64_t c = s->c, rows = s->n;

    if (s->s == 1) {
        /* Zeroed here: the runtime may start fewer threads than asked for. */
        memset(w->part, 0, (size_t)(2 * w->threads * c) * sizeof(double));
#pragma omp parallel num_threads(w->threads)
        {
            const int t = omp_get_thread_num(), count = omp_get_num_threads();
            double *s1 = w->part + 2 * t * c, *s2 = s1 + c;
            for (int64_t i = rows * t / count; i < rows * (t + 1) / count; i++) {
                if (dy == NULL)
                    stats_row(s1, s2, x + i * c, center, c);
                else
                    grad_sums_row(s1, s2, dy + i * c, x + i * c, y ? y + i * c : NULL, center,
                                  c);
            }
        }
        for (int64_t j = 0; j < c; j++) {
            double a = 0.0, b = 0.0;
            for (int t = 0; t < w->threads; t++) {
                a += w->part[2 * t * c + j];
                b += w->part[(2 * t + 1) * c + j];
            }
            w->sum1[j] = a;
            w->sum2[j] = b;
        }
        return;
    }
#pragma omp parallel for num_threads(w->threads) schedule(static)
    for (int64_t j = 0; j < c; j++) {
        double a = 0.0, b = 0.0;
        for (int64_t n = 0; n < rows; n++) {
            const int64_t base = (n * c + j) * s->s;
            if (dy == NULL)
                stats_plane(x + base, s->s, center[j], &a, &b);
            else
                grad_sums_plane(dy + base, x + base, y ? y + base : NULL, s->s, center[j], &a,
                                &b);
        }
        w->sum1[j] = a;
        w->sum2[j] = b;
    }
}

/* y := the normalised x with its epilogue, from w->mean, w->scale and w->shift. */
static void normalize(const bn_shape *s, const float *x, const bn_epilogue *e, const bn_work *w,
                      float *y)
{
    const int64_t c = s->c;

    if (s->s == 1) {
#pragma omp parallel for num_threads(w->threads) schedule(static)
        for (int64_t i = 0; i < s->n; i++)
            normalize_row(y + i * c, x + i * c, w->mean, w->scale, w->shift,
                          e->residual ? e->residual + i * c : NULL, e->relu, c);
        return;
    }
#pragma omp parallel for num_threads(w->threads) schedule(static)
    for (int64_t plane = 0; plane < s->n * c; plane++) {
        const int64_t j = plane % c, base = plane * s->s;
        normalize_plane(y + base, x + base, s->s, w->mean[j], w->scale[j], w->shift[j],
                        e->residual ? e->residual + base : NULL, e->relu);
    }
}

/* Mean and biased variance per channel of a training batch, into w->sum1 and w->sum2. */
static void batch_stats(const bn_shape *s, const float *x, bn_work *w)
{
    const double count = (double)(s->n * s->s);

    /* The shift: each channel's first value, x[0,j] (row layout) or x[0,j,0]. */
    for (int64_t j = 0; j < s->c; j++)
        w->mean[j] = x[j * s->s];
    channel_sums(s, x, NULL, NULL, w->mean, w);
    for (int64_t j = 0; j < s->c; j++) {
        const double m = w->sum1[j] / count, var = w->sum2[j] / count - m * m;
        w->sum1[j] = (double)w->mean[j] + m;
        w->sum2[j] = var > 0.0 ? var : 0.0;
    }
}

/*
 * Batch normalisation forward with an optional epilogue (residual sum and
 * ReLU), the CPU implementation behind the public forward ops.
 */
static int cpu_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                       const mrt_tensor *beta_, mrt_tensor *running_mean,
                       mrt_tensor *running_var, mrt_tensor *save_mean, mrt_tensor *save_invstd,
                       mrt_tensor *y, int training, int update_running, double momentum,
                       double eps, const bn_epilogue *e)
{
    const bn_shape s = shape_of(x);
    const double count = (double)(s.n * s.s);
    float *rm = running_mean->data, *rv = running_var->data;
    bn_work w;

    MRT_TRY(work_of(ctx, &s, x->numel, &w));
    if (training && x->numel > 0)
        batch_stats(&s, x->data, &w);
    for (int64_t j = 0; j < s.c; j++) {
        const double mean = training ? w.sum1[j] : rm[j];
        const double var = training ? w.sum2[j] : rv[j];
        const double invstd = 1.0 / sqrt(var + eps);
        w.mean[j] = (float)mean;
        w.scale[j] = (float)(invstd * gamma->data[j]);
        w.shift[j] = beta_->data[j];
        if (!training)
            continue;
        save_mean->data[j] = (float)mean;
        save_invstd->data[j] = (float)invstd;
        if (update_running) {
            /* PyTorch keeps the unbiased variance in the running statistics. */
            const double unbiased = var * count / (count - 1.0);
            rm[j] = (float)((1.0 - momentum) * rm[j] + momentum * mean);
            rv[j] = (float)((1.0 - momentum) * rv[j] + momentum * unbiased);
        }
    }
    normalize(&s, x->data, e, &w, y->data);
    return MRT_OK;
}

/* Returns beta*old + value, ignoring old (even a NaN) when beta is 0. */
static float accumulate(float beta, float old, double value)
{
    return beta == 0.0f ? (float)value : (float)(beta * (double)old + value);
}

/* dx := the input gradient from w's per-channel factors; g and dres as in grad_input_values. */
static void grad_input(const bn_shape *s, const float *dy, const float *x, const float *y,
                       float *dres, const bn_work *w, float *dx)
{
    const int64_t c = s->c;

    if (s->s == 1) {
        const grad_factors f = {w->mean, w->mean_g, w->proj, w->scale, 1};
#pragma omp parallel for num_threads(w->threads) schedule(static)
        for (int64_t i = 0; i < s->n; i++) {
            const int64_t base = i * c;
            grad_input_values(dx + base, dy + base, x + base, y ? y + base : NULL,
                              dres ? dres + base : NULL, &f, c);
        }
        return;
    }
#pragma omp parallel for num_threads(w->threads) schedule(static)
    for (int64_t plane = 0; plane < s->n * c; plane++) {
        const int64_t j = plane % c, base = plane * s->s;
        const grad_factors f = {w->mean + j, w->mean_g + j, w->proj + j, w->scale + j, 0};
        grad_input_values(dx + base, dy + base, x + base, y ? y + base : NULL,
                          dres ? dres + base : NULL, &f, s->s);
    }
}

/*
 * Backward of cpu_forward. y is the forward output when it ended in a
 * fused ReLU (its zeros mask dy), else NULL; dres, when given, receives the
 * masked gradient, which is the residual's gradient.
 */
static int cpu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                        const mrt_tensor *gamma, const mrt_tensor *save_mean,
                        const mrt_tensor *save_invstd, const float *y, float *dres,
                        mrt_tensor *dx, mrt_tensor *dgamma, mrt_tensor *dbeta, float beta)
{
    const bn_shape s = shape_of(x);
    const double count = (double)(s.n * s.s);
    bn_work w;

    MRT_TRY(work_of(ctx, &s, x->numel, &w));
    for (int64_t j = 0; j < s.c; j++)
        w.mean[j] = save_mean->data[j];
    channel_sums(&s, x->data, dy->data, y, w.mean, &w);
    for (int64_t j = 0; j < s.c; j++) {
        const double invstd = save_invstd->data[j];
        const double sum_g = w.sum1[j], sum_g_xhat = w.sum2[j] * invstd;
        if (dbeta != NULL)
            dbeta->data[j] = accumulate(beta, dbeta->data[j], sum_g);
        if (dgamma != NULL)
            dgamma->data[j] = accumulate(beta, dgamma->data[j], sum_g_xhat);
        /* dx = gamma*invstd*(g - mean(g) - xhat*mean(g*xhat)), xhat = (x - mean)*invstd */
        w.scale[j] = (float)(gamma->data[j] * invstd);
        w.mean_g[j] = (float)(sum_g / count);
        w.proj[j] = (float)(sum_g_xhat / count * invstd);
    }
    if (dx != NULL)
        grad_input(&s, dy->data, x->data, y, dres, &w, dx->data);
    return MRT_OK;
}

int mrt_cpu_batchnorm_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                              const mrt_tensor *beta_, mrt_tensor *running_mean,
                              mrt_tensor *running_var, mrt_tensor *save_mean,
                              mrt_tensor *save_invstd, mrt_tensor *y, int training,
                              int update_running, double momentum, double eps)
{
    const bn_epilogue none = {NULL, 0};

    return cpu_forward(ctx, x, gamma, beta_, running_mean, running_var, save_mean, save_invstd,
                       y, training, update_running, momentum, eps, &none);
}

int mrt_cpu_batchnorm_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                               const mrt_tensor *gamma, const mrt_tensor *save_mean,
                               const mrt_tensor *save_invstd, mrt_tensor *dx,
                               mrt_tensor *dgamma, mrt_tensor *dbeta, float beta)
{
    return cpu_backward(ctx, dy, x, gamma, save_mean, save_invstd, NULL, NULL, dx, dgamma,
                        dbeta, beta);
}

int mrt_cpu_batchnorm_act_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                                  const mrt_tensor *beta_, mrt_tensor *running_mean,
                                  mrt_tensor *running_var, mrt_tensor *save_mean,
                                  mrt_tensor *save_invstd, const mrt_tensor *residual,
                                  mrt_tensor *y, int training, int update_running,
                                  double momentum, double eps, int relu)
{
    const bn_epilogue e = {residual != NULL ? residual->data : NULL, relu};

    return cpu_forward(ctx, x, gamma, beta_, running_mean, running_var, save_mean, save_invstd,
                       y, training, update_running, momentum, eps, &e);
}

int mrt_cpu_batchnorm_act_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                                   const mrt_tensor *y, const mrt_tensor *gamma,
                                   const mrt_tensor *save_mean, const mrt_tensor *save_invstd,
                                   mrt_tensor *dx, mrt_tensor *dresidual, mrt_tensor *dgamma,
                                   mrt_tensor *dbeta, float beta)
{
    return cpu_backward(ctx, dy, x, gamma, save_mean, save_invstd, y != NULL ? y->data : NULL,
                        dresidual != NULL ? dresidual->data : NULL, dx, dgamma, dbeta, beta);
}
