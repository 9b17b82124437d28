/*
 * conv_layouts.c: times oneDNN's convolution kernels on the layer shapes of
 * the benchmark's ResNets (batch 128) with NCHW, channels-last (NHWC) and
 * oneDNN-chosen blocked activations, forward, input gradient and weight
 * gradient, and prints the kernel oneDNN picked and its GFLOP/s. It is the
 * measurement behind mrt's choice of channels-last activations
 * (docs/performance.md).
 *
 *    cc -O2 -fopenmp tests/bench/conv_layouts.c -o build/conv_layouts -ldnnl
 *    OMP_NUM_THREADS=2 build/conv_layouts [small|resnet18]
 *
 * Each time is the median of 9 runs after 2 warm-up runs.
 */
#define _POSIX_C_SOURCE 199309L
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static dnnl_engine_t engine;
static dnnl_stream_t stream;

static void check(dnnl_status_t status, const char *call)
{
    if (status != dnnl_success) {
        fprintf(stderr, "conv_layouts: %s failed with status %d\n", call, (int)status);
        exit(1);
    }
}

#define CHECK(call) check((call), #call)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A memory object over md with its own storage, filled with small values. */
static dnnl_memory_t filled(const dnnl_memory_desc_t *md)
{
    dnnl_memory_t m;
    void *data;
    size_t n = dnnl_memory_desc_get_size(md) / sizeof(float);

    CHECK(dnnl_memory_create(&m, md, engine, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_get_data_handle(m, &data));
    for (size_t i = 0; i < n; i++)
        ((float *)data)[i] = (float)(i % 17) * 0.01f - 0.08f;
    return m;
}

/* Median milliseconds of one primitive over 9 runs. */
static double time_ms(const_dnnl_primitive_desc_t pd, int arg_a, int arg_b, int arg_c)
{
    dnnl_primitive_t prim;
    double times[9];
    const dnnl_query_t query[3] = {dnnl_query_exec_arg_md, dnnl_query_exec_arg_md,
                                   dnnl_query_exec_arg_md};
    const int args[3] = {arg_a, arg_b, arg_c};
    dnnl_exec_arg_t exec[3];

    for (int i = 0; i < 3; i++) {
        exec[i].arg = args[i];
        exec[i].memory = filled(dnnl_primitive_desc_query_md(pd, query[i], args[i]));
    }
    CHECK(dnnl_primitive_create(&prim, pd));
    for (int r = 0; r < 11; r++) {
        double t0 = now();
        CHECK(dnnl_primitive_execute(prim, stream, 3, exec));
        CHECK(dnnl_stream_wait(stream));
        if (r >= 2)
            times[r - 2] = now() - t0;
    }
    qsort(times, 9, sizeof times[0], compare);
    dnnl_primitive_destroy(prim);
    for (int i = 0; i < 3; i++)
        dnnl_memory_destroy(exec[i].memory);
    return times[4] * 1e3;
}

static const char *layout_name(dnnl_format_tag_t tag)
{
    if (tag == dnnl_nchw)
        return "nchw";
    if (tag == dnnl_nhwc)
        return "nhwc";
    return "blocked";
}

static const char *impl(const_dnnl_primitive_desc_t pd)
{
    const char *name;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name));
    return name;
}

/* One layer: c input channels of h x h, o output channels, k x k kernel, stride s, pad p. */
static void layer(int c, int h, int o, int k, int s, int p, dnnl_format_tag_t tag)
{
    const int n = 128, oh = (h + 2 * p - k) / s + 1;
    dnnl_dims_t src_dims = {n, c, h, h}, w_dims = {o, c, k, k}, dst_dims = {n, o, oh, oh};
    dnnl_dims_t strides = {s, s}, pad = {p, p};
    dnnl_memory_desc_t src, w, dst;
    dnnl_convolution_desc_t fwd, bwd_data, bwd_weights;
    dnnl_primitive_desc_t fwd_pd, data_pd, weights_pd;

    CHECK(dnnl_memory_desc_init_by_tag(&src, 4, src_dims, dnnl_f32, tag));
    CHECK(dnnl_memory_desc_init_by_tag(&dst, 4, dst_dims, dnnl_f32, tag));
    CHECK(dnnl_memory_desc_init_by_tag(&w, 4, w_dims, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_convolution_forward_desc_init(&fwd, dnnl_forward_training,
                                             dnnl_convolution_direct, &src, &w, NULL, &dst,
                                             strides, pad, pad));
    CHECK(dnnl_primitive_desc_create(&fwd_pd, &fwd, NULL, engine, NULL));
    CHECK(dnnl_convolution_backward_data_desc_init(&bwd_data, dnnl_convolution_direct, &src, &w,
                                                   &dst, strides, pad, pad));
    CHECK(dnnl_primitive_desc_create(&data_pd, &bwd_data, NULL, engine, fwd_pd));
    CHECK(dnnl_convolution_backward_weights_desc_init(&bwd_weights, dnnl_convolution_direct,
                                                      &src, &w, NULL, &dst, strides, pad, pad));
    CHECK(dnnl_primitive_desc_create(&weights_pd, &bwd_weights, NULL, engine, fwd_pd));
    const double flop = 2.0 * n * o * oh * oh * c * k * k;
    const double t_fwd = time_ms(fwd_pd, DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST);
    const double t_data = time_ms(data_pd, DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS,
                                  DNNL_ARG_DIFF_SRC);
    const double t_weights = time_ms(weights_pd, DNNL_ARG_SRC, DNNL_ARG_DIFF_DST,
                                     DNNL_ARG_DIFF_WEIGHTS);
    printf("%-7s c%4d %2dx%-2d o%4d k%d s%d | fwd %6.2f ms %4.0f GF/s | dx %6.2f ms %4.0f GF/s | "
           "dw %6.2f ms %4.0f GF/s | %s, %s, %s\n",
           layout_name(tag), c, h, h, o, k, s,
           t_fwd, flop / t_fwd / 1e6, t_data, flop / t_data / 1e6, t_weights,
           flop / t_weights / 1e6, impl(fwd_pd), impl(data_pd), impl(weights_pd));
    dnnl_primitive_desc_destroy(fwd_pd);
    dnnl_primitive_desc_destroy(data_pd);
    dnnl_primitive_desc_destroy(weights_pd);
}

int main(int argc, char **argv)
{
    /* c, h, o, k, s, p of each distinct layer */
    static const int small[][6] = {{1, 28, 16, 3, 1, 1},  {16, 28, 16, 3, 1, 1},
                                   {16, 28, 32, 3, 2, 1}, {32, 14, 32, 3, 1, 1},
                                   {16, 28, 32, 1, 2, 0}, {32, 14, 64, 3, 2, 1},
                                   {64, 7, 64, 3, 1, 1},  {32, 14, 64, 1, 2, 0}};
    static const int resnet18[][6] = {{3, 32, 64, 7, 2, 3},    {64, 8, 64, 3, 1, 1},
                                      {64, 8, 128, 3, 2, 1},   {128, 4, 128, 3, 1, 1},
                                      {64, 8, 128, 1, 2, 0},   {128, 4, 256, 3, 2, 1},
                                      {256, 2, 256, 3, 1, 1},  {128, 4, 256, 1, 2, 0},
                                      {256, 2, 512, 3, 2, 1},  {512, 1, 512, 3, 1, 1},
                                      {256, 2, 512, 1, 2, 0}};
    const int use_small = argc < 2 || strcmp(argv[1], "resnet18") != 0;
    const int (*layers)[6] = use_small ? small : resnet18;
    const int count = use_small ? (int)(sizeof small / sizeof small[0])
                                : (int)(sizeof resnet18 / sizeof resnet18[0]);
    const dnnl_format_tag_t tags[3] = {dnnl_nchw, dnnl_nhwc, dnnl_format_tag_any};

    CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < count; i++)
            layer(layers[i][0], layers[i][1], layers[i][2], layers[i][3], layers[i][4],
                  layers[i][5], tags[t]);
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    return 0;
}
