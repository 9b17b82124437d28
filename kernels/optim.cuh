/*
 * optim.cuh: the per-element arithmetic of the fused optimizer updates.
 *
 * These functions build as host code too (see portable.cuh). Each follows
 * engine/include/mrt_optim.h (PyTorch 1.13 conventions) in float32, one
 * IEEE operation at a time: the Makefile builds kernels with -fmad=false,
 * so no multiply-add is fused.
 */
#ifndef MRT_KERNELS_OPTIM_CUH
#define MRT_KERNELS_OPTIM_CUH

#include <math.h>

#include "../engine/include/mrt_optim.h"
#include "portable.cuh"

/*
 * True for a valid per-element update count: a whole number in [0, 2^24 - 1).
 * The CPU backend reports any other count as an error; a kernel cannot, so
 * it leaves that element alone.
 */
MRT_HD int mrt_count_ok(float count)
{
    return count >= 0.0f && count < 16777215.0f && count == floorf(count);
}

/*
 * One SGD element, as the CPU backend's sgd_pass. buffer may be NULL only
 * with update_buffer and momentum 0, and the step is then along g. A buffer
 * given with momentum 0 stores g. stored is the element of p.direction
 * (NULL when there is none): with nesterov, an update writes the direction
 * there and a drift step goes along it. count is the element of p.counts
 * (or NULL): its first update is the one that finds it at 0. z is the
 * element's standard normal, already rounded to float, read only when
 * noise_std > 0.
 */
MRT_HD void mrt_sgd_element(float *theta, const float *grad, float *buffer, float *stored,
                            float *count, const mrt_sgd_params &p, float z)
{
    const float th = *theta;
    if (count != NULL && p.update_buffer && !mrt_count_ok(*count))
        return;
    const int first = p.first || p.momentum == 0.0f || (count != NULL && *count == 0.0f);
    float direction;

    if (p.update_buffer) {
        float g = *grad;
        if (p.weight_decay != 0.0f)
            g = g + p.weight_decay * th;
        if (p.noise_std > 0.0f)
            g = g + p.noise_std * z;
        if (buffer != NULL) {
            const float b = first ? g : p.momentum * *buffer + (1.0f - p.dampening) * g;
            *buffer = b;
            direction = p.nesterov ? g + p.momentum * b : b;
            if (p.nesterov && stored != NULL)
                *stored = direction;
        } else {
            direction = g;
        }
        if (count != NULL)
            *count = *count + 1.0f;
    } else if (p.nesterov && stored != NULL) {
        direction = *stored;    /* a drift step along the stored nesterov direction */
    } else {
        direction = *buffer;    /* a drift step: apply the stored buffer only */
    }
    if (p.apply)
        *theta = th - p.lr * direction;
}

/*
 * One Adam/AdamW element, as the CPU backend's: grad is read only with
 * update_moments; step_size, bias2_sqrt and decay come from the host.
 */
MRT_HD void mrt_adam_element(float *theta, const float *grad, float *m, float *v,
                             const mrt_adam_params &p, float step_size, float bias2_sqrt,
                             float decay)
{
    const float th = *theta;
    float t = th;

    if (p.apply && p.decoupled && p.weight_decay != 0.0f)
        t = t * decay;
    if (p.update_moments) {
        float g = *grad;
        if (!p.decoupled && p.weight_decay != 0.0f)
            g = g + p.weight_decay * th;
        *m = (float)p.beta1 * *m + (float)(1.0 - p.beta1) * g;
        *v = (float)p.beta2 * *v + (float)(1.0 - p.beta2) * g * g;
    }
    if (p.apply) {
        const float denom = sqrtf(*v) / bias2_sqrt + p.eps;
        t = t - step_size * (*m / denom);
    }
    *theta = t;
}

/*
 * An element's own update count (mrt_adam_params.counts): advances it on an
 * update and gives its bias-correction factors, in double, rounded once, as
 * the CPU backend. Returns 0 for an element that has no moments yet.
 */
MRT_HD int mrt_adam_count(float *count, const mrt_adam_params &p, float *step_size,
                          float *bias2_sqrt)
{
    if (!mrt_count_ok(*count))
        return 0;
    const double c = (double)*count + p.update_moments;

    if (c == 0.0)
        return 0;
    if (p.update_moments)
        *count = (float)c;
    *step_size = (float)((double)p.lr / (1.0 - pow(p.beta1, c)));
    *bias2_sqrt = (float)sqrt(1.0 - pow(p.beta2, c));
    return 1;
}

/* Element i of the mean of srcs[0..count), summed from 0 in source order. */
MRT_HD float mrt_average_element(const float *const *srcs, int count, int64_t i)
{
    float sum = 0.0f;

    for (int k = 0; k < count; k++)
        sum += srcs[k][i];
    return sum / (float)count;
}

#endif
