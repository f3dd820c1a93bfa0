// Host-side helpers shared by ccomp's CUDA files (device.cu, ac.cu, kv_*.cu, sketch.cu, tokens.cu): error
// reports and making the data's device current.  Entry points return a ccomp_status and fill a ccomp_error
// (ccomp/status.h), like the C core: CCOMP_ERR_VALUE for a rejected argument, CCOMP_ERR_BACKEND for a CUDA
// failure, CCOMP_ERR_NOMEM when memory runs out.  Included inside each file's anonymous namespace, so every
// object keeps its own private copy and no symbol is exported.
#ifndef CCOMP_CUDA_HOST_CUH
#define CCOMP_CUDA_HOST_CUH

// A CUDA failure names the call and returns CCOMP_ERR_BACKEND (CCOMP_ERR_NOMEM for cudaErrorMemoryAllocation);
// err may be NULL.
inline ccomp_status fail(ccomp_error *err, cudaError_t rc, const char *what)
{
    ccomp_status code = rc == cudaErrorMemoryAllocation ? CCOMP_ERR_NOMEM : CCOMP_ERR_BACKEND;
    if (err != NULL) {
        err->code = code;
        snprintf(err->msg, sizeof err->msg, "CUDA error in %s: %s", what, cudaGetErrorString(rc));
    }
    cudaGetLastError(); // clear a non-sticky error
    return code;
}

// A rejected argument: printf-style message, returns CCOMP_ERR_VALUE; err may be NULL.
inline ccomp_status reject(ccomp_error *err, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = CCOMP_ERR_VALUE;
    }
    return CCOMP_ERR_VALUE;
}

// Host memory ran out: printf-style message, returns CCOMP_ERR_NOMEM; err may be NULL.
inline ccomp_status out_of_memory(ccomp_error *err, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = CCOMP_ERR_NOMEM;
    }
    return CCOMP_ERR_NOMEM;
}

// Makes the data's device current (restored by the destructor).
struct DeviceGuard {
    int old = -1;
    ~DeviceGuard()
    {
        if (old >= 0) cudaSetDevice(old);
    }
};

// Makes the device holding p current (CCOMP_ERR_VALUE when p is not in GPU memory, a CUDA failure
// otherwise); `what` ("the keys are") starts the message when p is not in GPU memory.
inline ccomp_status enter_device(const void *p, DeviceGuard &g, ccomp_error *err, const char *what = "the data is")
{
    cudaError_t rc = cudaGetDevice(&g.old);
    if (rc != cudaSuccess) {
        g.old = -1;
        return fail(err, rc, "cudaGetDevice (no usable CUDA device?)");
    }
    cudaPointerAttributes attr;
    rc = cudaPointerGetAttributes(&attr, p);
    if (rc != cudaSuccess) return fail(err, rc, "cudaPointerGetAttributes");
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        return reject(err, "%s not in GPU memory (expected CUDA tensors or arrays)", what);
    if (attr.device != g.old && (rc = cudaSetDevice(attr.device)) != cudaSuccess)
        return fail(err, rc, "cudaSetDevice");
    return CCOMP_OK;
}

#endif
