// ccomp.kv on the GPU: the quantize and dequantize entry points (ccomp_cuda.h), dispatched through the CUDA
// method table (kernels/kv_table.cuh; each method's kernels live in its kernels/kv_<file>.cu).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ccomp_cuda.h"
#include "kv_table.cuh"
#include "launch.cuh"

static const ccomp_kv_cuda_method *const kv_cuda_table[CCOMP_KV_M_COUNT] = {
#define KV_CUDA_ROW_(ID, name) &ccomp_kv_cuda_##name,
    CCOMP_KV_METHODS(KV_CUDA_ROW_)
#undef KV_CUDA_ROW_
};

static const char *const kv_cuda_names[CCOMP_KV_M_COUNT] = {
#define KV_CUDA_NAME_(ID, name) #name,
    CCOMP_KV_METHODS(KV_CUDA_NAME_)
#undef KV_CUDA_NAME_
};

const ccomp_kv_cuda_method *ccomp_kv_cuda_method_get(int id)
{
    return id >= 0 && id < CCOMP_KV_M_COUNT ? kv_cuda_table[id] : NULL;
}

const char *ccomp_kv_cuda_quantizers(void)
{
    // built once (a function-local static's initialisation is thread-safe)
    static const char *const list = [] {
        static char buf[256];
        for (int id = 0; id < CCOMP_KV_M_COUNT; id++)
            if (kv_cuda_table[id]->quantize != NULL)
                snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", buf[0] ? ", " : "", kv_cuda_names[id]);
        return (const char *)buf;
    }();
    return list;
}

// ====================================================================== entry points

namespace
{
#include "kv_common.cuh"
} // namespace

extern "C" ccomp_status ccomp_cuda_kv_quantize(const ccomp_cuda_kv_desc *d, void *stream, int check, int64_t *first_bad,
                                      ccomp_error *err)
{
    *first_bad = -1;
    ccomp_status rc = check_desc(d, err);
    if (rc) return rc;
    const ccomp_kv_cuda_method *m = ccomp_kv_cuda_method_get(d->method);
    if (m->quantize == NULL) return reject(err, "the GPU quantizes %s", ccomp_kv_cuda_quantizers());
    if ((rc = check_x(d, err)) != CCOMP_OK) return rc;
    if (d->flag == NULL) return reject(err, "quantize needs the flag buffer");
    if (m->quantize_check != NULL && (rc = m->quantize_check(d, err)) != CCOMP_OK) return rc;
    if (d->S * d->T == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = enter_device(d->x, guard, err)) != CCOMP_OK) return rc;
    cudaStream_t st = (cudaStream_t)stream;
    return run_checked(d, st, check, first_bad, [&]() { return m->quantize(d, st); }, "the quantize kernel", err);
}

extern "C" ccomp_status ccomp_cuda_kv_dequantize(const ccomp_cuda_kv_desc *d, void *stream, int check, int64_t *first_bad,
                                        ccomp_error *err)
{
    *first_bad = -1;
    ccomp_status rc = check_desc(d, err);
    if (rc) return rc;
    const ccomp_kv_cuda_method *m = ccomp_kv_cuda_method_get(d->method);
    if (m->dequantize == NULL) return reject(err, "nothing to dequantize for a dense tensor");
    if ((rc = check_x(d, err)) != CCOMP_OK) return rc;
    const bool checked = m->dequantize_checks;
    if (checked && d->flag == NULL) return reject(err, "dequantize of this method needs the flag buffer");
    if (d->S * d->T == 0) return CCOMP_OK;
    DeviceGuard guard;
    if ((rc = enter_device(d->x, guard, err)) != CCOMP_OK) return rc;
    cudaStream_t st = (cudaStream_t)stream;
    ccomp_cuda_kv_desc dd = *d;
    if (!checked) dd.flag = NULL;
    return run_checked(&dd, st, checked && check, first_bad, [&]() { return m->dequantize(d, st); },
                       "the dequantize kernel", err);
}

