/* extern "C" entry points of ccomp's CUDA objects, callable from the C binding.
 * Each returns 0 on success or a nonzero CUDA error code with a message. */
#ifndef CCOMP_CUDA_H
#define CCOMP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int ccomp_cuda_device_count(int *count, char *msg, size_t msg_len);
int ccomp_cuda_runtime_version(int *version);
int ccomp_cuda_driver_version(int *version);
int ccomp_cuda_device_name(int device, char *name, size_t name_len, int *major, int *minor);
int ccomp_cuda_iota(int *host_out, int n, int step, char *msg, size_t msg_len);

/* ---- ccomp.ac: CDF quantization on the GPU (kernels/ac.cu; csrc/ac/quantize.c is the specification).
 * rows: device pointer to T rows of V float32 (dtype 0) or float64 (dtype 1) values, row_stride elements
 * apart; rule 0 = constriction, 1 = nacrith; temperature applies to logits.  The rows' device is made
 * current for the call.  *first_bad is the first row the CPU reference would reject (-1: none); the
 * caller asks the CPU for the exact message.  Work runs on the legacy default stream and is finished
 * when the call returns. */
int ccomp_cuda_ac_lookup(const void *rows, int dtype, size_t T, size_t V, size_t row_stride, int rule,
                         int precision, int logits, double temperature, const int64_t *symbols_host,
                         uint32_t *cum_host, uint32_t *freq_host, int64_t *first_bad, char *msg, size_t msg_len);

/* Row summaries and checkpoints of every row, kept on the device for decoding.  The rows must stay
 * alive (and unchanged) until ccomp_cuda_ac_scan_free. */
typedef struct ccomp_cuda_ac_scan ccomp_cuda_ac_scan;
int ccomp_cuda_ac_scan_rows(const void *rows, int dtype, size_t T, size_t V, size_t row_stride, int rule,
                            int precision, int logits, double temperature, ccomp_cuda_ac_scan **out,
                            int64_t *first_bad, char *msg, size_t msg_len);
/* For each query i: the symbol of row rows_t[i] whose [cum, cum + freq) contains targets[i] (< 2^P). */
int ccomp_cuda_ac_scan_find(const ccomp_cuda_ac_scan *h, const int64_t *rows_t, const uint32_t *targets, size_t n,
                            uint32_t *symbol, uint32_t *cum, uint32_t *freq, char *msg, size_t msg_len);
size_t ccomp_cuda_ac_scan_rows_count(const ccomp_cuda_ac_scan *h);
void ccomp_cuda_ac_scan_free(ccomp_cuda_ac_scan *h);

/* Device memory helpers (current device). */
int ccomp_cuda_upload(const void *host, size_t n, void **dev, char *msg, size_t msg_len);
void ccomp_cuda_free(void *dev);
int ccomp_cuda_to_host(void *host, const void *dev, size_t n, char *msg, size_t msg_len);
int ccomp_cuda_synchronize(char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif

#endif
