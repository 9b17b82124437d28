/*
 * cuda_kernels.h: the launchers of the CUDA kernels under kernels/, callable
 * from the backend's C files.
 *
 * Every launcher takes the stream to queue on, checks its sizes, sizes its
 * grid with a ceil-div, launches, and returns MRT_OK or the status of a
 * failed launch (with the message set through mrt_fail). The kernels run
 * asynchronously, so an error inside a kernel surfaces at the next checked
 * CUDA call on that stream. Pointers are device pointers unless a comment
 * states otherwise, and sizes are element counts.
 */
#ifndef MRT_CUDA_KERNELS_H
#define MRT_CUDA_KERNELS_H

#include <math.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "../include/mrt_optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors, defined in cuda_backend.c ----------------------------------- */

/* Fails with the pending launch error of `kernel`, if any (cudaGetLastError). */
int mrt_cuda_check_launch(const char *kernel, const char *file, int line);
/* Fails with MRT_EINVAL for a launcher called with sizes it cannot run. */
int mrt_cuda_fail_launcher(const char *launcher, const char *problem, long long value);

/* ---- elementwise.cu ------------------------------------------------------ */

int mrt_cuda_fill(cudaStream_t stream, float *y, int64_t n, float value);
/* y := alpha*x + beta*y; beta = 0 writes alpha*x without reading y. */
int mrt_cuda_axpby(cudaStream_t stream, float alpha, const float *x, float beta, float *y,
                   int64_t n);
int mrt_cuda_add(cudaStream_t stream, const float *a, const float *b, float *y, int64_t n);
/* y := x*mask elementwise; y may alias x. */
int mrt_cuda_mul(cudaStream_t stream, const float *x, const float *mask, float *y, int64_t n);
int mrt_cuda_relu_forward(cudaStream_t stream, const float *x, float *y, int64_t n);
/* dx := dy where y > 0, else 0; dx may alias dy. */
int mrt_cuda_relu_backward(cudaStream_t stream, const float *dy, const float *y, float *dx,
                           int64_t n);
/* y[rows,cols] := row[cols] in every row. */
int mrt_cuda_fill_rows(cudaStream_t stream, const float *row, float *y, int64_t rows,
                       int64_t cols);
/*
 * out[c] := beta*out[c] + sum of x[a,c,b] over a < outer and b < inner, for
 * x[outer,channels,inner]: the bias gradient of linear (inner = 1) and of
 * convolution (inner = OH*OW). Sums in double in a fixed order.
 */
int mrt_cuda_channel_sum(cudaStream_t stream, const float *x, int64_t outer, int64_t channels,
                         int64_t inner, float beta, float *out);

/* ---- reduce.cu ----------------------------------------------------------- */

/* Blocks of the first reduction pass; `partials` must hold this many doubles. */
enum { MRT_CUDA_REDUCE_BLOCKS = 1024 };

/*
 * *out := sum of x[0..n) (squares = 0) or of x[i]^2 (squares = 1), in double,
 * in an order fixed by n alone. out is a device pointer.
 */
int mrt_cuda_sum(cudaStream_t stream, const float *x, int64_t n, int squares, double *partials,
                 double *out);
/* Sets *flag to 1 when some x[i] is NaN or infinite; the caller zeroes *flag first. */
int mrt_cuda_nonfinite(cudaStream_t stream, const float *x, int64_t n, int32_t *flag);

/* ---- xent.cu ------------------------------------------------------------- */

/* What the loss forward returns to the host. */
typedef struct mrt_cuda_xent_result {
    double loss;          /* mean over the rows of -log softmax(logits)[label] */
    int64_t correct;      /* rows whose first maximal logit is the label's */
    int64_t bad_row;      /* first row with a label outside 0..C-1, or -1 */
    int32_t bad_label;    /* that row's label */
    int32_t unused;
} mrt_cuda_xent_result;

/*
 * probs[N,C] := softmax(logits[N,C]) by rows and *result as above, for
 * N >= 1. row_loss and row_state hold N entries of scratch.
 */
int mrt_cuda_xent_forward(cudaStream_t stream, const float *logits, const int32_t *labels,
                          int64_t rows, int64_t classes, float *probs, double *row_loss,
                          int32_t *row_state, mrt_cuda_xent_result *result);
/* Sets result->bad_row and result->bad_label for the first label outside 0..C-1 (row -1: none). */
int mrt_cuda_check_labels(cudaStream_t stream, const int32_t *labels, int64_t rows,
                          int64_t classes, mrt_cuda_xent_result *result);
/*
 * dlogits := factor*(probs - onehot(labels)) with factor = scale/N rounded
 * once to float; dlogits may alias probs.
 */
int mrt_cuda_xent_backward(cudaStream_t stream, const float *probs, const int32_t *labels,
                           int64_t rows, int64_t classes, float scale, float *dlogits);

/* ---- pool.cu ------------------------------------------------------------- */

/* Geometry of a 2-D pooling: x[n,c,h,w] to y[n,c,oh,ow]. */
typedef struct mrt_cuda_pool_shape {
    int64_t n, c, h, w, oh, ow;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;
    int32_t count_include_pad;
    int32_t unused;
} mrt_cuda_pool_shape;

/* Ties go to the first position of the window in row-major order; a NaN wins. */
int mrt_cuda_maxpool2d_forward(cudaStream_t stream, const mrt_cuda_pool_shape *s, const float *x,
                               float *y);
/* dx := dy routed to the position the forward picked; overwrites dx. */
int mrt_cuda_maxpool2d_backward(cudaStream_t stream, const mrt_cuda_pool_shape *s,
                                const float *dy, const float *x, const float *y, float *dx);
int mrt_cuda_avgpool2d_forward(cudaStream_t stream, const mrt_cuda_pool_shape *s, const float *x,
                               float *y);
int mrt_cuda_avgpool2d_backward(cudaStream_t stream, const mrt_cuda_pool_shape *s,
                                const float *dy, float *dx);
/* y[planes] := mean of each plane of x[planes, plane_size]. */
int mrt_cuda_global_avgpool_forward(cudaStream_t stream, const float *x, int64_t planes,
                                    int64_t plane_size, float *y);
int mrt_cuda_global_avgpool_backward(cudaStream_t stream, const float *dy, int64_t planes,
                                     int64_t plane_size, float *dx);

/* ---- optim.cu ------------------------------------------------------------ */

/*
 * One SGD update of theta[0..n) as mrt_sgd_update documents. When
 * p->noise_std > 0 and p->update_buffer is 1, element i draws its normal
 * from words counter + 2i and counter + 2i + 1 of the Philox stream `seed`;
 * the caller advances the counter by 2n. buffer may be NULL only with
 * update_buffer and momentum 0.
 */
int mrt_cuda_sgd_update(cudaStream_t stream, float *theta, const float *grad, float *buffer,
                        int64_t n, const mrt_sgd_params *p, uint64_t seed, uint64_t counter);

/* Adam/AdamW factors that depend on the step only, computed on the host. */
typedef struct mrt_cuda_adam_factors {
    float step_size;       /* lr / (1 - beta1^step) */
    float bias2_sqrt;      /* sqrt(1 - beta2^step) */
    float decay;           /* 1 - lr*weight_decay, used by AdamW only */
} mrt_cuda_adam_factors;

/* The factors in double, rounded once, as the CPU backend and PyTorch (Python floats) do. */
static inline mrt_cuda_adam_factors mrt_cuda_adam_factors_for(const mrt_adam_params *p)
{
    mrt_cuda_adam_factors f;
    const double step = p->step > 0 ? (double)p->step : 1.0;  /* unused with counts */

    f.step_size = (float)((double)p->lr / (1.0 - pow(p->beta1, step)));
    f.bias2_sqrt = (float)sqrt(1.0 - pow(p->beta2, step));
    f.decay = (float)(1.0 - (double)p->lr * (double)p->weight_decay);
    return f;
}

int mrt_cuda_adam_update(cudaStream_t stream, float *theta, const float *grad, float *m, float *v,
                         int64_t n, const mrt_adam_params *p, const mrt_cuda_adam_factors *f);

/* Most source buffers one average launch takes. */
enum { MRT_CUDA_AVERAGE_MAX = 64 };

/* dst := mean of srcs[0..count)[0..n); srcs is a host array of device pointers. */
int mrt_cuda_average(cudaStream_t stream, float *dst, const float *const *srcs, int count,
                     int64_t n);

/* ---- transform.cu -------------------------------------------------------- */

/* y[planes,oh,ow] := x[planes,h,w] resized bilinearly, as mrt_resize_bilinear. */
int mrt_cuda_resize_bilinear(cudaStream_t stream, const float *x, int64_t planes, int64_t h,
                             int64_t w, int64_t oh, int64_t ow, float *y);
/* y := (x - mean[c]) / std[c] for x[N,channels,inner]; mean and std on the device; y may be x. */
int mrt_cuda_normalize(cudaStream_t stream, const float *x, const float *mean, const float *std,
                       int64_t numel, int64_t channels, int64_t inner, float *y);
/* The window crop of mrt_crop_flip; top, left and flip on the device, each NULL for zeros. */
int mrt_cuda_crop_flip(cudaStream_t stream, const float *x, int64_t n, int64_t channels,
                       int64_t h, int64_t w, const int32_t *top, const int32_t *left,
                       const uint8_t *flip, int64_t oh, int64_t ow, float *y);

#ifdef __cplusplus
}
#endif

#endif
