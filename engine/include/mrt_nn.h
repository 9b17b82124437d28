/*
 * mrt_nn.h: forward and backward of the network layers, as functions.
 *
 * Layouts follow PyTorch: activations NCHW, linear weights [out, in],
 * convolution weights [out, in, kh, kw]. Each backward computes only the
 * outputs it is given: a NULL dx skips the input gradient and a NULL dw or db
 * skips that parameter gradient, which is how a frozen layer costs nothing.
 * Parameter gradients are combined as grad := beta*grad + new, so beta = 0
 * overwrites and beta = 1 accumulates. Activation gradients are overwritten.
 */
#ifndef MRT_NN_H
#define MRT_NN_H

#include "mrt_tensor.h"

/* y[N,O] := x[N,I] w[O,I]^T + b[O] (b optional). */
int mrt_linear_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *w,
                       const mrt_tensor *b /* optional */, mrt_tensor *y);
int mrt_linear_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                        const mrt_tensor *w, mrt_tensor *dx /* optional */,
                        mrt_tensor *dw /* optional */, mrt_tensor *db /* optional */, float beta);

typedef struct mrt_conv2d_params {
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;
    int32_t dilation_h, dilation_w;   /* 1 for a plain convolution */
    int32_t groups;                   /* 1; other values are NYI */
    int32_t channels_last;            /* 1: x [N,H,W,C], y and dy [N,OH,OW,O]; 0: NCHW */
} mrt_conv2d_params;

/*
 * y[N,O,OH,OW] := conv(x[N,C,H,W], w[O,C,KH,KW]) + b[O] (b optional). With
 * p->channels_last = 1 the activations are channels-last, x [N,H,W,C] and
 * y [N,OH,OW,O], while w keeps its [O,C,KH,KW] layout.
 */
int mrt_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                       const mrt_tensor *w, const mrt_tensor *b /* optional */, mrt_tensor *y);
int mrt_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *dy,
                        const mrt_tensor *x, const mrt_tensor *w, mrt_tensor *dx /* optional */,
                        mrt_tensor *dw /* optional */, mrt_tensor *db /* optional */, float beta);
/*
 * Output size of one spatial dimension, or -1 when the input is too small or
 * an argument is out of range (kernel, stride or dilation below 1, pad below 0).
 */
int64_t mrt_conv2d_out_size(int64_t in, int32_t kernel, int32_t stride, int32_t pad,
                            int32_t dilation);

/*
 * Batch normalisation over N,H,W per channel of x[N,C,H,W] (or x[N,C]).
 * Training: normalises with the batch statistics, stores the batch mean and
 * 1/sqrt(var+eps) in save_mean[C] and save_invstd[C] for backward, and, when
 * update_running is 1, sets running := (1-momentum)*running + momentum*batch
 * with the unbiased batch variance, as PyTorch does. Evaluation uses the
 * running statistics and leaves save_* untouched.
 */
int mrt_batchnorm_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                          const mrt_tensor *beta_, mrt_tensor *running_mean,
                          mrt_tensor *running_var, mrt_tensor *save_mean /* out */,
                          mrt_tensor *save_invstd /* out */, mrt_tensor *y, int training,
                          int update_running, double momentum, double eps);
/* Backward of a training-mode forward. */
int mrt_batchnorm_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                           const mrt_tensor *gamma, const mrt_tensor *save_mean,
                           const mrt_tensor *save_invstd, mrt_tensor *dx /* optional */,
                           mrt_tensor *dgamma /* optional */, mrt_tensor *dbeta /* optional */,
                           float beta);

/*
 * Batch normalisation, then the sum with a residual (optional, x's shape)
 * and ReLU (when relu is 1), in one pass: y := relu(bn(x) + residual). The
 * other arguments are those of mrt_batchnorm_forward. y may be x or the
 * residual; with y = x no backward can follow, because it needs x.
 */
int mrt_batchnorm_act_forward(mrt_ctx *ctx, const mrt_tensor *x, const mrt_tensor *gamma,
                              const mrt_tensor *beta_, mrt_tensor *running_mean,
                              mrt_tensor *running_var, mrt_tensor *save_mean /* out */,
                              mrt_tensor *save_invstd /* out */,
                              const mrt_tensor *residual /* optional */, mrt_tensor *y,
                              int training, int update_running, double momentum, double eps,
                              int relu);
/*
 * Backward of a training-mode mrt_batchnorm_act_forward. y is its output,
 * needed when relu is 1 (dy counts where y > 0, or y is NaN). dresidual
 * receives the residual's gradient, dy masked by the ReLU. dx may be dy.
 */
int mrt_batchnorm_act_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *x,
                               const mrt_tensor *y /* optional unless relu */,
                               const mrt_tensor *gamma, const mrt_tensor *save_mean,
                               const mrt_tensor *save_invstd, mrt_tensor *dx /* optional */,
                               mrt_tensor *dresidual /* optional */,
                               mrt_tensor *dgamma /* optional */, mrt_tensor *dbeta /* optional */,
                               float beta, int relu);
/* 1 when the context's backend implements the two fused ops above, else 0. */
int mrt_batchnorm_act_supported(const mrt_ctx *ctx);

int mrt_relu_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
/* dx := dy where y > 0, else 0; dx may alias dy. */
int mrt_relu_backward(mrt_ctx *ctx, const mrt_tensor *dy, const mrt_tensor *y, mrt_tensor *dx);

typedef struct mrt_pool2d_params {
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;
    int32_t count_include_pad;  /* average pooling: divide by the full window (PyTorch default) */
    int32_t ceil_mode;          /* 0 (PyTorch default); 1 is NYI */
    int32_t channels_last;      /* 1: x [N,H,W,C] and y [N,OH,OW,C]; 0: NCHW */
} mrt_pool2d_params;

/* Max pooling; padded positions never win. Ties go to the first index. */
int mrt_maxpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                          mrt_tensor *y);
int mrt_maxpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                           const mrt_tensor *x, const mrt_tensor *y, mrt_tensor *dx);
int mrt_avgpool2d_forward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *x,
                          mrt_tensor *y);
int mrt_avgpool2d_backward(mrt_ctx *ctx, const mrt_pool2d_params *p, const mrt_tensor *dy,
                           mrt_tensor *dx);

/*
 * y[N,C] := mean of x[N,C,H,W] over H and W. A 3-D x[N,S,C] is a
 * channels-last activation [N,H,W,C] viewed with S = H*W positions, and y
 * is its mean over S.
 */
int mrt_global_avgpool_forward(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
int mrt_global_avgpool_backward(mrt_ctx *ctx, const mrt_tensor *dy, mrt_tensor *dx);

/*
 * Mean softmax cross-entropy of logits[N,C] against labels[N] (0..C-1).
 * Stores the softmax in probs[N,C] for backward, the mean loss in *loss and
 * the number of rows whose argmax equals the label in *correct (either may
 * be NULL). A label outside 0..C-1 is an error.
 */
int mrt_xent_forward(mrt_ctx *ctx, const mrt_tensor *logits, const int32_t *labels,
                     mrt_tensor *probs, double *loss /* optional out */,
                     int64_t *correct /* optional out */);
/* dlogits := scale*(probs - onehot(labels))/N; scale is the loss weight, usually 1. */
int mrt_xent_backward(mrt_ctx *ctx, const mrt_tensor *probs, const int32_t *labels, float scale,
                      mrt_tensor *dlogits);

/*
 * Channels-last layout. A channels-last activation is a row-major [N,H,W,C]
 * tensor. Convolution and pooling take one when the channels_last field of
 * their parameters is 1, global average pooling when x is 3-D [N,S,C], and
 * batch normalisation takes it viewed as [N*H*W, C]. The CPU backend's
 * convolutions are fastest in this layout.
 */
/* 1 when the context's backend accepts channels-last operands, else 0. */
int mrt_channels_last_supported(const mrt_ctx *ctx);
/* y[N,H,W,C] := x[N,C,H,W]; y must not share storage with x. */
int mrt_to_channels_last(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);
/* y[N,C,H,W] := x[N,H,W,C]; y must not share storage with x. */
int mrt_to_channels_first(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);

#endif
