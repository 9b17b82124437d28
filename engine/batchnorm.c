/*
 * batchnorm.c: batch normalisation per channel of x[N,C] or x[N,C,H,W], as
 * PyTorch's BatchNorm1d and BatchNorm2d: argument checks and the CPU
 * implementation.
 *
 * The CPU path runs one channel per OpenMP thread and accumulates every
 * statistic and every gradient sum in double.
 */
#include <math.h>

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

/* Mean and biased variance of channel c, in two passes. */
static void channel_stats(const bn_shape *s, const float *x, int64_t c, double *mean,
                          double *var)
{
    const double count = (double)(s->n * s->s);
    double sum = 0.0, sumsq = 0.0;

    for (int64_t n = 0; n < s->n; n++) {
        const float *p = x + (n * s->c + c) * s->s;
        for (int64_t q = 0; q < s->s; q++)
            sum += p[q];
    }
    *mean = sum / count;
    for (int64_t n = 0; n < s->n; n++) {
        const float *p = x + (n * s->c + c) * s->s;
        for (int64_t q = 0; q < s->s; q++) {
            double d = p[q] - *mean;
            sumsq += d * d;
        }
    }
    *var = sumsq / count;
}

/* y := (x - mean)*scale + shift over channel c. */
static void channel_normalize(const bn_shape *s, const float *x, int64_t c, double mean,
                              double scale, double shift, float *y)
{
    for (int64_t n = 0; n < s->n; n++) {
        const int64_t base = (n * s->c + c) * s->s;
        for (int64_t q = 0; q < s->s; q++)
            y[base + q] = (float)((x[base + q] - mean) * scale + shift);
    }
}

int mrt_cpu_batchnorm_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                              const mrt_tensor *beta_, mrt_tensor *running_mean,
                              mrt_tensor *running_var, mrt_tensor *save_mean,
                              mrt_tensor *save_invstd, mrt_tensor *y, int training,
                              int update_running, double momentum, double eps)
{
    const bn_shape s = shape_of(x);
    const double count = (double)(s.n * s.s);
    float *rm = running_mean->data, *rv = running_var->data;

    (void)ctx;
#pragma omp parallel for if (x->numel > BATCHNORM_PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < s.c; c++) {
        double mean, var;
        if (training) {
            channel_stats(&s, x->data, c, &mean, &var);
        } else {
            mean = rm[c];
            var = rv[c];
        }
        const double invstd = 1.0 / sqrt(var + eps);
        const double scale = invstd * gamma->data[c];
        channel_normalize(&s, x->data, c, mean, scale, beta_->data[c], y->data);
        if (!training)
            continue;
        save_mean->data[c] = (float)mean;
        save_invstd->data[c] = (float)invstd;
        if (update_running) {
            /* PyTorch keeps the unbiased variance in the running statistics. */
            const double unbiased = var * count / (count - 1.0);
            rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mean);
            rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * unbiased);
        }
    }
    return MRT_OK;
}

/* Sums of dy and of dy*xhat over channel c, with xhat = (x - mean)*invstd. */
static void channel_grad_sums(const bn_shape *s, const float *dy, const float *x, int64_t c,
                              double mean, double invstd, double *sum_dy, double *sum_dy_xhat)
{
    double a = 0.0, b = 0.0;

    for (int64_t n = 0; n < s->n; n++) {
        const int64_t base = (n * s->c + c) * s->s;
        for (int64_t q = 0; q < s->s; q++) {
            a += dy[base + q];
            b += dy[base + q] * ((x[base + q] - mean) * invstd);
        }
    }
    *sum_dy = a;
    *sum_dy_xhat = b;
}

/* Returns beta*old + value, ignoring old (even a NaN) when beta is 0. */
static float accumulate(float beta, float old, double value)
{
    return beta == 0.0f ? (float)value : (float)(beta * (double)old + value);
}

int mrt_cpu_batchnorm_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                               const mrt_tensor *gamma, const mrt_tensor *save_mean,
                               const mrt_tensor *save_invstd, mrt_tensor *dx,
                               mrt_tensor *dgamma, mrt_tensor *dbeta, float beta)
{
    const bn_shape s = shape_of(x);
    const double count = (double)(s.n * s.s);

    (void)ctx;
#pragma omp parallel for if (x->numel > BATCHNORM_PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < s.c; c++) {
        const double mean = save_mean->data[c], invstd = save_invstd->data[c];
        double sum_dy, sum_dy_xhat;
        channel_grad_sums(&s, dy->data, x->data, c, mean, invstd, &sum_dy, &sum_dy_xhat);
        if (dbeta != NULL)
            dbeta->data[c] = accumulate(beta, dbeta->data[c], sum_dy);
        if (dgamma != NULL)
            dgamma->data[c] = accumulate(beta, dgamma->data[c], sum_dy_xhat);
        if (dx == NULL)
            continue;
        /* dx = gamma*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)) */
        const double k = gamma->data[c] * invstd;
        const double mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
        for (int64_t n = 0; n < s.n; n++) {
            const int64_t base = (n * s.c + c) * s.s;
            for (int64_t q = 0; q < s.s; q++) {
                const double xhat = (x->data[base + q] - mean) * invstd;
                dx->data[base + q] =
                    (float)(k * (dy->data[base + q] - mean_dy - xhat * mean_dy_xhat));
            }
        }
    }
    return MRT_OK;
}
