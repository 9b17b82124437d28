/*
 * dnnl_common.h: what the CPU backend's oneDNN files (dnnl_state.c,
 * dnnl_conv.c, dnnl_matmul.c) share: the per-context oneDNN state with its
 * caches of primitives, error mapping and execution helpers. Only
 * compiled with MRT_HAVE_DNNL.
 */
#ifndef MRT_DNNL_COMMON_H
#define MRT_DNNL_COMMON_H

#include <dnnl.h>

#include "cpu.h"

/* Scratch slot for oneDNN's scratchpads (conv2d.c's im2col uses 0 to 2). */
#define MRT_DNNL_SLOT 3
/* Primitives kept per context and kind; a network has one per distinct layer shape and batch. */
#define MRT_DNNL_MAX_PLANS 64

struct conv_plan;
struct matmul_plan;

/* A context's oneDNN engine and stream, and its caches of prepared primitives ("plans"). */
typedef struct mrt_dnnl_state {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_attr_t attr;         /* user-managed scratchpad */
    struct conv_plan *conv_plans[MRT_DNNL_MAX_PLANS];
    int conv_count;
    struct matmul_plan *matmul_plans[MRT_DNNL_MAX_PLANS];
    int matmul_count;
    unsigned long clock;                /* counts plan look-ups, for least-recently-used eviction */
} mrt_dnnl_state;

/* Fails with a message for a oneDNN status: NYI when unimplemented. */
int mrt_dnnl_fail(const char *fn, const char *call, dnnl_status_t status);

#define MRT_DNNL_TRY(fn, call)                                                                     \
    do {                                                                                           \
        dnnl_status_t mrt_dnnl_status_ = (call);                                                   \
        if (mrt_dnnl_status_ != dnnl_success)                                                      \
            return mrt_dnnl_fail(fn, #call, mrt_dnnl_status_);                                     \
    } while (0)

/* Returns the context's state, creating the engine and stream on first use. */
int mrt_dnnl_state_of(mrt_ctx *ctx, const char *fn, mrt_dnnl_state **out);
/* Creates a memory object over md without storage; set its handle before use. */
int mrt_dnnl_memory_new(const char *fn, mrt_dnnl_state *st, const dnnl_memory_desc_t *md,
                        dnnl_memory_t *out);
int mrt_dnnl_set_handle(const char *fn, dnnl_memory_t m, const void *data);
/* Runs a primitive and waits for it (the CPU stream runs in order). */
int mrt_dnnl_run(const char *fn, mrt_dnnl_state *st, dnnl_primitive_t prim, int nargs,
                 const dnnl_exec_arg_t *args);
/*
 * Points a scratchpad memory object (NULL when the primitive needs none) at
 * the context's scratch slot and appends its argument to args.
 */
int mrt_dnnl_bind_scratch(const char *fn, mrt_ctx *ctx, dnnl_memory_t scratch, size_t bytes,
                          dnnl_exec_arg_t *args, int *nargs);
/* Creates the scratchpad memory of a primitive descriptor (NULL when it needs none). */
int mrt_dnnl_scratch_new(const char *fn, mrt_dnnl_state *st, const_dnnl_primitive_desc_t pd,
                         dnnl_memory_t *out, size_t *bytes);

/* Frees every plan of one kind (dnnl_conv.c, dnnl_matmul.c). */
void mrt_dnnl_conv_plans_free(mrt_dnnl_state *st);
void mrt_dnnl_matmul_plans_free(mrt_dnnl_state *st);

#endif
