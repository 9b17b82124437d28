/*
 * optim.c: the fused optimizer updates of mrt_optim.h: argument checks in the
 * public wrappers, then the CPU implementations (mrt_cpu_*), one OpenMP pass
 * over the elements each, after a serial check of per-element counts where
 * they are given.
 *
 * Arithmetic is float32 in PyTorch 1.13's order of operations (torch.optim
 * _single_tensor_sgd and _single_tensor_adam), so a step agrees with PyTorch
 * to float32 rounding. Scalars that PyTorch computes as Python floats (Adam's
 * bias corrections) are computed here in double and rounded once.
 */
#include <math.h>

#include "cpu.h"

/* Loops shorter than this run on one thread: forking costs more than it saves. */
#define PARALLEL_MIN 32768
/* Langevin noise is drawn in chunks of this many normals (one scratch slot). */
#define NOISE_CHUNK 65536
#define NOISE_SLOT 0

/* ---- argument checks ----------------------------------------------------- */

static int check_ctx_n(const char *fn, const mrt_ctx *ctx, int64_t n)
{
    if (ctx == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing context", fn);
    if (n < 0)
        return mrt_fail(MRT_EINVAL, "%s: element count %lld is negative", fn, (long long)n);
    return MRT_OK;
}

/* Fails when a pointer that n > 0 elements need is NULL. */
static int check_ptr(const char *fn, const char *name, const void *p, int64_t n)
{
    if (p == NULL && n > 0)
        return mrt_fail(MRT_EINVAL, "%s: missing array '%s' for %lld elements", fn, name,
                        (long long)n);
    return MRT_OK;
}

/* Fails unless lo <= v (and v <= hi when hi is finite) and v is finite. */
static int check_range(const char *fn, const char *name, double v, double lo, double hi)
{
    if (isnan(v))
        return mrt_fail(MRT_EINVAL, "%s: %s is nan (expected a finite number)", fn, name);
    if (!isfinite(v) || v < lo || v > hi) {
        if (isinf(hi))
            return mrt_fail(MRT_EINVAL, "%s: %s is %g (expected a finite number >= %g)", fn, name,
                            v, lo);
        return mrt_fail(MRT_EINVAL, "%s: %s is %g (expected a number in [%g, %g])", fn, name, v,
                        lo, hi);
    }
    return MRT_OK;
}

/* Fails unless 0 <= v < 1, as Adam's betas must be. */
static int check_beta(const char *fn, const char *name, double v)
{
    if (!(v >= 0.0 && v < 1.0))
        return mrt_fail(MRT_EINVAL, "%s: %s is %g (expected a number in [0, 1))", fn, name, v);
    return MRT_OK;
}

static int check_flag(const char *fn, const char *name, int32_t v)
{
    if (v != 0 && v != 1)
        return mrt_fail(MRT_EINVAL, "%s: %s is %d (expected 0 or 1)", fn, name, (int)v);
    return MRT_OK;
}

static int check_sgd_params(const char *fn, const mrt_sgd_params *p)
{
    MRT_TRY(check_range(fn, "lr", p->lr, 0.0, INFINITY));
    MRT_TRY(check_range(fn, "momentum", p->momentum, 0.0, INFINITY));
    MRT_TRY(check_range(fn, "dampening", p->dampening, -INFINITY, INFINITY));
    MRT_TRY(check_range(fn, "weight_decay", p->weight_decay, 0.0, INFINITY));
    MRT_TRY(check_range(fn, "noise_std", p->noise_std, 0.0, INFINITY));
    MRT_TRY(check_flag(fn, "nesterov", p->nesterov));
    MRT_TRY(check_flag(fn, "first", p->first));
    MRT_TRY(check_flag(fn, "update_buffer", p->update_buffer));
    MRT_TRY(check_flag(fn, "apply", p->apply));
    if (p->nesterov && (p->momentum <= 0.0f || p->dampening != 0.0f))
        return mrt_fail(MRT_EINVAL, "%s: nesterov needs momentum > 0 and dampening 0, got "
                        "momentum %g and dampening %g", fn, p->momentum, p->dampening);
    if (!p->update_buffer && !p->apply)
        return mrt_fail(MRT_EINVAL, "%s: update_buffer and apply are both 0 (nothing to do)", fn);
    if (p->mask != NULL)
        MRT_TRY(check_flag(fn, "mask_on", p->mask_on));
    if (!p->update_buffer && p->nesterov && p->direction == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing array 'direction' (needed for a drift step, "
                        "update_buffer 0, with nesterov)", fn);
    return MRT_OK;
}

/* ---- public wrappers ------------------------------------------------------ */

int mrt_sgd_update(mrt_ctx *ctx, float *theta, const float *grad, float *buffer, int64_t n,
                   const mrt_sgd_params *p, mrt_rng *rng)
{
    static const char fn[] = "mrt_sgd_update";

    MRT_TRY(check_ctx_n(fn, ctx, n));
    if (p == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing parameters 'p'", fn);
    MRT_TRY(check_sgd_params(fn, p));
    MRT_TRY(check_ptr(fn, "theta", theta, n));
    if (p->update_buffer)
        MRT_TRY(check_ptr(fn, "grad", grad, n));
    if (buffer == NULL && n > 0 && (p->momentum != 0.0f || !p->update_buffer))
        return mrt_fail(MRT_EINVAL, "%s: missing array 'buffer' (needed when momentum is %g "
                        "and update_buffer is %d)", fn, p->momentum, (int)p->update_buffer);
    if (p->noise_std > 0.0f && p->update_buffer && rng == NULL)
        return mrt_fail(MRT_EINVAL, "%s: noise_std is %g but no generator 'rng' was given", fn,
                        p->noise_std);
    if (n == 0)
        return MRT_OK;
    return MRT_DISPATCH(ctx, sgd_update, theta, grad, buffer, n, p, rng);
}

int mrt_adam_update(mrt_ctx *ctx, float *theta, const float *grad, float *m, float *v,
                    int64_t n, const mrt_adam_params *p)
{
    static const char fn[] = "mrt_adam_update";

    MRT_TRY(check_ctx_n(fn, ctx, n));
    if (p == NULL)
        return mrt_fail(MRT_EINVAL, "%s: missing parameters 'p'", fn);
    MRT_TRY(check_range(fn, "lr", p->lr, 0.0, INFINITY));
    MRT_TRY(check_beta(fn, "beta1", p->beta1));
    MRT_TRY(check_beta(fn, "beta2", p->beta2));
    MRT_TRY(check_range(fn, "eps", p->eps, 0.0, INFINITY));
    MRT_TRY(check_range(fn, "weight_decay", p->weight_decay, 0.0, INFINITY));
    MRT_TRY(check_flag(fn, "decoupled", p->decoupled));
    MRT_TRY(check_flag(fn, "update_moments", p->update_moments));
    MRT_TRY(check_flag(fn, "apply", p->apply));
    if (p->amsgrad != 0)
        return mrt_fail(MRT_ENYI, "NYI: %s: amsgrad", fn);
    if (p->mask != NULL)
        MRT_TRY(check_flag(fn, "mask_on", p->mask_on));
    if (p->counts == NULL && p->step < 1)
        return mrt_fail(MRT_EINVAL, "%s: step is %lld (expected the update's index, from 1)", fn,
                        (long long)p->step);
    if (!p->update_moments && !p->apply)
        return mrt_fail(MRT_EINVAL, "%s: update_moments and apply are both 0 (nothing to do)", fn);
    MRT_TRY(check_ptr(fn, "theta", theta, n));
    if (p->update_moments)
        MRT_TRY(check_ptr(fn, "grad", grad, n));
    MRT_TRY(check_ptr(fn, "m", m, n));
    MRT_TRY(check_ptr(fn, "v", v, n));
    if (n == 0)
        return MRT_OK;
    return MRT_DISPATCH(ctx, adam_update, theta, grad, m, v, n, p);
}

int mrt_average(mrt_ctx *ctx, float *dst, const float *const *srcs, int count, int64_t n)
{
    static const char fn[] = "mrt_average";

    MRT_TRY(check_ctx_n(fn, ctx, n));
    if (count < 1)
        return mrt_fail(MRT_EINVAL, "%s: count is %d (expected at least 1 source)", fn, count);
    MRT_TRY(check_ptr(fn, "dst", dst, n));
    MRT_TRY(check_ptr(fn, "srcs", srcs, n));
    for (int j = 0; j < count && n > 0; j++)
        if (srcs[j] == NULL)
            return mrt_fail(MRT_EINVAL, "%s: source %d of %d is NULL", fn, j, count);
    if (n == 0)
        return MRT_OK;
    return MRT_DISPATCH(ctx, average, dst, srcs, count, n);
}

int mrt_mask_mul(mrt_ctx *ctx, float *y, const float *mask, int64_t n)
{
    static const char fn[] = "mrt_mask_mul";

    MRT_TRY(check_ctx_n(fn, ctx, n));
    MRT_TRY(check_ptr(fn, "y", y, n));
    MRT_TRY(check_ptr(fn, "mask", mask, n));
    if (n == 0)
        return MRT_OK;
    return MRT_DISPATCH(ctx, mask_mul, y, mask, n);
}

/* ---- CPU implementations ---------------------------------------------------- */

/* Counts are whole numbers below 2^24, so adding 1 in float is exact. */
#define COUNT_LIMIT 16777216.0

/*
 * Fails unless every count of an element in the part is a whole number in
 * [0, 2^24 - 1), so that an update keeps it exact. Sets *lo and *hi to the
 * smallest and largest such count, or *lo > *hi when the mask selects no
 * element.
 */
static int check_counts(const char *fn, const float *counts, const float *mask, int on,
                        int64_t n, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (mask != NULL && (mask[i] != 0.0f) != on)
            continue;
        const double c = isnan(counts[i]) ? NAN : counts[i];   /* prints "nan", not "-nan" */
        if (!(c >= 0.0 && c < COUNT_LIMIT - 1.0) || c != floor(c))
            return mrt_fail(MRT_EINVAL, "%s: counts[%lld] is %g (expected the element's "
                            "update count, a whole number in [0, 2^24 - 1))", fn, (long long)i,
                            c);
        *lo = c < *lo ? c : *lo;
        *hi = c > *hi ? c : *hi;
    }
    return MRT_OK;
}

/*
 * One SGD pass over [0, n) with an optional precomputed noise array. The
 * common cases have loops of their own without branches, so they vectorise.
 * The masked loop with a buffer or counts and the general loop keep their
 * branches and run scalar.
 */
static void sgd_pass(float *theta, const float *grad, float *buffer, const float *noise,
                     int64_t n, const mrt_sgd_params *p)
{
    const float lr = p->lr, mu = p->momentum, damp = 1.0f - p->dampening;
    const float wd = p->weight_decay, std = p->noise_std;
    const int first = p->first || mu == 0.0f;
    const int update = p->update_buffer, apply = p->apply, nesterov = p->nesterov;
    const float *mask = p->mask;
    const int on = p->mask_on != 0;
    float *const counts = p->counts;

    if (update && apply && buffer != NULL && noise == NULL && !nesterov && mask == NULL
        && counts == NULL) {
        /* One loop per case, each free of branches, so each one vectorises. */
#define SGD_LOOP(G, B)                                                                  \
    _Pragma("omp parallel for simd if (n > PARALLEL_MIN) schedule(static)")             \
    for (int64_t i = 0; i < n; i++) {                                                   \
        const float t = theta[i], old = buffer[i];                                      \
        const float g = (G);                                                            \
        const float b = (B);                                                            \
        (void)old;                                                                      \
        buffer[i] = b;                                                                  \
        theta[i] = t - lr * b;                                                          \
    }
        if (wd != 0.0f && first) {
            SGD_LOOP(grad[i] + wd * t, g)
        } else if (wd != 0.0f) {
            SGD_LOOP(grad[i] + wd * t, mu * old + damp * g)
        } else if (first) {
            SGD_LOOP(grad[i], g)
        } else {
            SGD_LOOP(grad[i], mu * old + damp * g)
        }
#undef SGD_LOOP
        return;
    }
    /* Plain SGD (no buffer, no counts) with an element mask, the default of
     * optim.subgroups: every element's step is computed and the ones
     * outside the part keep their old values. */
    if (update && apply && noise == NULL && !nesterov && mask != NULL && buffer == NULL
        && counts == NULL) {
        const float on_value = on ? 1.0f : 0.0f;
#define MASKED_SGD_LOOP(G)                                                              \
    _Pragma("omp parallel for simd if (n > PARALLEL_MIN) schedule(static)")             \
    for (int64_t i = 0; i < n; i++) {                                                   \
        const float t = theta[i];                                                       \
        const float moved = t - lr * (G);                                               \
        theta[i] = (mask[i] != 0.0f ? 1.0f : 0.0f) == on_value ? moved : t;             \
    }
        if (wd != 0.0f) {
            MASKED_SGD_LOOP(grad[i] + wd * t)
        } else {
            MASKED_SGD_LOOP(grad[i])
        }
#undef MASKED_SGD_LOOP
        return;
    }
    /* The same with a buffer or counts: every element is computed, and the
     * ones outside the part keep their old values. */
    if (update && apply && noise == NULL && !nesterov && mask != NULL) {
#pragma omp parallel for simd if (n > PARALLEL_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            const int keep = (mask[i] != 0.0f) == on;
            const float t = theta[i], old = buffer != NULL ? buffer[i] : 0.0f;
            const float count = counts != NULL ? counts[i] : 1.0f;
            const float g = wd != 0.0f ? grad[i] + wd * t : grad[i];
            const float b = first || count == 0.0f ? g : mu * old + damp * g;
            if (buffer != NULL)
                buffer[i] = keep ? b : old;
            if (counts != NULL)
                counts[i] = keep ? count + 1.0f : count;
            theta[i] = keep ? t - lr * b : t;
        }
        return;
    }
    float *const stored = nesterov ? p->direction : NULL;
    if (!update && apply) {
        const float *along = stored != NULL ? stored : buffer;
        if (mask == NULL) {
#pragma omp parallel for simd if (n > PARALLEL_MIN) schedule(static)
            for (int64_t i = 0; i < n; i++)
                theta[i] = theta[i] - lr * along[i];
            return;
        }
#pragma omp parallel for simd if (n > PARALLEL_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            const int keep = (mask[i] != 0.0f) == on;
            theta[i] = keep ? theta[i] - lr * along[i] : theta[i];
        }
        return;
    }
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float dir;
        if (mask != NULL && (mask[i] != 0.0f) != on)
            continue;
        if (update) {
            float g = grad[i];
            if (wd != 0.0f)
                g = g + wd * theta[i];
            if (noise != NULL)
                g = g + std * noise[i];
            if (buffer != NULL) {
                const int fresh = first || (counts != NULL && counts[i] == 0.0f);
                float b = fresh ? g : mu * buffer[i] + damp * g;
                buffer[i] = b;
                dir = nesterov ? g + mu * b : b;
                if (stored != NULL)
                    stored[i] = dir;
            } else {
                dir = g;
            }
            if (counts != NULL)
                counts[i] = counts[i] + 1.0f;
        } else {
            dir = stored != NULL ? stored[i] : buffer[i];
        }
        if (apply)
            theta[i] = theta[i] - lr * dir;
    }
}

int mrt_cpu_sgd_update(mrt_ctx *ctx, float *theta, const float *grad, float *buffer, int64_t n,
                       const mrt_sgd_params *p, mrt_rng *rng)
{
    if (p->counts != NULL && p->update_buffer) {
        double lo, hi;
        MRT_TRY(check_counts("mrt_sgd_update", p->counts, p->mask, p->mask_on != 0, n, &lo,
                             &hi));
    }
    if (p->noise_std == 0.0f || !p->update_buffer) {
        sgd_pass(theta, grad, buffer, NULL, n, p);
        return MRT_OK;
    }
    /* The generator is sequential: draw a chunk, then update that chunk in parallel. */
    float *noise = mrt_cpu_scratch(ctx, NOISE_SLOT, n < NOISE_CHUNK ? n : NOISE_CHUNK);
    if (noise == NULL)
        return MRT_ENOMEM;
    mrt_sgd_params chunk = *p;
    for (int64_t base = 0; base < n; base += NOISE_CHUNK) {
        int64_t m = n - base < NOISE_CHUNK ? n - base : NOISE_CHUNK;
        mrt_rng_fill_normal(rng, noise, m, 0.0f, 1.0f);
        chunk.direction = p->direction != NULL ? p->direction + base : NULL;
        chunk.mask = p->mask != NULL ? p->mask + base : NULL;
        chunk.counts = p->counts != NULL ? p->counts + base : NULL;
        sgd_pass(theta + base, grad + base, buffer != NULL ? buffer + base : NULL, noise, m,
                 &chunk);
    }
    return MRT_OK;
}

/* Adam's bias-correction factors for the update with index step, in double, rounded once. */
static void adam_factors(const mrt_adam_params *p, double step, float *step_size,
                         float *bias2_sqrt)
{
    *step_size = (float)((double)p->lr / (1.0 - pow(p->beta1, step)));
    *bias2_sqrt = (float)sqrt(1.0 - pow(p->beta2, step));
}

/* Per-element counts spanning at most this many values use a table of factors. */
#define ADAM_TABLE 4096

int mrt_cpu_adam_update(mrt_ctx *ctx, float *theta, const float *grad, float *m, float *v,
                        int64_t n, const mrt_adam_params *p)
{
    /* As PyTorch: beta and 1 - beta computed in double, each rounded to float once. */
    const float b1 = (float)p->beta1, b2 = (float)p->beta2, eps = p->eps;
    const float c1 = (float)(1.0 - p->beta1), c2 = (float)(1.0 - p->beta2);
    const float wd = p->weight_decay;
    const float decay = (float)(1.0 - (double)p->lr * (double)wd);
    const float *mask = p->mask;
    const int on = p->mask_on != 0, update = p->update_moments;
    float *counts = p->counts;
    float step_size, bc2_sqrt;
    /* With counts: factors of counts lo..lo+span-1 (after this call's increment). */
    float table_step[ADAM_TABLE], table_bc2[ADAM_TABLE];
    double lo = 0.0;
    int span = 0;

    (void)ctx;
    if (counts == NULL) {
        adam_factors(p, (double)p->step, &step_size, &bc2_sqrt);
    } else {
        double hi;
        MRT_TRY(check_counts("mrt_adam_update", counts, mask, on, n, &lo, &hi));
        if (lo > hi)
            return MRT_OK;              /* the mask selects no element */
        lo += update;
        hi += update;
        if (hi - lo < ADAM_TABLE) {
            span = (int)(hi - lo) + 1;
            for (int j = 0; j < span; j++)
                adam_factors(p, lo + j, &table_step[j], &table_bc2[j]);
        }
    }
    if (mask == NULL && counts == NULL && update && p->apply) {
        /* The common step, one branch-free loop per weight-decay case so each vectorises. */
#define ADAM_LOOP(T, G)                                                                 \
    _Pragma("omp parallel for simd if (n > PARALLEL_MIN) schedule(static)")             \
    for (int64_t i = 0; i < n; i++) {                                                   \
        const float th = theta[i];                                                      \
        const float t = (T), g = (G);                                                   \
        const float mi = b1 * m[i] + c1 * g;                                            \
        const float vi = b2 * v[i] + c2 * g * g;                                        \
        m[i] = mi;                                                                      \
        v[i] = vi;                                                                      \
        const float denom = sqrtf(vi) / bc2_sqrt + eps;                                 \
        theta[i] = t - step_size * (mi / denom);                                        \
    }
        if (p->decoupled && wd != 0.0f) {
            ADAM_LOOP(th * decay, grad[i])
        } else if (wd != 0.0f) {
            ADAM_LOOP(th, grad[i] + wd * th)
        } else {
            ADAM_LOOP(th, grad[i])
        }
#undef ADAM_LOOP
        return MRT_OK;
    }
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        if (mask != NULL && (mask[i] != 0.0f) != on)
            continue;
        float element_step = step_size, element_bc2 = bc2_sqrt;
        if (counts != NULL) {
            const double c = (double)counts[i] + update;
            if (c == 0.0)
                continue;               /* no moments yet: the element has no step */
            if (update)
                counts[i] = (float)c;
            if (span > 0) {
                element_step = table_step[(int)(c - lo)];
                element_bc2 = table_bc2[(int)(c - lo)];
            } else {
                adam_factors(p, c, &element_step, &element_bc2);
            }
        }
        float t = theta[i];
        if (p->apply && p->decoupled && wd != 0.0f)
            t = t * decay;
        if (update) {
            float g = grad[i];
            if (!p->decoupled && wd != 0.0f)
                g = g + wd * theta[i];
            m[i] = b1 * m[i] + c1 * g;
            v[i] = b2 * v[i] + c2 * g * g;
        }
        if (p->apply) {
            float denom = sqrtf(v[i]) / element_bc2 + eps;
            t = t - element_step * (m[i] / denom);
        }
        theta[i] = t;
    }
    return MRT_OK;
}

int mrt_cpu_average(mrt_ctx *ctx, float *dst, const float *const *srcs, int count, int64_t n)
{
    (void)ctx;
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int j = 0; j < count; j++)
            s += srcs[j][i];
        dst[i] = s / (float)count;
    }
    return MRT_OK;
}

int mrt_cpu_mask_mul(mrt_ctx *ctx, float *y, const float *mask, int64_t n)
{
    (void)ctx;
#pragma omp parallel for if (n > PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = y[i] * mask[i];
    return MRT_OK;
}

