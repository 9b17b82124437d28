/*
 * portable.cuh: MRT_HD marks the per-element functions that kernels call and
 * that a plain C++ compiler can also build, so tests/gpu/host_check.cu runs
 * the kernels' arithmetic against the CPU backend on a machine without a GPU.
 */
#ifndef MRT_KERNELS_PORTABLE_CUH
#define MRT_KERNELS_PORTABLE_CUH

#ifdef __CUDACC__
#define MRT_HD __host__ __device__ __forceinline__
#else
#define MRT_HD static inline
#endif

#endif
