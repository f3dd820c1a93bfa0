/* extern "C" entry points of ccomp's CUDA objects, callable from the C binding.
 * Each returns 0 on success or a nonzero CUDA error code with a message. */
#ifndef CCOMP_CUDA_H
#define CCOMP_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int ccomp_cuda_device_count(int *count, char *msg, size_t msg_len);
int ccomp_cuda_runtime_version(int *version);
int ccomp_cuda_driver_version(int *version);
int ccomp_cuda_device_name(int device, char *name, size_t name_len, int *major, int *minor);
int ccomp_cuda_iota(int *host_out, int n, int step, char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif

#endif
