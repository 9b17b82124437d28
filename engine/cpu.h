/*
 * cpu.h: the CPU backend's op implementations, one group per source file.
 * Arguments are already checked by the public wrappers when these run.
 */
#ifndef MRT_CPU_H
#define MRT_CPU_H

#include "mrt_internal.h"

/* cpu_backend.c */
int mrt_cpu_fill(mrt_ctx *ctx, mrt_tensor *t, float value);
int mrt_cpu_axpby(mrt_ctx *ctx, float alpha, const mrt_tensor *x, float beta, mrt_tensor *y);
int mrt_cpu_add(mrt_ctx *ctx, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *y);
int mrt_cpu_mul(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *mask, mrt_tensor *y);
int mrt_cpu_sum(mrt_ctx *ctx, const mrt_tensor *x, double *sum);
int mrt_cpu_sumsq(mrt_ctx *ctx, const mrt_tensor *x, double *sumsq);
int mrt_cpu_nonfinite(mrt_ctx *ctx, const mrt_tensor *x, int *bad);

/* optim.c */
int mrt_cpu_sgd_update(mrt_ctx *ctx, float *theta, const float *grad, float *buffer, int64_t n,
                       const mrt_sgd_params *p, mrt_rng *rng);
int mrt_cpu_adam_update(mrt_ctx *ctx, float *theta, const float *grad, float *m, float *v,
                        int64_t n, const mrt_adam_params *p);
int mrt_cpu_average(mrt_ctx *ctx, float *dst, const float *const *srcs, int count, int64_t n);
int mrt_cpu_mask_mul(mrt_ctx *ctx, float *y, const float *mask, int64_t n);
int mrt_cpu_masked_sgd(mrt_ctx *ctx, float *theta, const float *grad, const float *mask,
                       int64_t n, float lr_a, float lr_b, float weight_decay);

/*
 * Scratch memory of a CPU context: grows to the largest request and is
 * reused, so steady-state steps allocate nothing. Valid until the next call
 * with the same slot.
 */
enum { MRT_CPU_SCRATCH_SLOTS = 4 };
float *mrt_cpu_scratch(mrt_ctx *ctx, int slot, int64_t count);

/* linear.c */
int mrt_cpu_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                           const mrt_tensor *b, mrt_tensor *y);
int mrt_cpu_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                            const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                            float beta);

/* conv2d.c: uses scratch slots 0 to 2 */
int mrt_cpu_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                           const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y);
int mrt_cpu_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                            const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                            mrt_tensor *dw, mrt_tensor *db, float beta);

/* batchnorm.c */
int mrt_cpu_batchnorm_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                              const mrt_tensor *beta_, mrt_tensor *running_mean,
                              mrt_tensor *running_var, mrt_tensor *save_mean,
                              mrt_tensor *save_invstd, mrt_tensor *y, int training,
                              int update_running, double momentum, double eps);
int mrt_cpu_batchnorm_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                               const mrt_tensor *gamma, const mrt_tensor *save_mean,
                               const mrt_tensor *save_invstd, mrt_tensor *dx,
                               mrt_tensor *dgamma, mrt_tensor *dbeta, float beta);

/* activation.c */
int mrt_cpu_relu_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
int mrt_cpu_relu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y,
                          mrt_tensor *dx);

/* pool.c */
int mrt_cpu_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                              mrt_tensor *y);
int mrt_cpu_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                               const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx);
int mrt_cpu_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                              mrt_tensor *y);
int mrt_cpu_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                               mrt_tensor *dx);
int mrt_cpu_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
int mrt_cpu_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx);

/* xent.c */
int mrt_cpu_xent_forward(mrt_ctx *ctx, const mrt_tensor *logits, const int32_t *labels,
                         mrt_tensor *probs, double *loss, int64_t *correct);
int mrt_cpu_xent_backward(mrt_ctx *ctx, const mrt_tensor *probs, const int32_t *labels,
                          float scale, mrt_tensor *dlogits);

/* transform.c */
int mrt_cpu_resize_bilinear(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
int mrt_cpu_normalize(mrt_ctx *ctx, const mrt_tensor *x, const float *mean, const float *std,
                      mrt_tensor *y);
int mrt_cpu_crop_flip(mrt_ctx *ctx, const mrt_tensor *x, const int32_t *top, const int32_t *left,
                      const uint8_t *flip, mrt_tensor *y);

#endif
