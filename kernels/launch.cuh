// One way to launch a kernel and to declare dynamic shared memory, so the same source serves the CUDA
// build and a host build under the SIMT emulator: the emulator defines both macros before this header
// is read, and these definitions are the CUDA ones.
//   CCOMP_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...)   kernel may be a template-id
//   CCOMP_DYNAMIC_SHARED(type, name);   the block's dynamic shared memory as `type name[]`, 16-byte aligned
#ifndef CCOMP_LAUNCH_CUH
#define CCOMP_LAUNCH_CUH

#ifndef CCOMP_LAUNCH
#define CCOMP_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<(grid), (block), (shared_bytes), (stream)>>>
#endif

#ifndef CCOMP_DYNAMIC_SHARED
#define CCOMP_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#endif
