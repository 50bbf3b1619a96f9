// Explicit instantiations of the fused kernels, so that nvcc compiles them for both
// dtypes (CuPy instantiates them through name_expressions). The tests append this to
// gpunet.fused.cuda_source(), the text NVRTC is given.
#define GPUNET_FUSED_INSTANTIATE(T)                                                        \
    template __global__ void gpunet_fused_residual<T>(const T*, const T*, const T*,       \
                                                      const T*, const T*, const T*, T*,   \
                                                      long long, int, int, int);          \
    template __global__ void gpunet_fused_partials<T>(const T*, const T*, const T*,       \
                                                      const T*, const T*, T*, long long,  \
                                                      int, int, int, long long, int);     \
    template __global__ void gpunet_fused_combine<T>(const T*, T*, int, long long);

GPUNET_FUSED_INSTANTIATE(float)
GPUNET_FUSED_INSTANTIATE(double)
