/*
 * xent.cu: softmax cross-entropy over the rows of logits[N,C], forward and
 * backward, with the arithmetic of the CPU backend (engine/xent.c). The row
 * maximum is subtracted before exponentiating. Exponentials, sums, the loss
 * and the probabilities stay double until the final rounding. The argmax is
 * the first maximal logit.
 *
 * The forward runs one block per row (softmax, row loss, argmax test, label
 * check), then one block that adds the rows up in a fixed order. The host
 * reads back one small result struct. Labels are int32 on the device.
 */
#include <limits.h>
#include <math.h>

#include "common.cuh"

/* Bits of a row's state. */
#define ROW_CORRECT 1
#define ROW_BAD_LABEL 2

/* Maximum threads per row; rows with fewer classes get a smaller power of two. */
#define XENT_BLOCK 256

/* ---- kernels ------------------------------------------------------------ */

/*
 * Merges candidate (v, i) into (*best, *best_i) so that the result is the
 * CPU loop's argmax: the first maximal logit, where a NaN counts only at
 * index 0 (the loop starts from row[0] and compares with >). Candidates
 * never include a NaN at another index; INT64_MAX marks an empty slot.
 */
static __device__ void argmax_merge(float *best, int64_t *best_i, float v, int64_t i)
{
    if (i == INT64_MAX)
        return;
    if (*best_i == INT64_MAX || isnan(v) || (!isnan(*best) && v > *best) ||
        (v == *best && i < *best_i)) {
        *best = v;
        *best_i = i;
    }
}

/* Leaves the argmax of the block's row in shared_v[0], shared_i[0]. */
static __device__ void row_argmax(const float *z, int64_t classes, float *shared_v,
                                  int64_t *shared_i)
{
    const unsigned tid = threadIdx.x;
    float best = 0.0f;
    int64_t best_i = INT64_MAX;

    for (int64_t j = tid; j < classes; j += blockDim.x)
        if (j == 0 || !isnan(z[j]))
            argmax_merge(&best, &best_i, z[j], j);
    shared_v[tid] = best;
    shared_i[tid] = best_i;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half) {
            best = shared_v[tid];
            best_i = shared_i[tid];
            argmax_merge(&best, &best_i, shared_v[tid + half], shared_i[tid + half]);
            shared_v[tid] = best;
            shared_i[tid] = best_i;
        }
        __syncthreads();
    }
}

__global__ void xent_rows_kernel(const float *logits, const int32_t *labels, int64_t classes,
                                 float *probs, double *row_loss, int32_t *row_state)
{
    __shared__ float shared_v[XENT_BLOCK];
    __shared__ int64_t shared_i[XENT_BLOCK];
    __shared__ double shared_sum[XENT_BLOCK];
    const int64_t row = blockIdx.x;
    const float *z = logits + row * classes;
    float *p = probs + row * classes;

    row_argmax(z, classes, shared_v, shared_i);
    const double max = (double)shared_v[0];
    const int64_t argmax = shared_i[0];

    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < classes; j += blockDim.x)
        sum += exp((double)z[j] - max);
    sum = mrt_block_sum(sum, shared_sum);

    for (int64_t j = threadIdx.x; j < classes; j += blockDim.x)
        p[j] = (float)(exp((double)z[j] - max) / sum);

    if (threadIdx.x == 0) {
        const int32_t label = labels[row];
        if (label < 0 || label >= classes) {
            row_loss[row] = 0.0;
            row_state[row] = ROW_BAD_LABEL;
        } else {
            /* -log softmax(z)[label] = max + log(sum exp(z - max)) - z[label] */
            row_loss[row] = max + log(sum) - (double)z[label];
            row_state[row] = argmax == label ? ROW_CORRECT : 0;
        }
    }
}

/* Leaves the smallest of the block's values in shared[0]; blockDim.x a power of two. */
static __device__ long long block_min(long long v, long long *shared)
{
    const unsigned tid = threadIdx.x;

    shared[tid] = v;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
        if (tid < half && shared[tid + half] < shared[tid])
            shared[tid] = shared[tid + half];
        __syncthreads();
    }
    return shared[0];
}

/* One block: the mean loss, the correct count and the first bad label. */
__global__ void xent_total_kernel(const double *row_loss, const int32_t *row_state,
                                  const int32_t *labels, int64_t rows,
                                  mrt_cuda_xent_result *result)
{
    __shared__ double shared_loss[XENT_BLOCK];
    __shared__ long long shared_count[XENT_BLOCK];
    __shared__ long long shared_bad[XENT_BLOCK];
    double loss = 0.0;
    long long correct = 0, bad = LLONG_MAX;

    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        loss += row_loss[r];
        correct += (row_state[r] & ROW_CORRECT) != 0;
        if ((row_state[r] & ROW_BAD_LABEL) != 0 && r < bad)
            bad = r;
    }
    loss = mrt_block_sum(loss, shared_loss);
    correct = mrt_block_sum(correct, shared_count);
    bad = block_min(bad, shared_bad);
    if (threadIdx.x == 0) {
        result->loss = loss / (double)rows;
        result->correct = correct;
        result->bad_row = bad == LLONG_MAX ? -1 : bad;
        result->bad_label = bad == LLONG_MAX ? 0 : labels[bad];
        result->unused = 0;
    }
}

/* One block: the first label outside 0..classes-1, for the backward's check. */
__global__ void check_labels_kernel(const int32_t *labels, int64_t rows, int64_t classes,
                                    mrt_cuda_xent_result *result)
{
    __shared__ long long shared_bad[XENT_BLOCK];
    long long bad = LLONG_MAX;

    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        if ((labels[r] < 0 || labels[r] >= classes) && r < bad)
            bad = r;
    }
    bad = block_min(bad, shared_bad);
    if (threadIdx.x == 0) {
        result->loss = 0.0;
        result->correct = 0;
        result->bad_row = bad == LLONG_MAX ? -1 : bad;
        result->bad_label = bad == LLONG_MAX ? 0 : labels[bad];
        result->unused = 0;
    }
}

/* dlogits may alias probs: each element is read before it is written. */
__global__ void xent_backward_kernel(const float *probs, const int32_t *labels, int64_t rows,
                                     int64_t classes, float factor, float *dlogits)
{
    const int64_t n = rows * classes;

    for (int64_t i = mrt_thread_index(); i < n; i += mrt_grid_stride()) {
        const int64_t row = i / classes, j = i - row * classes;
        const float onehot = labels[row] == j ? 1.0f : 0.0f;
        dlogits[i] = factor * (probs[i] - onehot);
    }
}

/* ---- launchers ---------------------------------------------------------- */

int mrt_cuda_xent_forward(cudaStream_t stream, const float *logits, const int32_t *labels,
                          int64_t rows, int64_t classes, float *probs, double *row_loss,
                          int32_t *row_state, mrt_cuda_xent_result *result)
{
    MRT_LAUNCHER_ASSERT(rows >= 1 && rows <= INT32_MAX, "mrt_cuda_xent_forward",
                        "row count outside 1..2^31-1 (one block per row)", rows);
    MRT_LAUNCHER_ASSERT(classes >= 1, "mrt_cuda_xent_forward", "class count below 1", classes);
    const int block = mrt_block_for(classes, XENT_BLOCK);
    xent_rows_kernel<<<(unsigned)rows, block, 0, stream>>>(logits, labels, classes, probs,
                                                           row_loss, row_state);
    int status = MRT_LAUNCH_CHECK("xent_rows_kernel");
    if (status != MRT_OK)
        return status;
    xent_total_kernel<<<1, XENT_BLOCK, 0, stream>>>(row_loss, row_state, labels, rows, result);
    return MRT_LAUNCH_CHECK("xent_total_kernel");
}

int mrt_cuda_check_labels(cudaStream_t stream, const int32_t *labels, int64_t rows,
                          int64_t classes, mrt_cuda_xent_result *result)
{
    MRT_LAUNCHER_ASSERT(rows >= 0, "mrt_cuda_check_labels", "negative row count", rows);
    check_labels_kernel<<<1, XENT_BLOCK, 0, stream>>>(labels, rows, classes, result);
    return MRT_LAUNCH_CHECK("check_labels_kernel");
}

int mrt_cuda_xent_backward(cudaStream_t stream, const float *probs, const int32_t *labels,
                           int64_t rows, int64_t classes, float scale, float *dlogits)
{
    MRT_LAUNCHER_ASSERT(rows >= 1, "mrt_cuda_xent_backward", "row count below 1", rows);
    MRT_LAUNCHER_ASSERT(classes >= 1, "mrt_cuda_xent_backward", "class count below 1", classes);
    const int64_t n = rows * classes;
    /* Rounded once from double, as the CPU backend computes it. */
    const float factor = (float)((double)scale / (double)rows);
    xent_backward_kernel<<<mrt_grid_for(n, MRT_BLOCK), MRT_BLOCK, 0, stream>>>(
        probs, labels, rows, classes, factor, dlogits);
    return MRT_LAUNCH_CHECK("xent_backward_kernel");
}
