// Device discovery for ccomp's CUDA extension.  Every entry point returns a
// status (0 = ok) and never aborts: a machine without a GPU or driver is a
// normal case that Python reports as "no CUDA device".
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "launch.cuh"

extern "C" int ccomp_cuda_device_count(int *count, char *msg, size_t msg_len)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        *count = 0;
        snprintf(msg, msg_len, "%s", cudaGetErrorString(rc));
        cudaGetLastError(); // clear the sticky error so later calls start clean
        return (int)rc;
    }
    *count = n;
    return 0;
}

extern "C" int ccomp_cuda_runtime_version(int *version)
{
    return (int)cudaRuntimeGetVersion(version);
}

extern "C" int ccomp_cuda_driver_version(int *version)
{
    return (int)cudaDriverGetVersion(version);
}

extern "C" int ccomp_cuda_device_name(int device, char *name, size_t name_len, int *major, int *minor)
{
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, device);
    if (rc != cudaSuccess) {
        snprintf(name, name_len, "%s", cudaGetErrorString(rc));
        cudaGetLastError();
        return (int)rc;
    }
    snprintf(name, name_len, "%s", prop.name);
    *major = prop.major;
    *minor = prop.minor;
    return 0;
}

// Fills out[i] = i * step on the device: the smallest real kernel, used by
// gpu_check.py to prove that code compiled here runs there.
__global__ static void iota_kernel(int *out, int n, int step)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = i * step;
}

extern "C" int ccomp_cuda_iota(int *host_out, int n, int step, char *msg, size_t msg_len)
{
    if (n <= 0) {
        snprintf(msg, msg_len, "n must be positive, got %d", n);
        return -1;
    }
    int *dev = NULL;
    cudaError_t rc = cudaMalloc(&dev, (size_t)n * sizeof(int));
    if (rc == cudaSuccess) {
        CCOMP_LAUNCH((n + 255) / 256, 256, 0, 0, iota_kernel)(dev, n, step);
        rc = cudaGetLastError();
        if (rc == cudaSuccess)
            rc = cudaMemcpy(host_out, dev, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost);
        cudaFree(dev);
    }
    if (rc != cudaSuccess) {
        snprintf(msg, msg_len, "%s", cudaGetErrorString(rc));
        cudaGetLastError();
        return (int)rc;
    }
    return 0;
}
