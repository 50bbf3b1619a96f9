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

// σ(z) = 1 / (1 + e^(−z)), with no branch. For z below about −88.7 (float)
// or −709.8 (double), e^(−z) overflows to +inf and σ(z) = 1 / inf = 0, where
// the true value is below the smallest normal number: no NaN for any z.
GPUNET_HD float gpunet_sigmoid(float z) {
    return 1.0f / (1.0f + expf(-z));
}

GPUNET_HD double gpunet_sigmoid(double z) {
    return 1.0 / (1.0 + exp(-z));
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

#endif  // GPUNET_MATH_CUH
