// ccomp.kv on the GPU: GEAR dequantization (csrc/kv/gear.c is the specification; its quantizer fits a
// low-rank factor and runs on the CPU) and its row of the CUDA method table.
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

namespace
{

#include "kv_common.cuh"

// ------------------------------------------------------------------ GEAR

// backbone + outliers (in their order) + U W^T, each term as csrc/kv/gear.c adds it.
template <int BITS, int AXIS, class TOut> __global__ void __launch_bounds__(NT) gear_dequantize(Job j)
{
    const size_t U = j.D / 8, units = j.S * j.T * U;
    const size_t u = (size_t)blockIdx.x * NT + threadIdx.x;
    if (u >= units) return;
    const size_t row = u / U, cu = u - row * U, s = row / j.T, t = row - s * j.T, c0 = cu * 8;
    float v[8];
    gw_unit<BITS, AXIS>(j, s, t, cu, v);
    bool ok = true;
    const uint16_t *idx = j.out_idx + s * j.idx_ss + t * j.per_row, *val = j.out_vals + s * j.vals_ss + t * j.per_row;
    for (size_t m = 0; m < j.per_row; m++) {
        const size_t c = __ldg(idx + m);
        if (c >= j.D) {
            ok = false;
        } else if (c >= c0 && c < c0 + 8) {
            const float o = f16_to_f32(__ldg(val + m));
#pragma unroll
            for (int k = 0; k < 8; k++)
                if (c == c0 + (size_t)k) v[k] = __fadd_rn(v[k], o);
        }
    }
    if (j.rank > 0) {
        const size_t r = (size_t)j.rank;
        const uint16_t *ut = j.U + s * j.U_ss + t * r, *w = j.W + s * j.W_ss + c0 * r;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (size_t k = 0; k < r; k++) {
            const float uk = f16_to_f32(__ldg(ut + k));
#pragma unroll
            for (int c = 0; c < 8; c++)
                acc[c] = __fadd_rn(acc[c], __fmul_rn(uk, f16_to_f32(__ldg(w + (size_t)c * r + k))));
        }
#pragma unroll
        for (int c = 0; c < 8; c++) v[c] = __fadd_rn(v[c], acc[c]);
    }
    if (!ok) report(j.flag, s);
    store8(static_cast<TOut *>(j.xout) + s * j.x_ss + t * j.x_ld + c0, j.vec != 0, v);
}

// The launcher for the dense tensor's element type (float32 or float16 bits).
template <template <class> class F> cudaError_t by_dtype(const ccomp_cuda_kv_desc *d, cudaStream_t st)
{
    const Job j = make_job(d);
    return d->x_dtype == CCOMP_CUDA_KV_FLOAT32 ? F<float>::run(d, j, st) : F<uint16_t>::run(d, j, st);
}

ccomp_status check_gear(const ccomp_cuda_kv_desc *d, ccomp_error *err)
{
    const size_t S = d->S, T = d->T, D = d->D;
    ccomp_status rc = check_gw(d, err);
    if (rc != CCOMP_OK) return rc;
    if (d->per_row > D) return reject(err, "outliers per row (%zu) exceed the head dim %zu", d->per_row, D);
    if (d->rank < 0 || (size_t)d->rank > D) return reject(err, "rank must be in [0, %zu], got %d", D, d->rank);
    const size_t r = (size_t)d->rank;
    if ((rc = check_array(d->out_idx, T * d->per_row, S, 2, "out_idx", err)) ||
        (rc = check_array(d->out_vals, T * d->per_row, S, 2, "out_vals", err)) ||
        (rc = check_array(d->U, T * r, S, 2, "U", err)) || (rc = check_array(d->W, D * r, S, 2, "W", err)))
        return rc;
    return CCOMP_OK;
}

template <class TOut> struct GearDequantize {
    static cudaError_t run(const ccomp_cuda_kv_desc *d, const Job &j, cudaStream_t st)
    {
        const dim3 grid(blocks_of(d->S * d->T * (d->D / 8), NT)), block(NT);
#define GEAR_DQ(B)                                                                                                     \
    (d->axis == AXIS_TOKEN ? launch(gear_dequantize<B, AXIS_TOKEN, TOut>, grid, block, 0, st, j)                       \
                           : launch(gear_dequantize<B, AXIS_CHANNEL, TOut>, grid, block, 0, st, j))
        switch (d->bits) {
        case 2: return GEAR_DQ(2);
        case 3: return GEAR_DQ(3);
        case 4: return GEAR_DQ(4);
        default: return GEAR_DQ(8);
        }
#undef GEAR_DQ
    }
};

} // namespace

extern const ccomp_kv_cuda_method ccomp_kv_cuda_gear = {check_gear, NULL, NULL, by_dtype<GearDequantize>, true};
