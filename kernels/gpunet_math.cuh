// gpunet_math.cuh — the elementwise math of gpunet, for the GPU and the host.
//
// Every function is __host__ __device__, so the same text serves CuPy's
// ElementwiseKernel (as its preamble, compiled by NVRTC), nvcc, and a plain
// C++ compiler on a machine without a GPU, where the tests check it against
// NumPy.
#ifndef GPUNET_MATH_CUH
#define GPUNET_MATH_CUH

#if !defined(__CUDACC_RTC__)
#include <math.h>  // NVRTC has exp/expf built in and no system headers.
#endif

#if defined(__CUDACC__)
#define GPUNET_HD __host__ __device__ __forceinline__
#else
#define GPUNET_HD inline
#endif

// σ(z) = 1 / (1 + e^(−z)), written so that the exponential never overflows:
// for z ≥ 0 as 1 / (1 + e^(−z)), for z < 0 as e^z / (1 + e^z).
GPUNET_HD float gpunet_sigmoid(float z) {
    float e = expf(-fabsf(z));
    return (z >= 0.0f ? 1.0f : e) / (1.0f + e);
}

GPUNET_HD double gpunet_sigmoid(double z) {
    double e = exp(-fabs(z));
    return (z >= 0.0 ? 1.0 : e) / (1.0 + e);
}

// σ'(z) = σ(z)(1 − σ(z)), from the activation a = σ(z) already computed.
template <typename T>
GPUNET_HD T gpunet_sigmoid_grad(T a) {
    return a * (T(1) - a);
}

// Forward: a = σ(z + b), the hidden activation with its bias.
template <typename T>
GPUNET_HD T gpunet_bias_sigmoid(T z, T b) {
    return gpunet_sigmoid(z + b);
}

// Backward: δ = g · a(1 − a), the upstream gradient g = (R W2)_ij through σ.
template <typename T>
GPUNET_HD T gpunet_sigmoid_delta(T g, T a) {
    return g * gpunet_sigmoid_grad(a);
}

// Backward for one output (p = 1), with the outer product R W2 fused in:
// δ = (r_i · w_j) · a(1 − a).
template <typename T>
GPUNET_HD T gpunet_outer_sigmoid_delta(T r, T w, T a) {
    return gpunet_sigmoid_delta(r * w, a);
}

#endif  // GPUNET_MATH_CUH
