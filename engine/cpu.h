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

/*
 * Scratch memory of a CPU context: grows to the largest request and is
 * reused, so steady-state steps allocate nothing. Valid until the next call
 * with the same slot.
 */
enum { MRT_CPU_SCRATCH_SLOTS = 4 };
float *mrt_cpu_scratch(mrt_ctx *ctx, int slot, int64_t count);

#endif
