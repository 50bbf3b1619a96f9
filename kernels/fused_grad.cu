// fused_grad.cu — the loss and all four gradients without storing the (m, n) hidden layer.
//
// With A = σ(X W1ᵀ + b1), R = A W2ᵀ + b2 − Y, Δ = (R W2) ⊙ A ⊙ (1 − A):
//
//   pass 1  gpunet_fused_residual   R (m, p), one thread per sample, the weights in
//                                   shared memory; A is computed and dropped row by row.
//   pass 2  gpunet_fused_partials   block (b, g) takes samples [b·per_block, (b+1)·per_block)
//                                   in tiles of X and R staged in shared memory; thread k of
//                                   hidden-unit group g recomputes σ for unit k and sums, in
//                                   sample order, its parts of Δᵀ X, Σ Δ, Rᵀ A; block row b
//                                   also sums Σ R and Σ ‖R‖². Each block writes one row of
//                                   partials, laid out [W1 (n·d), b1 (n), W2 (p·n), b2 (p), J].
//   pass 3  gpunet_fused_combine    sums the rows of partials in block order 0, 1, ..., B − 1.
//
// No atomics and a fixed order everywhere: the same inputs and launch give the same bits.
// The host divides by m (and J by 2m). Memory: R (m·p) and B rows of partials.
// Limits: d ≤ GPUNET_FUSED_MAX_FEATURES, p ≤ GPUNET_FUSED_MAX_OUTPUTS (held in registers),
// blockDim.x ≥ p.
#include "gpunet_math.cuh"

#define GPUNET_FUSED_MAX_FEATURES 16
#define GPUNET_FUSED_MAX_OUTPUTS 4

template <typename T>
__global__ void gpunet_fused_residual(const T* X, const T* Y, const T* w1, const T* b1,
                                      const T* w2, const T* b2, T* R,
                                      long long m, int d, int n, int p) {
    extern __shared__ __align__(16) unsigned char gpunet_shared[];
    T* s_w1 = reinterpret_cast<T*>(gpunet_shared);  // n × d
    T* s_b1 = s_w1 + n * d;                           // n
    T* s_w2 = s_b1 + n;                               // p × n
    for (int e = threadIdx.x; e < n * d; e += blockDim.x) s_w1[e] = w1[e];
    for (int e = threadIdx.x; e < n; e += blockDim.x) s_b1[e] = b1[e];
    for (int e = threadIdx.x; e < p * n; e += blockDim.x) s_w2[e] = w2[e];
    __syncthreads();

    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < m; i += stride) {
        T x[GPUNET_FUSED_MAX_FEATURES], h[GPUNET_FUSED_MAX_OUTPUTS];
#pragma unroll
        for (int c = 0; c < GPUNET_FUSED_MAX_FEATURES; ++c) x[c] = c < d ? X[i * d + c] : T(0);
#pragma unroll
        for (int j = 0; j < GPUNET_FUSED_MAX_OUTPUTS; ++j) h[j] = T(0);
        for (int k = 0; k < n; ++k) {
            T z = T(0);
#pragma unroll
            for (int c = 0; c < GPUNET_FUSED_MAX_FEATURES; ++c)
                if (c < d) z += s_w1[k * d + c] * x[c];
            const T a = gpunet_bias_sigmoid(z, s_b1[k]);
#pragma unroll
            for (int j = 0; j < GPUNET_FUSED_MAX_OUTPUTS; ++j)
                if (j < p) h[j] += s_w2[j * n + k] * a;
        }
#pragma unroll
        for (int j = 0; j < GPUNET_FUSED_MAX_OUTPUTS; ++j)
            if (j < p) R[i * p + j] = (h[j] + b2[j]) - Y[i * p + j];
    }
}

template <typename T>
__global__ void gpunet_fused_partials(const T* X, const T* R, const T* w1, const T* b1,
                                      const T* w2, T* partials, long long m, int d, int n,
                                      int p, long long per_block, int tile) {
    extern __shared__ __align__(16) unsigned char gpunet_shared[];
    T* s_x = reinterpret_cast<T*>(gpunet_shared);  // tile × d
    T* s_r = s_x + tile * d;                         // tile × p

    const int k = blockIdx.y * blockDim.x + threadIdx.x;
    const bool owner = k < n;
    T w1k[GPUNET_FUSED_MAX_FEATURES], w2k[GPUNET_FUSED_MAX_OUTPUTS];
    T g_w1[GPUNET_FUSED_MAX_FEATURES], g_w2[GPUNET_FUSED_MAX_OUTPUTS];
#pragma unroll
    for (int c = 0; c < GPUNET_FUSED_MAX_FEATURES; ++c) {
        w1k[c] = owner && c < d ? w1[k * d + c] : T(0);
        g_w1[c] = T(0);
    }
#pragma unroll
    for (int j = 0; j < GPUNET_FUSED_MAX_OUTPUTS; ++j) {
        w2k[j] = owner && j < p ? w2[j * n + k] : T(0);
        g_w2[j] = T(0);
    }
    const T b1k = owner ? b1[k] : T(0);
    T g_b1 = T(0), g_b2 = T(0), g_loss = T(0);
    const bool sums_outputs = blockIdx.y == 0;  // one block per sample range sums R

    const long long begin = blockIdx.x * per_block;
    const long long end = begin + per_block < m ? begin + per_block : m;
    for (long long start = begin; start < end; start += tile) {
        const int rows = end - start < tile ? (int)(end - start) : tile;
        __syncthreads();  // every thread is done with the previous tile
        for (int e = threadIdx.x; e < rows * d; e += blockDim.x) s_x[e] = X[start * d + e];
        for (int e = threadIdx.x; e < rows * p; e += blockDim.x) s_r[e] = R[start * p + e];
        __syncthreads();
        if (owner) {
            for (int i = 0; i < rows; ++i) {
                const T* x = s_x + i * d;
                const T* r = s_r + i * p;
                T z = T(0), g = T(0);
#pragma unroll
                for (int c = 0; c < GPUNET_FUSED_MAX_FEATURES; ++c)
                    if (c < d) z += w1k[c] * x[c];
                const T a = gpunet_bias_sigmoid(z, b1k);
#pragma unroll
                for (int j = 0; j < GPUNET_FUSED_MAX_OUTPUTS; ++j) {
                    if (j < p) {
                        g += r[j] * w2k[j];
                        g_w2[j] += r[j] * a;
                    }
                }
                const T delta = gpunet_sigmoid_delta(g, a);
                g_b1 += delta;
#pragma unroll
                for (int c = 0; c < GPUNET_FUSED_MAX_FEATURES; ++c)
                    if (c < d) g_w1[c] += delta * x[c];
            }
        }
        if (sums_outputs && threadIdx.x < p)
            for (int i = 0; i < rows; ++i) g_b2 += s_r[i * p + threadIdx.x];
        if (sums_outputs && threadIdx.x == 0)
            for (int e = 0; e < rows * p; ++e) g_loss += s_r[e] * s_r[e];
    }

    T* row = partials + blockIdx.x * (long long)(n * d + n + p * n + p + 1);
    if (owner) {
#pragma unroll
        for (int c = 0; c < GPUNET_FUSED_MAX_FEATURES; ++c)
            if (c < d) row[k * d + c] = g_w1[c];
        row[n * d + k] = g_b1;
#pragma unroll
        for (int j = 0; j < GPUNET_FUSED_MAX_OUTPUTS; ++j)
            if (j < p) row[n * d + n + j * n + k] = g_w2[j];
    }
    if (sums_outputs && threadIdx.x < p) row[n * d + n + p * n + threadIdx.x] = g_b2;
    if (sums_outputs && threadIdx.x == 0) row[n * d + n + p * n + p] = g_loss;
}

template <typename T>
__global__ void gpunet_fused_combine(const T* partials, T* totals, int blocks, long long size) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < size; e += stride) {
        T total = T(0);
        for (int b = 0; b < blocks; ++b) total += partials[b * size + e];
        totals[e] = total;
    }
}
