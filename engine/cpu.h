/*
 * cpu.h: the CPU backend's op implementations, one group per source file.
 * Arguments are already checked by the public wrappers when these run.
 */
#ifndef MRT_CPU_H
#define MRT_CPU_H

#include "mrt_internal.h"

/*
 * MRT_CPU_CLONES compiles a kernel for AVX-512 (x86-64-v4), AVX2 with FMA
 * (x86-64-v3) and baseline x86-64, and the loader picks the best one the
 * CPU supports, so one build runs everywhere and uses wide vectors where
 * they exist. Elsewhere it compiles the function once.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MRT_CPU_CLONES                                                                             \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MRT_CPU_CLONES
#endif

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

/*
 * Scratch memory of a CPU context: grows to the largest request and is
 * reused, so steady-state steps allocate nothing. Valid until the next call
 * with the same slot. Slots 0 to 2: im2col convolution (and optim.c's
 * Langevin noise in slot 0); 3: oneDNN scratchpads; MRT_CPU_REDUCE_SLOT:
 * per-thread partial sums; MRT_CPU_LAYOUT_SLOT: NCHW copies of
 * channels-last operands.
 */
enum { MRT_CPU_REDUCE_SLOT = 4, MRT_CPU_LAYOUT_SLOT = 5, MRT_CPU_SCRATCH_SLOTS = 6 };
float *mrt_cpu_scratch(mrt_ctx *ctx, int slot, int64_t count);
/* The context's oneDNN state (dnnl_conv.c), NULL until the first oneDNN call. */
void **mrt_cpu_dnnl_slot(mrt_ctx *ctx);

/*
 * out[j] := beta*out[j] + the sum of column j of x[rows, cols] (row-major),
 * accumulated in double. The result depends on the thread count only.
 * Uses MRT_CPU_REDUCE_SLOT.
 */
int mrt_cpu_column_sums(mrt_ctx *ctx, const float *x, int64_t rows, int64_t cols, float beta,
                        float *out);
/*
 * c[m,n] := alpha*op(a) op(b) + beta*c, row-major, op transposing when
 * trans_a or trans_b is 1: oneDNN's sgemm, or OpenBLAS without oneDNN.
 * Inside a parallel region it runs on the calling thread alone, and a
 * failure's message lands in that thread's error message.
 */
int mrt_cpu_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                  int64_t ldc);
/*
 * c[m,n] := op(a) op(b) (+ bias[n] on every row) (+ beta*c when beta != 0),
 * row-major, op transposing when trans_a or trans_b is 1: oneDNN's matmul
 * primitive, cached per problem (dnnl_matmul.c), else mrt_cpu_sgemm. fn
 * names the public op in errors.
 */
int mrt_cpu_matmul(mrt_ctx *ctx, const char *fn, int trans_a, int trans_b, int64_t m, int64_t n,
                   int64_t k, const float *a, const float *b, const float *bias, float beta,
                   float *c);
/* y := beta*y + x over n elements; beta = 0 ignores the old y, even a NaN. */
void mrt_cpu_accumulate(float *y, const float *x, int64_t n, float beta);
/* Threads for a loop of n elements: 1 below a size where forking costs more than it saves. */
int mrt_cpu_threads_for(int64_t n);

/* linear.c */
int mrt_cpu_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                           const mrt_tensor *b, mrt_tensor *y);
int mrt_cpu_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                            const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                            float beta);

/* layout.c: per image, out[cols, rows] := in[rows, cols] transposed. */
void mrt_cpu_transpose_images(const float *in, float *out, int64_t images, int64_t rows,
                              int64_t cols);
int mrt_cpu_to_channels_last(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
int mrt_cpu_to_channels_first(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);

/*
 * dnnl_conv.c: channels-last convolution through oneDNN. The calls fail
 * with MRT_ENYI when the library is missing or has no kernel for a
 * problem, and conv2d.c then takes its transposing path.
 */
int mrt_cpu_dnnl_available(void);
void mrt_cpu_dnnl_free(void *state);
int mrt_cpu_dnnl_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                                const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y);
int mrt_cpu_dnnl_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p,
                                 const mrt_tensor *dy, const mrt_tensor *x,
                                 const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw,
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

int mrt_cpu_batchnorm_act_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                                  const mrt_tensor *beta_, mrt_tensor *running_mean,
                                  mrt_tensor *running_var, mrt_tensor *save_mean,
                                  mrt_tensor *save_invstd, const mrt_tensor *residual,
                                  mrt_tensor *y, int training, int update_running,
                                  double momentum, double eps, int relu);
int mrt_cpu_batchnorm_act_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                                   const mrt_tensor *y, const mrt_tensor *gamma,
                                   const mrt_tensor *save_mean, const mrt_tensor *save_invstd,
                                   mrt_tensor *dx, mrt_tensor *dresidual, mrt_tensor *dgamma,
                                   mrt_tensor *dbeta, float beta);

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
