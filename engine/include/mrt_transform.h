/*
 * mrt_transform.h: image transforms on whole batches x[N,C,H,W]: bilinear
 * resize, per-channel normalisation, cropping with zero padding and
 * horizontal flips, the random ones drawing from an mrt_rng.
 *
 * Tensors live on the context's device. The small per-call arrays (channel
 * means, per-image offsets and flips) are host memory, and a backend copies
 * them to its device when it needs them there. Random draws happen on the
 * host in image order, so a seed gives the same crops on every device.
 */
#ifndef MRT_TRANSFORM_H
#define MRT_TRANSFORM_H

#include "mrt_tensor.h"

/*
 * y[N,C,OH,OW] := x[N,C,H,W] resized bilinearly, the output size taken from
 * y. Computes what torch.nn.functional.interpolate(mode='bilinear',
 * align_corners=False, antialias=False) computes in PyTorch 1.13 on a CPU
 * with FMA (bit for bit), which is what torchvision 0.14's Resize does to
 * float tensors. y must not overlap x.
 */
int mrt_resize_bilinear(mrt_ctx *ctx, const mrt_tensor *x, mrt_tensor *y);

/*
 * y := (x - mean[c]) / std[c] per channel c of x[N,C,...] (2 to 8
 * dimensions, channels in dimension 2), as torchvision's Normalize. mean and
 * std are host arrays of C floats; every std must be nonzero. y may be x.
 */
int mrt_normalize(mrt_ctx *ctx, const mrt_tensor *x, const float *mean, const float *std,
                  mrt_tensor *y);

/*
 * Crops a window of y's size from each image: y[n,c,i,j] := x[n,c,top[n]+i,
 * left[n]+j], with j mirrored to OW-1-j first when flip[n] is nonzero, and 0
 * where the window leaves the image (zero padding). top and left may be
 * negative; NULL means 0 for every image, and a NULL flip flips nothing.
 * top, left and flip are host arrays of N entries. y must not overlap x.
 */
int mrt_crop_flip(mrt_ctx *ctx, const mrt_tensor *x, const int32_t *top /* optional */,
                  const int32_t *left /* optional */, const uint8_t *flip /* optional */,
                  mrt_tensor *y);

/*
 * torchvision's RandomCrop(size = (OH, OW), padding = pad) on each image:
 * pads x with pad zeros on every side, then takes the window at row
 * floor(u*(H+2*pad-OH+1)) and column floor(u*(W+2*pad-OW+1)), two uniform
 * draws u from rng per image, row first, images in order. y must not
 * overlap x.
 */
int mrt_random_crop(mrt_ctx *ctx, const mrt_tensor *x, int32_t pad, mrt_rng *rng,
                    mrt_tensor *y);

/*
 * torchvision's RandomHorizontalFlip(p): flips image n when its uniform
 * draw from rng is below p (one draw per image, in order). y has x's shape
 * and must not overlap x.
 */
int mrt_random_hflip(mrt_ctx *ctx, const mrt_tensor *x, double p, mrt_rng *rng, mrt_tensor *y);

#endif
