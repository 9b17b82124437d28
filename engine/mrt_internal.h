/*
 * mrt_internal.h: what the engine's source files share and users never see:
 * the error funnel, the backend table every op dispatches through, and the
 * layout of an engine context.
 *
 * A public op in engine/<module>.c checks its arguments (shapes, devices,
 * options), then calls ctx->backend-><op>. The CPU backend lives in
 * engine/cpu_*.c; the CUDA backend is a second library, libmrt_cuda.so,
 * loaded on demand, whose mrt_cuda_backend() returns the same table.
 */
#ifndef MRT_INTERNAL_H
#define MRT_INTERNAL_H

#include "include/mrt_core.h"
#include "include/mrt_nn.h"
#include "include/mrt_optim.h"
#include "include/mrt_tensor.h"

#if defined(__GNUC__)
#define MRT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MRT_PRINTF(a, b)
#endif

/* Stores a formatted message for mrt_error_message() and returns status. */
int mrt_fail(int status, const char *fmt, ...) MRT_PRINTF(2, 3);
/* Sends a formatted line to the log callback, if one is set. */
void mrt_log(int level, const char *fmt, ...) MRT_PRINTF(2, 3);

/* Returns from the calling function when a status is not MRT_OK. */
#define MRT_TRY(expr)                                                                              \
    do {                                                                                           \
        int mrt_try_status_ = (expr);                                                              \
        if (mrt_try_status_ != MRT_OK)                                                             \
            return mrt_try_status_;                                                                \
    } while (0)

/* Calls the context's backend for an op, or fails with NYI when it has none. */
#define MRT_DISPATCH(ctx, op, ...)                                                                 \
    ((ctx)->backend->op != NULL                                                                    \
         ? (ctx)->backend->op((ctx), __VA_ARGS__)                                                  \
         : mrt_fail(MRT_ENYI, "NYI: %s on the %s backend", #op, (ctx)->backend->name))

/* Checks that a tensor argument is present, on the context's device, with ndim dims. */
int mrt_check_tensor(const mrt_ctx *ctx, const char *fn, const char *name, const mrt_tensor *t,
                     int ndim);
/* Checks a tensor's shape against expected sizes (-1 matches any size). */
int mrt_check_shape(const char *fn, const char *name, const mrt_tensor *t, int ndim,
                    const int64_t *expected);

typedef struct mrt_backend {
    const char *name;
    int device;

    void *(*alloc)(int64_t nbytes);
    void (*free)(void *ptr);
    int (*ctx_init)(mrt_ctx *ctx);        /* fills ctx->impl */
    void (*ctx_free)(mrt_ctx *ctx);
    int (*sync)(mrt_ctx *ctx);
    /* Copies between this backend's device and the CPU, or within the device. */
    int (*memcpy)(int dst_device, void *dst, int src_device, const void *src, int64_t nbytes);

    int (*fill)(mrt_ctx *ctx, mrt_tensor *t, float value);
    int (*axpby)(mrt_ctx *ctx, float alpha, const mrt_tensor *x, float beta, mrt_tensor *y);
    int (*add)(mrt_ctx *ctx, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *y);
    int (*mul)(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *mask, mrt_tensor *y);
    int (*sum)(mrt_ctx *ctx, const mrt_tensor *x, double *sum);
    int (*sumsq)(mrt_ctx *ctx, const mrt_tensor *x, double *sumsq);
    int (*nonfinite)(mrt_ctx *ctx, const mrt_tensor *x, int *bad);

    int (*linear_forward)(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                          const mrt_tensor *b, mrt_tensor *y);
    int (*linear_backward)(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                           const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw, mrt_tensor *db,
                           float beta);
    int (*conv2d_forward)(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                          const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y);
    int (*conv2d_backward)(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                           const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx,
                           mrt_tensor *dw, mrt_tensor *db, float beta);
    int (*batchnorm_forward)(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                             const mrt_tensor *beta_, mrt_tensor *running_mean,
                             mrt_tensor *running_var, mrt_tensor *save_mean,
                             mrt_tensor *save_invstd, mrt_tensor *y, int training,
                             int update_running, double momentum, double eps);
    int (*batchnorm_backward)(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                              const mrt_tensor *gamma, const mrt_tensor *save_mean,
                              const mrt_tensor *save_invstd, mrt_tensor *dx, mrt_tensor *dgamma,
                              mrt_tensor *dbeta, float beta);
    int (*relu_forward)(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
    int (*relu_backward)(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y,
                         mrt_tensor *dx);
    int (*maxpool2d_forward)(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                             mrt_tensor *y);
    int (*maxpool2d_backward)(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                              const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx);
    int (*avgpool2d_forward)(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                             mrt_tensor *y);
    int (*avgpool2d_backward)(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                              mrt_tensor *dx);
    int (*global_avgpool_forward)(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
    int (*global_avgpool_backward)(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx);
    int (*xent_forward)(mrt_ctx *ctx, const mrt_tensor *logits, const int32_t *labels,
                        mrt_tensor *probs, double *loss, int64_t *correct);
    int (*xent_backward)(mrt_ctx *ctx, const mrt_tensor *probs, const int32_t *labels,
                         float scale, mrt_tensor *dlogits);

    int (*sgd_update)(mrt_ctx *ctx, float *theta, const float *grad, float *buffer, int64_t n,
                      const mrt_sgd_params *p, mrt_rng *rng);
    int (*adam_update)(mrt_ctx *ctx, float *theta, const float *grad, float *m, float *v,
                       int64_t n, const mrt_adam_params *p);
    int (*average)(mrt_ctx *ctx, float *dst, const float *const *srcs, int count, int64_t n);
    int (*mask_mul)(mrt_ctx *ctx, float *y, const float *mask, int64_t n);

    /* Image transforms (mrt_transform.h); the host arrays stay on the host. */
    int (*resize_bilinear)(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
    int (*normalize)(mrt_ctx *ctx, const mrt_tensor *x, const float *mean, const float *std,
                     mrt_tensor *y);
    int (*crop_flip)(mrt_ctx *ctx, const mrt_tensor *x, const int32_t *top, const int32_t *left,
                     const uint8_t *flip, mrt_tensor *y);

    /* Channels-last layout (mrt_nn.h): 1 when conv2d, pooling and global average
     * pooling take channels-last operands; 0 (a table without it) makes them NYI. */
    int channels_last;
    int (*to_channels_last)(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
    int (*to_channels_first)(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
    /* Fused batch normalisation, residual sum and ReLU (mrt_nn.h); y is NULL
     * in backward unless the forward ended in ReLU. Optional: NULL is NYI. */
    int (*batchnorm_act_forward)(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                                 const mrt_tensor *beta_, mrt_tensor *running_mean,
                                 mrt_tensor *running_var, mrt_tensor *save_mean,
                                 mrt_tensor *save_invstd, const mrt_tensor *residual,
                                 mrt_tensor *y, int training, int update_running,
                                 double momentum, double eps, int relu);
    int (*batchnorm_act_backward)(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                                  const mrt_tensor *y, const mrt_tensor *gamma,
                                  const mrt_tensor *save_mean, const mrt_tensor *save_invstd,
                                  mrt_tensor *dx, mrt_tensor *dresidual, mrt_tensor *dgamma,
                                  mrt_tensor *dbeta, float beta);
} mrt_backend;

struct mrt_ctx {
    const mrt_backend *backend;
    int device;
    int deterministic;
    int allow_tf32;
    void *impl;                 /* backend-owned: scratch arenas, library handles */
};

/* The CPU backend's table (engine/cpu_backend.c). */
const mrt_backend *mrt_cpu_backend(void);
/* Exported by libmrt_cuda.so. */
typedef const mrt_backend *(*mrt_cuda_backend_fn)(void);

#endif
