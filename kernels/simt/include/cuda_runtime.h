// The CUDA runtime as the SIMT emulator provides it (kernels/simt/simt_cpu.h says what that is).
// This file comes first on the include path of an emulator build and shadows the toolkit's
// cuda_runtime.h. The types and C declarations are the toolkit's own host-capable
// cuda_runtime_api.h; kernels/simt/simt_runtime.cpp implements the subset ccomp uses (a function
// outside it fails to link). Every call is synchronous and "device memory" is host heap memory.
#ifndef CCOMP_SIMT_CUDA_RUNTIME_H
#define CCOMP_SIMT_CUDA_RUNTIME_H

#include <cuda_runtime_api.h>

// The C++ conveniences of the toolkit's cuda_runtime.h.
template <class T> inline cudaError_t cudaMalloc(T **ptr, size_t size)
{
    return ::cudaMalloc(reinterpret_cast<void **>(ptr), size);
}

template <class T> inline cudaError_t cudaFuncSetAttribute(T *entry, enum cudaFuncAttribute attr, int value)
{
    return ::cudaFuncSetAttribute(reinterpret_cast<const void *>(entry), attr, value);
}

#endif
