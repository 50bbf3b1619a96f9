// Test harness for kernels/gpunet_math.cuh, compiled two ways by the tests:
//  - as C++ for the host (g++ -x c++), loaded with ctypes, so that the kernel
//    math is compared with NumPy on a machine without a GPU;
//  - by nvcc for sm_90, so that a header that does not compile for the GPU
//    fails the suite even where no GPU is.
#include "gpunet_math.cuh"

#if defined(__CUDACC__)

template <typename T>
__global__ void bias_sigmoid_kernel(const T* z, const T* b, T* a, long m, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < m * n) a[i] = gpunet_bias_sigmoid(z[i], b[i % n]);
}

template <typename T>
__global__ void sigmoid_delta_kernel(const T* g, const T* a, T* d, long size) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < size) d[i] = gpunet_sigmoid_delta(g[i], a[i]);
}

template <typename T>
__global__ void sigmoid_grad_kernel(const T* a, T* s, long size) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < size) s[i] = gpunet_sigmoid_grad(a[i]);
}

template __global__ void bias_sigmoid_kernel<float>(const float*, const float*, float*, long, long);
template __global__ void bias_sigmoid_kernel<double>(const double*, const double*, double*, long, long);
template __global__ void sigmoid_delta_kernel<float>(const float*, const float*, float*, long);
template __global__ void sigmoid_delta_kernel<double>(const double*, const double*, double*, long);
template __global__ void sigmoid_grad_kernel<float>(const float*, float*, long);
template __global__ void sigmoid_grad_kernel<double>(const double*, double*, long);

#else

// One loop per (function, dtype): out[i] = f(x[i], ...).
#define GPUNET_HOST_MAP1(name, T, f) \
    extern "C" void name(const T* x, T* out, long size) { \
        for (long i = 0; i < size; ++i) out[i] = f(x[i]); }
#define GPUNET_HOST_MAP2(name, T, f) \
    extern "C" void name(const T* x, const T* y, T* out, long size) { \
        for (long i = 0; i < size; ++i) out[i] = f(x[i], y[i]); }

GPUNET_HOST_MAP1(sigmoid_float32, float, gpunet_sigmoid)
GPUNET_HOST_MAP1(sigmoid_float64, double, gpunet_sigmoid)
GPUNET_HOST_MAP1(sigmoid_grad_float32, float, gpunet_sigmoid_grad<float>)
GPUNET_HOST_MAP1(sigmoid_grad_float64, double, gpunet_sigmoid_grad<double>)
GPUNET_HOST_MAP2(bias_sigmoid_float32, float, gpunet_bias_sigmoid<float>)
GPUNET_HOST_MAP2(bias_sigmoid_float64, double, gpunet_bias_sigmoid<double>)
GPUNET_HOST_MAP2(sigmoid_delta_float32, float, gpunet_sigmoid_delta<float>)
GPUNET_HOST_MAP2(sigmoid_delta_float64, double, gpunet_sigmoid_delta<double>)

#endif
