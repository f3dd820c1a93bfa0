// Device discovery and device memory for ccomp's CUDA extension.  Every entry
// point returns a ccomp_status and never aborts: a machine without a GPU or
// driver is a normal case that Python reports as "no CUDA device".  Discovery
// fails with CCOMP_ERR_BACKEND and the CUDA runtime's reason alone; the memory
// helpers name the failing call (cuda_host.cuh), CCOMP_ERR_NOMEM when device
// memory runs out.
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "launch.cuh"

namespace {

#include "cuda_host.cuh"

// A failed CUDA call: CCOMP_ERR_BACKEND with the runtime's own words (the reason Python shows when no
// device is usable); the sticky error is cleared so later calls start clean.
ccomp_status cuda_failed(ccomp_error *err, cudaError_t rc)
{
    if (err != NULL) {
        err->code = CCOMP_ERR_BACKEND;
        snprintf(err->msg, sizeof err->msg, "%s", cudaGetErrorString(rc));
    }
    cudaGetLastError();
    return CCOMP_ERR_BACKEND;
}

} // namespace

extern "C" ccomp_status ccomp_cuda_device_count(int *count, ccomp_error *err)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        *count = 0;
        return cuda_failed(err, rc);
    }
    *count = n;
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_runtime_version(int *version, ccomp_error *err)
{
    cudaError_t rc = cudaRuntimeGetVersion(version);
    return rc == cudaSuccess ? CCOMP_OK : cuda_failed(err, rc);
}

extern "C" ccomp_status ccomp_cuda_driver_version(int *version, ccomp_error *err)
{
    cudaError_t rc = cudaDriverGetVersion(version);
    return rc == cudaSuccess ? CCOMP_OK : cuda_failed(err, rc);
}

extern "C" ccomp_status ccomp_cuda_device_name(int device, char *name, size_t name_len, int *major, int *minor,
                                               ccomp_error *err)
{
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, device);
    if (rc != cudaSuccess) return cuda_failed(err, rc);
    snprintf(name, name_len, "%s", prop.name);
    *major = prop.major;
    *minor = prop.minor;
    return CCOMP_OK;
}

constexpr int IOTA_T = 256; // threads of an iota block

// Fills out[i] = i * step on the device: the smallest real kernel, used by
// gpu_check.py to prove that code compiled here runs there.
__global__ static void __launch_bounds__(IOTA_T) iota_kernel(int *out, int n, int step)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = i * step;
}

extern "C" ccomp_status ccomp_cuda_iota(int *host_out, int n, int step, ccomp_error *err)
{
    if (n <= 0) {
        if (err != NULL) {
            err->code = CCOMP_ERR_VALUE;
            snprintf(err->msg, sizeof err->msg, "n must be positive, got %d", n);
        }
        return CCOMP_ERR_VALUE;
    }
    int *dev = NULL;
    cudaError_t rc = cudaMalloc(&dev, (size_t)n * sizeof(int));
    if (rc == cudaSuccess) {
        CCOMP_LAUNCH((n + IOTA_T - 1) / IOTA_T, IOTA_T, 0, 0, iota_kernel)(dev, n, step);
        rc = cudaGetLastError();
        if (rc == cudaSuccess)
            rc = cudaMemcpy(host_out, dev, (size_t)n * sizeof(int), cudaMemcpyDeviceToHost);
        cudaFree(dev);
    }
    if (rc != cudaSuccess) return cuda_failed(err, rc);
    return CCOMP_OK;
}

// ---------------------------------------------------- device memory (current device)

// Device memory without a copy; a request of 0 bytes still gives a distinct pointer.
extern "C" ccomp_status ccomp_cuda_alloc(size_t n, void **dev, ccomp_error *err)
{
    *dev = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return fail(err, e == cudaSuccess ? cudaErrorNoDevice : e, "cudaGetDeviceCount");
    e = cudaMalloc(dev, n ? n : 1);
    if (e != cudaSuccess) {
        *dev = NULL;
        return fail(err, e, "cudaMalloc");
    }
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_upload(const void *host, size_t n, void **dev, ccomp_error *err)
{
    ccomp_status rc = ccomp_cuda_alloc(n, dev, err);
    if (rc != CCOMP_OK) return rc;
    cudaError_t e;
    if (n && (e = cudaMemcpy(*dev, host, n, cudaMemcpyHostToDevice)) != cudaSuccess) {
        cudaFree(*dev);
        *dev = NULL;
        return fail(err, e, "cudaMemcpy");
    }
    return CCOMP_OK;
}

extern "C" void ccomp_cuda_free(void *dev)
{
    if (dev) cudaFree(dev);
    cudaGetLastError();
}

extern "C" ccomp_status ccomp_cuda_to_host(void *host, const void *dev, size_t n, ccomp_error *err)
{
    DeviceGuard guard;
    ccomp_status rc = enter_device(dev, guard, err);
    if (rc != CCOMP_OK) return rc;
    cudaError_t e = cudaMemcpy(host, dev, n, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) return fail(err, e, "cudaMemcpy");
    return CCOMP_OK;
}

extern "C" ccomp_status ccomp_cuda_synchronize(ccomp_error *err)
{
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) return fail(err, e, "cudaDeviceSynchronize");
    return CCOMP_OK;
}
