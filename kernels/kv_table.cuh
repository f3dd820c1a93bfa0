// The CUDA side of the KV method table: one row per line of CCOMP_KV_METHODS (ccomp/kv.h, the core's ids),
// defined in the method's kernel file (kernels/kv_<file>.cu) as ccomp_kv_cuda_<name>, looked up by
// kernels/kv_codec.cu's entry points.  Included outside the anonymous namespace (the rows cross objects).
#ifndef CCOMP_KV_TABLE_CUH
#define CCOMP_KV_TABLE_CUH

#include <cuda_runtime.h>

#include "ccomp_cuda.h"

struct ccomp_kv_cuda_method {
    // the method's parameters and arrays (the shape's generic bounds are checked first): CCOMP_ERR_VALUE
    // saying what is wrong
    ccomp_status (*check)(const ccomp_cuda_kv_desc *d, ccomp_error *err);
    // what quantize needs beyond check (NULL: nothing)
    ccomp_status (*quantize_check)(const ccomp_cuda_kv_desc *d, ccomp_error *err);
    // queue the kernels on st, the desc checked and its device current (NULL: not on the GPU)
    cudaError_t (*quantize)(const ccomp_cuda_kv_desc *d, cudaStream_t st);
    cudaError_t (*dequantize)(const ccomp_cuda_kv_desc *d, cudaStream_t st);
    // dequantize reports damaged index arrays through d->flag (the CPU rejects them)
    bool dequantize_checks;
};

#define CCOMP_KV_CUDA_ROW_(ID, name) extern const ccomp_kv_cuda_method ccomp_kv_cuda_##name;
CCOMP_KV_METHODS(CCOMP_KV_CUDA_ROW_)
#undef CCOMP_KV_CUDA_ROW_

// The row of a method id, NULL when there is none.
const ccomp_kv_cuda_method *ccomp_kv_cuda_method_get(int id);
// The names of the methods the GPU quantizes, comma-separated (for messages).
const char *ccomp_kv_cuda_quantizers(void);

#endif
