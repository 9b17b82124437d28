/*
 * mrt_optim.h: fused optimizer updates over ranges of flat parameter buffers.
 *
 * Parameters, gradients and optimizer state of a model live in flat buffers
 * on one device; an update works on n consecutive elements starting at the
 * given pointers, so one call covers a whole contiguous part. Conventions are
 * PyTorch's (torch.optim, version 1.13), with weight decay folded into the
 * gradient for SGD and Adam and decoupled for AdamW.
 */
#ifndef MRT_OPTIM_H
#define MRT_OPTIM_H

#include "mrt_core.h"

typedef struct mrt_sgd_params {
    float lr;              /* step size h applied to the buffer (apply = 1) */
    float momentum;        /* mu; 0 disables the buffer and steps along g */
    float dampening;       /* buffer := mu*buffer + (1-dampening)*g */
    float weight_decay;    /* g := grad + weight_decay*theta */
    float noise_std;       /* g += noise_std * N(0,1) per element (Langevin); 0 for none */
    int32_t nesterov;      /* step along g + mu*buffer */
    int32_t first;         /* 1 on the buffer's first update: buffer := g, as PyTorch */
    int32_t update_buffer; /* 1: fold the gradient into the buffer */
    int32_t apply;         /* 1: theta := theta - lr*direction */
    float *direction;      /* optional n floats for nesterov's direction (see below) */
    const float *mask;     /* optional n floats, each 0 or 1 (see below) */
    int32_t mask_on;       /* with mask: only elements whose mask equals this (0 or 1) move */
    float *counts;         /* optional n per-element update counts, in place of first */
} mrt_sgd_params;

/*
 * SGD with momentum on theta[0..n). With update_buffer, the direction is
 * g = grad + weight_decay*theta (+ noise_std*N(0,1)). The buffer becomes g on
 * its first update, and always when momentum is 0. After that it becomes
 * mu*buffer + (1-dampening)*g. apply steps along the buffer, or along
 * g + mu*buffer with nesterov. buffer may be NULL only when momentum is 0 and
 * update_buffer is 1, and the step is then along g. With update_buffer 0 (a
 * drift step that only applies the stored state) grad may be NULL.
 *
 * Optional arrays, n floats each at the same offset as buffer:
 * - direction: with nesterov, an update stores g + mu*buffer there and a
 *   drift step goes along it. A nesterov drift step needs it.
 * - mask: an element whose mask is not mask_on keeps its theta, buffer,
 *   direction and count (an element-mask part).
 * - counts: each element's number of buffer updates, a whole number below
 *   2^24. An element's first update is the one that finds its count at 0,
 *   in place of p->first, and an update adds 1.
 *
 * rng is needed only when noise_std > 0. The n normals are drawn in element
 * order, two 32-bit words each, also for masked-out elements, so the
 * generator advances by 2n words.
 */
int mrt_sgd_update(mrt_ctx *ctx, float *theta, const float *grad /* optional */,
                   float *buffer, int64_t n, const mrt_sgd_params *p, mrt_rng *rng /* optional */);

typedef struct mrt_adam_params {
    float lr;
    double beta1, beta2;   /* as PyTorch's Python floats: moments use beta and 1 - beta, each
                              rounded to float once, and the bias corrections pow(beta, t) */
    float eps;
    float weight_decay;
    int32_t decoupled;     /* 1: AdamW, theta *= 1 - lr*weight_decay before the step */
    int32_t amsgrad;       /* must be 0; 1 is NYI */
    int64_t step;          /* index of the latest moment update, from 1, for bias correction */
    int32_t update_moments; /* 1: fold grad into m and v (step counts this update) */
    int32_t apply;         /* 1: step theta along the bias-corrected m/(sqrt(v)+eps) */
    const float *mask;     /* optional n floats, each 0 or 1, as for SGD */
    int32_t mask_on;       /* with mask: only elements whose mask equals this (0 or 1) move */
    float *counts;         /* optional n per-element update counts, in place of step */
} mrt_adam_params;

/*
 * Adam/AdamW on theta[0..n) with moment buffers m and v. With update_moments 0
 * (grad may then be NULL) the stored moments are applied again, as a drifting
 * part does between its updates. AdamW's decoupled decay acts on every apply.
 * With p->mask, an element whose mask is not mask_on keeps its theta, m, v
 * and count. With p->counts, each element's bias correction uses its own
 * count of moment updates (a whole number below 2^24, and an update adds 1)
 * instead of step, and an element whose count is still 0 does not move: an
 * element that joins a part late starts its bias correction from 1. A count
 * that is not such a number is an error (on CUDA that element is left
 * alone, because the kernel cannot report it).
 */
int mrt_adam_update(mrt_ctx *ctx, float *theta, const float *grad, float *m, float *v,
                    int64_t n, const mrt_adam_params *p);

/* dst[0..n) := mean of srcs[0..count)[0..n); dst may be one of srcs. */
int mrt_average(mrt_ctx *ctx, float *dst, const float *const *srcs, int count, int64_t n);

/* y[0..n) := y*mask elementwise (mask entries 0 or 1). */
int mrt_mask_mul(mrt_ctx *ctx, float *y, const float *mask, int64_t n);

#endif
