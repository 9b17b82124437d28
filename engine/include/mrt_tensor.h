/*
 * mrt_tensor.h: float32 tensor descriptors and the elementwise ops on them.
 *
 * A tensor is a descriptor of a contiguous, row-major float32 array on one
 * device. It does not own its memory: the Lua layer allocates storage with
 * mrt_alloc, points descriptors (whole tensors or views into flat parameter
 * buffers) at it, and frees it when the last reference goes.
 */
#ifndef MRT_TENSOR_H
#define MRT_TENSOR_H

#include "mrt_core.h"

typedef struct mrt_tensor {
    float *data;           /* first element, on `device` */
    int64_t shape[8];      /* sizes of the first `ndim` dimensions */
    int64_t numel;         /* product of the sizes */
    int32_t ndim;          /* 0 (scalar) to 8 */
    int32_t device;        /* enum mrt_device */
} mrt_tensor;

/* Sets shape and numel; fails when ndim > 8 or a size is negative. */
int mrt_tensor_set_shape(mrt_tensor *t, int ndim, const int64_t *shape);
/* Writes "[2,3,4]" into buf (always NUL-terminated); returns buf. */
const char *mrt_tensor_shape_str(const mrt_tensor *t, char *buf, int buflen);
/* 1 when both shapes are equal. */
int mrt_tensor_same_shape(const mrt_tensor *a, const mrt_tensor *b);

/* dst := src; same numel, any devices. */
int mrt_tensor_copy(mrt_ctx *ctx, mrt_tensor *dst, const mrt_tensor *src);
/* t := value. */
int mrt_fill(mrt_ctx *ctx, mrt_tensor *t, float value);
/* y := alpha*x + beta*y (beta = 0 ignores the old contents of y). */
int mrt_axpby(mrt_ctx *ctx, float alpha, const mrt_tensor *x, float beta, mrt_tensor *y);
/* y := a + b (residual addition), all the same shape. */
int mrt_add(mrt_ctx *ctx, const mrt_tensor *a, const mrt_tensor *b, mrt_tensor *y);
/* y := x * mask elementwise. */
int mrt_mul(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *mask, mrt_tensor *y);
/* Sum, sum of squares and max |x| in float64 (for checks and norms). */
int mrt_sum(mrt_ctx *ctx, const mrt_tensor *x, double *sum /* out */);
int mrt_sumsq(mrt_ctx *ctx, const mrt_tensor *x, double *sumsq /* out */);
/* 1 in *bad when any element is NaN or infinite. */
int mrt_nonfinite(mrt_ctx *ctx, const mrt_tensor *x, int *bad /* out */);

#endif
