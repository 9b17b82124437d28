/*
 * dnnl_conv.c: the CPU backend's channels-last convolution through oneDNN
 * (built with MRT_HAVE_DNNL): forward, input gradient and weight gradient.
 *
 * oneDNN picks its kernels at run time for the CPU (AVX-512, AVX2, ...) and
 * for the layout. Its direct kernels on channels-last data run several
 * times faster than on NCHW data (docs/performance.md has the figures), so
 * channels-last calls come here and NCHW calls stay on the im2col path of
 * conv2d.c.
 *
 * Kernel taps that read only padding for every output position contribute
 * nothing, so a plan drops them: a 3x3 convolution with padding 1 on a 1x1
 * input becomes a 1x1 convolution. The kept taps go to a contiguous buffer
 * of the plan before the weight reorder, because oneDNN reorders from a
 * strided view of the whole kernel several times slower. Dropped taps get a
 * weight gradient of 0. When the kept taps cover the whole input and the
 * output has one position (ResNet18's last stage on 32x32 images), the
 * convolution is the matrix product y[N,O] = x[N,H*W*C] w'[O,H*W*C]^T, with
 * w' the kept taps in [O,H,W,C] order. It then runs as one
 * (mrt_cpu_matmul), which beats oneDNN's convolution kernels on such shapes.
 *
 * Each distinct problem (shapes, stride, padding, dilation, bias) gets a
 * plan: its primitives, the reorders of the weights between mrt's
 * [O,C,KH,KW] and the blocked layout the kernels want, and the buffers for
 * the reordered weights. A context keeps up to MRT_DNNL_MAX_PLANS plans
 * and evicts the least recently used, so steady-state steps create and
 * allocate nothing. Scratch memory that a kernel needs comes from the
 * context's scratch slot MRT_DNNL_SLOT. oneDNN threads with OpenMP, the same
 * pool as the engine's own loops.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#ifdef MRT_HAVE_DNNL

#include "dnnl_common.h"

/* Everything that defines one convolution problem. */
typedef struct conv_key {
    int64_t n, c, h, w, o, kh, kw, oh, ow;
    int32_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int32_t has_bias;
} conv_key;

/* The oneDNN objects of one direction: forward, backward data or backward weights. */
typedef struct conv_pass {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t scratch;      /* handle set to the context's scratch at each call */
    size_t scratch_bytes;
    /* The weights (or weight gradient) in the kernel's layout, with the
     * reorder from (or to) mrt's [O,C,KH,KW]; reorder is NULL and weights
     * a view of the caller's array when the layouts agree. */
    dnnl_memory_t weights;
    dnnl_primitive_t reorder;
} conv_pass;

/*
 * The kernel taps that a plan keeps, rows [tap_h, tap_h + kh) and columns
 * [tap_w, tap_w + kw) of the caller's kernel, and the padding that goes
 * with them.
 */
typedef struct conv_crop {
    int64_t tap_h, tap_w, kh, kw;
    dnnl_dims_t pad_l, pad_r;
} conv_crop;

typedef struct conv_plan {
    conv_key key;
    unsigned long last_use;
    conv_crop crop;
    int cropped;                /* 1 when taps were dropped */
    int gemm;                   /* 1 when the convolution is a matrix product (see above) */
    /* The kept taps of a cropped or gemm plan, [O,C,kh,kw] or for gemm [O,kh,kw,C]; else NULL. */
    float *kept;
    /* user_weights_md is [O,C,KH,KW] in mrt's layout, or the kept taps [O,C,kh,kw]. */
    dnnl_memory_desc_t src_md, dst_md, user_weights_md, bias_md;
    dnnl_memory_t src, dst, bias, user_weights;   /* caller arrays, handles set per call */
    conv_pass fwd, bwd_data, bwd_weights;
} conv_plan;

/* ---- plans ----------------------------------------------------------------- */

static void pass_free(conv_pass *pass)
{
    if (pass->reorder != NULL)
        dnnl_primitive_destroy(pass->reorder);
    if (pass->weights != NULL)
        dnnl_memory_destroy(pass->weights);
    if (pass->scratch != NULL)
        dnnl_memory_destroy(pass->scratch);
    if (pass->prim != NULL)
        dnnl_primitive_destroy(pass->prim);
    if (pass->pd != NULL)
        dnnl_primitive_desc_destroy(pass->pd);
    memset(pass, 0, sizeof *pass);
}

static void plan_free(conv_plan *plan)
{
    if (plan == NULL)
        return;
    pass_free(&plan->fwd);
    pass_free(&plan->bwd_data);
    pass_free(&plan->bwd_weights);
    dnnl_memory_t mems[] = {plan->src, plan->dst, plan->bias, plan->user_weights};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i] != NULL)
            dnnl_memory_destroy(mems[i]);
    free(plan->kept);
    free(plan);
}

void mrt_dnnl_conv_plans_free(mrt_dnnl_state *st)
{
    for (int i = 0; i < st->conv_count; i++)
        plan_free(st->conv_plans[i]);
    st->conv_count = 0;
}

static conv_key key_of(const mrt_conv2d_params *p, const mrt_tensor *x, const mrt_tensor *w,
                       int has_bias)
{
    conv_key k;

    memset(&k, 0, sizeof k);     /* the padding bytes take part in memcmp */
    k.n = x->shape[0];
    k.h = x->shape[1];
    k.w = x->shape[2];
    k.c = x->shape[3];
    k.o = w->shape[0];
    k.kh = w->shape[2];
    k.kw = w->shape[3];
    k.oh = mrt_conv2d_out_size(k.h, (int32_t)k.kh, p->stride_h, p->pad_h, p->dilation_h);
    k.ow = mrt_conv2d_out_size(k.w, (int32_t)k.kw, p->stride_w, p->pad_w, p->dilation_w);
    k.stride_h = p->stride_h;
    k.stride_w = p->stride_w;
    k.pad_h = p->pad_h;
    k.pad_w = p->pad_w;
    k.dilation_h = p->dilation_h;
    k.dilation_w = p->dilation_w;
    k.has_bias = has_bias;
    return k;
}

/*
 * Sets [*first, *last) to the taps of one kernel dimension that read an
 * input position for at least one output position; empty when none do.
 */
static void tap_range(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                      int64_t dilation, int64_t *first, int64_t *last)
{
    *first = kernel;
    *last = 0;
    for (int64_t i = 0; i < kernel; i++)
        for (int64_t o = 0; o < out; o++) {
            const int64_t pos = o * stride - pad + i * dilation;
            if (pos >= 0 && pos < in) {
                *first = i < *first ? i : *first;
                *last = i + 1;
                break;
            }
        }
}

/*
 * Crops one dimension to its taps that read input: sets *tap, *size and the
 * paddings, or keeps the whole kernel when the crop would need negative
 * padding or would not give the same output size under oneDNN's rule.
 */
static void crop_dim(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                     int64_t dilation, int64_t *tap, int64_t *size, dnnl_dim_t *pad_l,
                     dnnl_dim_t *pad_r)
{
    int64_t first, last;

    *tap = 0;
    *size = kernel;
    *pad_l = *pad_r = pad;
    tap_range(in, out, kernel, stride, pad, dilation, &first, &last);
    if (first >= last || (first == 0 && last == kernel))
        return;
    const int64_t left = pad - first * dilation, span = (last - first - 1) * dilation + 1;
    int64_t right = (out - 1) * stride + span - in - left;
    right = right > 0 ? right : 0;
    if (left < 0 || (in + left + right - span) / stride + 1 != out)
        return;
    *tap = first;
    *size = last - first;
    *pad_l = left;
    *pad_r = right;
}

static conv_crop crop_of(const conv_key *k)
{
    conv_crop c;

    memset(&c, 0, sizeof c);
    crop_dim(k->h, k->oh, k->kh, k->stride_h, k->pad_h, k->dilation_h, &c.tap_h, &c.kh,
             &c.pad_l[0], &c.pad_r[0]);
    crop_dim(k->w, k->ow, k->kw, k->stride_w, k->pad_w, k->dilation_w, &c.tap_w, &c.kw,
             &c.pad_l[1], &c.pad_r[1]);
    return c;
}

static int plan_new(const char *fn, mrt_dnnl_state *st, const conv_key *k, conv_plan **out)
{
    conv_plan *plan = calloc(1, sizeof *plan);
    dnnl_dims_t src_dims = {k->n, k->c, k->h, k->w}, dst_dims = {k->n, k->o, k->oh, k->ow};
    dnnl_dims_t bias_dims = {k->o};

    if (plan == NULL)
        return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    *out = plan;
    plan->key = *k;
    plan->crop = crop_of(k);
    plan->cropped = plan->crop.kh != k->kh || plan->crop.kw != k->kw;
    plan->gemm = k->oh == 1 && k->ow == 1 && plan->crop.kh == k->h && plan->crop.kw == k->w &&
                 plan->crop.pad_l[0] == 0 && plan->crop.pad_l[1] == 0 &&
                 plan->crop.pad_r[0] == 0 && plan->crop.pad_r[1] == 0 && k->dilation_h == 1 &&
                 k->dilation_w == 1;
    if (plan->cropped || plan->gemm) {
        plan->kept = malloc((size_t)(k->o * k->c * plan->crop.kh * plan->crop.kw) *
                            sizeof(float));
        if (plan->kept == NULL)
            return mrt_fail(MRT_ENOMEM, "%s: out of memory", fn);
    }
    dnnl_dims_t w_dims = {k->o, k->c, plan->crop.kh, plan->crop.kw};
    MRT_DNNL_TRY(fn, dnnl_memory_desc_init_by_tag(&plan->src_md, 4, src_dims, dnnl_f32, dnnl_nhwc));
    MRT_DNNL_TRY(fn, dnnl_memory_desc_init_by_tag(&plan->dst_md, 4, dst_dims, dnnl_f32, dnnl_nhwc));
    MRT_DNNL_TRY(fn, dnnl_memory_desc_init_by_tag(&plan->user_weights_md, 4, w_dims, dnnl_f32,
                                                  dnnl_oihw));
    MRT_DNNL_TRY(fn, dnnl_memory_desc_init_by_tag(&plan->bias_md, 1, bias_dims, dnnl_f32, dnnl_a));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &plan->src_md, &plan->src));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &plan->dst_md, &plan->dst));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &plan->bias_md, &plan->bias));
    MRT_TRY(mrt_dnnl_memory_new(fn, st, &plan->user_weights_md, &plan->user_weights));
    return MRT_OK;
}

/* Returns the plan for key, creating it (and evicting the least recently used) when new. */
static int plan_get(const char *fn, mrt_dnnl_state *st, const conv_key *k, conv_plan **out)
{
    st->clock++;
    for (int i = 0; i < st->conv_count; i++) {
        if (memcmp(&st->conv_plans[i]->key, k, sizeof *k) == 0) {
            st->conv_plans[i]->last_use = st->clock;
            *out = st->conv_plans[i];
            return MRT_OK;
        }
    }
    int slot = st->conv_count;
    if (st->conv_count == MRT_DNNL_MAX_PLANS) {
        slot = 0;
        for (int i = 1; i < st->conv_count; i++)
            if (st->conv_plans[i]->last_use < st->conv_plans[slot]->last_use)
                slot = i;
        plan_free(st->conv_plans[slot]);
        st->conv_plans[slot] = NULL;
    } else {
        st->conv_count++;
    }
    conv_plan *plan = NULL;
    int status = plan_new(fn, st, k, &plan);
    if (status != MRT_OK) {
        plan_free(plan);
        st->conv_plans[slot] = st->conv_plans[st->conv_count - 1];
        st->conv_count--;
        return status;
    }
    plan->last_use = st->clock;
    st->conv_plans[slot] = plan;
    *out = plan;
    return MRT_OK;
}

/* Strides, dilations (oneDNN counts them from 0) and paddings of a key. */
typedef struct conv_geometry {
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_geometry;

static conv_geometry geometry_of(const conv_plan *plan)
{
    const conv_key *k = &plan->key;
    conv_geometry g;

    memset(&g, 0, sizeof g);
    g.strides[0] = k->stride_h;
    g.strides[1] = k->stride_w;
    g.dilates[0] = k->dilation_h - 1;
    g.dilates[1] = k->dilation_w - 1;
    for (int i = 0; i < 2; i++) {
        g.pad_l[i] = plan->crop.pad_l[i];
        g.pad_r[i] = plan->crop.pad_r[i];
    }
    return g;
}

/* The weights of the kept taps in the layout the kernel chooses. */
static int any_weights_md(const char *fn, const conv_plan *plan, dnnl_memory_desc_t *md)
{
    dnnl_dims_t dims = {plan->key.o, plan->key.c, plan->crop.kh, plan->crop.kw};

    MRT_DNNL_TRY(fn, dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, dnnl_format_tag_any));
    return MRT_OK;
}

/*
 * Finishes a pass whose primitive descriptor is set: creates the
 * primitive, its scratchpad memory, and the weights memory in the layout
 * the kernel wants (weights_query) with the reorder between it and mrt's
 * layout, in the direction to_user.
 */
static int pass_finish(const char *fn, mrt_dnnl_state *st, conv_plan *plan, conv_pass *pass,
                       dnnl_query_t weights_query, int to_user)
{
    const dnnl_memory_desc_t *weights_md = dnnl_primitive_desc_query_md(pass->pd,
                                                                         weights_query, 0);

    MRT_DNNL_TRY(fn, dnnl_primitive_create(&pass->prim, pass->pd));
    MRT_TRY(mrt_dnnl_scratch_new(fn, st, pass->pd, &pass->scratch, &pass->scratch_bytes));
    if (dnnl_memory_desc_equal(weights_md, &plan->user_weights_md)) {
        MRT_TRY(mrt_dnnl_memory_new(fn, st, weights_md, &pass->weights));
        return MRT_OK;
    }
    MRT_DNNL_TRY(fn, dnnl_memory_create(&pass->weights, weights_md, st->engine,
                                    DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t reorder_pd;
    const dnnl_memory_desc_t *from = to_user ? weights_md : &plan->user_weights_md;
    const dnnl_memory_desc_t *to = to_user ? &plan->user_weights_md : weights_md;
    MRT_DNNL_TRY(fn, dnnl_reorder_primitive_desc_create(&reorder_pd, from, st->engine, to,
                                                    st->engine, NULL));
    dnnl_status_t status = dnnl_primitive_create(&pass->reorder, reorder_pd);
    dnnl_primitive_desc_destroy(reorder_pd);
    MRT_DNNL_TRY(fn, status);
    return MRT_OK;
}

static int forward_pass(const char *fn, mrt_dnnl_state *st, conv_plan *plan)
{
    const conv_geometry g = geometry_of(plan);
    dnnl_memory_desc_t any_weights;
    dnnl_convolution_desc_t desc;

    if (plan->fwd.prim != NULL)
        return MRT_OK;
    MRT_TRY(any_weights_md(fn, plan, &any_weights));
    MRT_DNNL_TRY(fn, dnnl_dilated_convolution_forward_desc_init(
                     &desc, dnnl_forward_training, dnnl_convolution_direct, &plan->src_md,
                     &any_weights, plan->key.has_bias ? &plan->bias_md : NULL, &plan->dst_md,
                     g.strides, g.dilates, g.pad_l, g.pad_r));
    MRT_DNNL_TRY(fn, dnnl_primitive_desc_create(&plan->fwd.pd, &desc, st->attr, st->engine, NULL));
    return pass_finish(fn, st, plan, &plan->fwd, dnnl_query_weights_md, 0);
}

static int backward_data_pass(const char *fn, mrt_dnnl_state *st, conv_plan *plan)
{
    const conv_geometry g = geometry_of(plan);
    dnnl_memory_desc_t any_weights;
    dnnl_convolution_desc_t desc;

    if (plan->bwd_data.prim != NULL)
        return MRT_OK;
    MRT_TRY(forward_pass(fn, st, plan));
    MRT_TRY(any_weights_md(fn, plan, &any_weights));
    MRT_DNNL_TRY(fn, dnnl_dilated_convolution_backward_data_desc_init(
                     &desc, dnnl_convolution_direct, &plan->src_md, &any_weights,
                     &plan->dst_md, g.strides, g.dilates, g.pad_l, g.pad_r));
    MRT_DNNL_TRY(fn, dnnl_primitive_desc_create(&plan->bwd_data.pd, &desc, st->attr, st->engine,
                                            plan->fwd.pd));
    return pass_finish(fn, st, plan, &plan->bwd_data, dnnl_query_weights_md, 0);
}

static int backward_weights_pass(const char *fn, mrt_dnnl_state *st, conv_plan *plan)
{
    const conv_geometry g = geometry_of(plan);
    dnnl_memory_desc_t any_weights;
    dnnl_convolution_desc_t desc;

    if (plan->bwd_weights.prim != NULL)
        return MRT_OK;
    MRT_TRY(forward_pass(fn, st, plan));
    MRT_TRY(any_weights_md(fn, plan, &any_weights));
    MRT_DNNL_TRY(fn, dnnl_dilated_convolution_backward_weights_desc_init(
                     &desc, dnnl_convolution_direct, &plan->src_md, &any_weights, NULL,
                     &plan->dst_md, g.strides, g.dilates, g.pad_l, g.pad_r));
    MRT_DNNL_TRY(fn, dnnl_primitive_desc_create(&plan->bwd_weights.pd, &desc, st->attr,
                                            st->engine, plan->fwd.pd));
    return pass_finish(fn, st, plan, &plan->bwd_weights, dnnl_query_diff_weights_md, 1);
}

/* ---- execution --------------------------------------------------------------- */

/* Index in the plan's buffer of kept tap (i, j) of kernel plane (o, c). */
static int64_t kept_index(const conv_plan *plan, int64_t o, int64_t c, int64_t i, int64_t j)
{
    const conv_crop *crop = &plan->crop;

    if (plan->gemm)
        return ((o * crop->kh + i) * crop->kw + j) * plan->key.c + c;
    return ((o * plan->key.c + c) * crop->kh + i) * crop->kw + j;
}

/*
 * Copies the kept taps of mrt's kernel w[O,C,KH,KW] to the plan's buffer.
 * The loops run over (o, c) without a division per plane, and a single kept
 * tap, the common case, is a plain strided copy.
 */
static void gather_kept(const conv_plan *plan, const float *w)
{
    const conv_key *k = &plan->key;
    const conv_crop *c = &plan->crop;
    const int64_t taps = k->kh * k->kw, planes = k->o * k->c;
    const int64_t first = c->tap_h * k->kw + c->tap_w;

    if (c->kh == 1 && c->kw == 1) {
        /* kept_index(o, ch, 0, 0) is o*C + ch in both layouts, the plane's index. */
        float *kept = plan->kept;
#pragma omp parallel for simd if (planes > 32768) schedule(static)
        for (int64_t plane = 0; plane < planes; plane++)
            kept[plane] = w[plane * taps + first];
        return;
    }
    if (plan->gemm) {
        /* kept[O,kh,kw,C]: write along C, read one tap of consecutive planes. */
#pragma omp parallel for if (planes * taps > 32768) schedule(static)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t i = 0; i < c->kh; i++)
                for (int64_t j = 0; j < c->kw; j++) {
                    const float *from = w + o * k->c * taps + first + i * k->kw + j;
                    float *to = plan->kept + ((o * c->kh + i) * c->kw + j) * k->c;
                    for (int64_t ch = 0; ch < k->c; ch++)
                        to[ch] = from[ch * taps];
                }
        return;
    }
#pragma omp parallel for if (planes * taps > 32768) schedule(static)
    for (int64_t o = 0; o < k->o; o++)
        for (int64_t ch = 0; ch < k->c; ch++) {
            const float *full = w + (o * k->c + ch) * taps;
            for (int64_t i = 0; i < c->kh; i++)
                for (int64_t j = 0; j < c->kw; j++)
                    plan->kept[kept_index(plan, o, ch, i, j)] =
                        full[(c->tap_h + i) * k->kw + c->tap_w + j];
        }
}

/* w := beta*w, then w += the plan's buffer on the kept taps (beta = 0 ignores the old w). */
static void scatter_kept(const conv_plan *plan, float *w, float beta)
{
    const conv_key *k = &plan->key;
    const conv_crop *c = &plan->crop;
    const int64_t taps = k->kh * k->kw;

#pragma omp parallel for if (k->o * k->c * taps > 32768) schedule(static)
    for (int64_t o = 0; o < k->o; o++)
        for (int64_t ch = 0; ch < k->c; ch++) {
            float *full = w + (o * k->c + ch) * taps;
            for (int64_t q = 0; q < taps; q++)
                full[q] = beta == 0.0f ? 0.0f : beta * full[q];
            for (int64_t i = 0; i < c->kh; i++)
                for (int64_t j = 0; j < c->kw; j++)
                    full[(c->tap_h + i) * k->kw + c->tap_w + j] +=
                        plan->kept[kept_index(plan, o, ch, i, j)];
        }
}

/* Makes pass->weights hold w's kept taps, reordered when the kernel wants another layout. */
static int load_weights(const char *fn, mrt_dnnl_state *st, conv_plan *plan, conv_pass *pass,
                        const float *w)
{
    if (plan->cropped) {
        gather_kept(plan, w);
        w = plan->kept;
    }
    if (pass->reorder == NULL)
        return mrt_dnnl_set_handle(fn, pass->weights, w);
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->user_weights, w));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, plan->user_weights},
                               {DNNL_ARG_TO, pass->weights}};
    return mrt_dnnl_run(fn, st, pass->reorder, 2, args);
}

static int plan_for(mrt_ctx *ctx, const char *fn, const mrt_conv2d_params *p,
                    const mrt_tensor *x, const mrt_tensor *w, int has_bias, mrt_dnnl_state **st,
                    conv_plan **plan)
{
    const conv_key k = key_of(p, x, w, has_bias);

    MRT_TRY(mrt_dnnl_state_of(ctx, fn, st));
    return plan_get(fn, *st, &k, plan);
}

int mrt_cpu_dnnl_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                                const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    static const char fn[] = "mrt_conv2d_forward";
    mrt_dnnl_state *st;
    conv_plan *plan = NULL;
    dnnl_exec_arg_t args[5];
    int nargs = 0;

    MRT_TRY(plan_for(ctx, fn, p, x, w, b != NULL, &st, &plan));
    if (plan->gemm) {
        /* y[N,O] := x[N,H*W*C] kept[O,H*W*C]^T + b */
        gather_kept(plan, w->data);
        return mrt_cpu_matmul(ctx, fn, 0, 1, plan->key.n, plan->key.o, x->numel / plan->key.n,
                              x->data, plan->kept, b != NULL ? b->data : NULL, 0.0f, y->data);
    }
    MRT_TRY(forward_pass(fn, st, plan));
    MRT_TRY(load_weights(fn, st, plan, &plan->fwd, w->data));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->src, x->data));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->dst, y->data));
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, plan->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, plan->fwd.weights};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, plan->dst};
    if (b != NULL) {
        MRT_TRY(mrt_dnnl_set_handle(fn, plan->bias, b->data));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, plan->bias};
    }
    MRT_TRY(mrt_dnnl_bind_scratch(fn, ctx, plan->fwd.scratch, plan->fwd.scratch_bytes, args,
                                  &nargs));
    return mrt_dnnl_run(fn, st, plan->fwd.prim, nargs, args);
}

static int backward_data(mrt_ctx *ctx, mrt_dnnl_state *st, conv_plan *plan, const float *dy,
                         const float *w, float *dx)
{
    static const char fn[] = "mrt_conv2d_backward";
    const conv_key *k = &plan->key;
    dnnl_exec_arg_t args[4];
    int nargs = 0;

    if (plan->gemm) {
        /* dx[N,H*W*C] := dy[N,O] kept[O,H*W*C] */
        gather_kept(plan, w);
        return mrt_cpu_matmul(ctx, fn, 0, 0, k->n, k->h * k->w * k->c, k->o, dy, plan->kept, NULL,
                              0.0f, dx);
    }
    MRT_TRY(backward_data_pass(fn, st, plan));
    MRT_TRY(load_weights(fn, st, plan, &plan->bwd_data, w));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->dst, dy));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->src, dx));
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, plan->dst};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, plan->bwd_data.weights};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, plan->src};
    MRT_TRY(mrt_dnnl_bind_scratch(fn, ctx, plan->bwd_data.scratch, plan->bwd_data.scratch_bytes,
                                  args, &nargs));
    return mrt_dnnl_run(fn, st, plan->bwd_data.prim, nargs, args);
}

/* dw := beta*dw + the weight gradient, in mrt's [O,C,KH,KW] layout. */
static int backward_weights(mrt_ctx *ctx, mrt_dnnl_state *st, conv_plan *plan, const float *dy,
                            const float *x, float beta, float *dw)
{
    static const char fn[] = "mrt_conv2d_backward";
    conv_pass *pass = &plan->bwd_weights;
    const conv_key *k = &plan->key;
    const int64_t count = k->o * k->c * k->kh * k->kw;
    dnnl_exec_arg_t args[4];
    int nargs = 0;

    if (plan->gemm) {
        /* kept[O,H*W*C] := dy[N,O]^T x[N,H*W*C], then into dw's kept taps */
        MRT_TRY(mrt_cpu_matmul(ctx, fn, 1, 0, k->o, k->h * k->w * k->c, k->n, dy, x, NULL, 0.0f,
                               plan->kept));
        scatter_kept(plan, dw, beta);
        return MRT_OK;
    }
    MRT_TRY(backward_weights_pass(fn, st, plan));
    /*
     * The gradient lands in target: dw itself, or the kept-tap buffer of a
     * cropped plan, or with beta != 0 scratch memory, to be added to dw.
     */
    float *target = plan->cropped ? plan->kept : dw;
    if (!plan->cropped && beta != 0.0f && (target = mrt_cpu_scratch(ctx, 2, count)) == NULL)
        return MRT_ENOMEM;
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->src, x));
    MRT_TRY(mrt_dnnl_set_handle(fn, plan->dst, dy));
    if (pass->reorder == NULL)
        MRT_TRY(mrt_dnnl_set_handle(fn, pass->weights, target));
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, plan->src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, plan->dst};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, pass->weights};
    MRT_TRY(mrt_dnnl_bind_scratch(fn, ctx, pass->scratch, pass->scratch_bytes, args, &nargs));
    MRT_TRY(mrt_dnnl_run(fn, st, pass->prim, nargs, args));
    if (pass->reorder != NULL) {
        MRT_TRY(mrt_dnnl_set_handle(fn, plan->user_weights, target));
        dnnl_exec_arg_t reorder_args[2] = {{DNNL_ARG_FROM, pass->weights},
                                           {DNNL_ARG_TO, plan->user_weights}};
        MRT_TRY(mrt_dnnl_run(fn, st, pass->reorder, 2, reorder_args));
    }
    if (plan->cropped)
        scatter_kept(plan, dw, beta);
    else if (target != dw)
        mrt_cpu_accumulate(dw, target, count, beta);
    return MRT_OK;
}

int mrt_cpu_dnnl_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p,
                                 const mrt_tensor *dy, const mrt_tensor *x,
                                 const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw,
                                 float beta)
{
    mrt_dnnl_state *st;
    conv_plan *plan = NULL;

    MRT_TRY(plan_for(ctx, "mrt_conv2d_backward", p, x, w, 0, &st, &plan));
    if (dx != NULL)
        MRT_TRY(backward_data(ctx, st, plan, dy->data, w->data, dx->data));
    if (dw != NULL)
        MRT_TRY(backward_weights(ctx, st, plan, dy->data, x->data, beta, dw->data));
    return MRT_OK;
}

#else /* no oneDNN: channels-last convolutions take the transposing path of conv2d.c */

int mrt_cpu_dnnl_conv2d_forward(mrt_ctx *ctx, const mrt_conv2d_params *p, const mrt_tensor *x,
                                const mrt_tensor *w, const mrt_tensor *b, mrt_tensor *y)
{
    return mrt_fail(MRT_ENYI, "NYI: mrt_conv2d_forward: built without oneDNN");
}

int mrt_cpu_dnnl_conv2d_backward(mrt_ctx *ctx, const mrt_conv2d_params *p,
                                 const mrt_tensor *dy, const mrt_tensor *x,
                                 const mrt_tensor *w, mrt_tensor *dx, mrt_tensor *dw,
                                 float beta)
{
    return mrt_fail(MRT_ENYI, "NYI: mrt_conv2d_backward: built without oneDNN");
}

#endif
