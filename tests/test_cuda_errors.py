"""The CUDA entry points' error convention, as the Python side sees it through ccomp._cuda: a rejected
argument is a ValueError that names the operation and the argument (checked before any device is touched,
so these run with or without a GPU); a CUDA failure is a RuntimeError that names the failing CUDA call."""
import numpy as np
import pytest

from ccomp import cuda

pytestmark = pytest.mark.skipif(not cuda.built(), reason="ccomp._cuda was not built (no nvcc)")

P = 1 << 20  # a pointer that is never dereferenced: every call below is refused before the device is used
SKETCH = (P, 0, P, 4, 8, 2, 4)  # (tables, dtype, codes, rows, cols, groups, bits)
ROWS = np.array([0, 1], np.int64)
OFFSETS = np.array([0, 2], np.uint64)


def _topk(rows=ROWS, ws_bytes=None, k=1):
    ext = cuda._cuda
    if ws_bytes is None:
        ws_bytes = ext.tokens_workspace(1, 4, 8, OFFSETS, OFFSETS, k)
    return ext.tokens_topk(P, 0, 1, 4, 8, 32, 8, rows, OFFSETS, ROWS, OFFSETS, False, k, True, P, P, P * 256,
                           ws_bytes, 0, True)


REJECTED = [
    ("ac_lookup rule", lambda e: e.ac_lookup(P, 0, 4, 8, 8, 7, 24, 0, 1.0, np.zeros(4, np.int64)),
     "ccomp.ac GPU lookup: unknown quantization rule"),
    ("ac_lookup symbol", lambda e: e.ac_lookup(P, 0, 4, 8, 8, 0, 24, 0, 1.0, np.full(4, 9, np.int64)),
     "ccomp.ac GPU lookup: symbol out of range"),
    ("ac_scan dtype", lambda e: e.ac_scan(P, 3, 4, 8, 8, 0, 24, 0, 1.0),
     "ccomp.ac GPU scan: rows must be float32 or float64"),
    ("ac_scan temperature", lambda e: e.ac_scan(P, 0, 4, 8, 8, 0, 24, 1, -1.0),
     "ccomp.ac GPU scan: temperature must be positive"),
    ("sketch_matmul bits", lambda e: e.sketch_matmul((P, 0, P, 4, 8, 2, 5), P, 0, 2, P, 0),
     "ccomp.sketch GPU matmul: bits must be 2, 3 or 4, got 5"),
    ("sketch_matmul x dtype", lambda e: e.sketch_matmul(SKETCH, P, 7, 2, P, 0),
     r"ccomp.sketch GPU matmul: x must be float32 or float16 \(types 0, 1\), got type 7"),
    ("sketch_grad_input gy dtype", lambda e: e.sketch_grad_input(SKETCH, P, 5, 2, P, 0),
     r"ccomp.sketch GPU grad_input: grad_y must be float32 or float16 \(types 0, 1\), got type 5"),
    ("sketch_grad_tables shape", lambda e: e.sketch_grad_tables((P, 0, P, 4, 9, 2, 4), P, 0, P, 0, 2, P, P, 0, 0),
     "ccomp.sketch GPU grad_tables: bad sketch shape: 4 rows, 9 columns, 2 groups"),
    ("sketch_dequantize out dtype", lambda e: e.sketch_dequantize(SKETCH, P, 9, 0),
     "ccomp.sketch GPU dequantize: the output must be float32, float16 or bfloat16"),
    ("tokens_topk workspace", lambda e: _topk(ws_bytes=1),
     "ccomp.tokens GPU top-k: the workspace holds 1 bytes, expected at least"),
    ("tokens_topk row token", lambda e: _topk(rows=np.array([0, 7], np.int64)),
     r"ccomp.tokens GPU top-k: row token 7 is outside \[0, 4\)"),
    ("tokens_topk k", lambda e: _topk(k=65, ws_bytes=1 << 20),
     r"ccomp.tokens GPU top-k: the GPU path takes k in \[1, 64\], got 65"),
]


@pytest.mark.parametrize("what, call, message", REJECTED, ids=[r[0] for r in REJECTED])
def test_a_rejected_argument_is_a_value_error_naming_it(what, call, message):
    with pytest.raises(ValueError, match="^" + message):
        call(cuda._cuda)


FAILING_WITHOUT_A_DEVICE = [
    ("ac_lookup", lambda e: e.ac_lookup(P, 0, 4, 8, 8, 0, 24, 0, 1.0, np.zeros(4, np.int64)),
     r"ccomp.ac GPU lookup: CUDA error in cudaGetDevice \(no usable CUDA device\?\): "),
    ("ac_scan", lambda e: e.ac_scan(P, 0, 4, 8, 8, 0, 24, 0, 1.0),
     r"ccomp.ac GPU scan: CUDA error in cudaGetDevice \(no usable CUDA device\?\): "),
    ("sketch_matmul", lambda e: e.sketch_matmul(SKETCH, P, 0, 2, P, 0),
     r"ccomp.sketch GPU matmul: CUDA error in cudaGetDevice \(no usable CUDA device\?\): "),
    ("sketch_dequantize", lambda e: e.sketch_dequantize(SKETCH, P, 0, 0),
     r"ccomp.sketch GPU dequantize: CUDA error in cudaGetDevice \(no usable CUDA device\?\): "),
    ("tokens_topk", lambda e: _topk(),
     r"ccomp.tokens GPU top-k: CUDA error in cudaGetDevice \(no usable CUDA device\?\): "),
    ("upload", lambda e: e.upload(b"abcd"), "copying to the GPU failed: CUDA error in cudaGetDeviceCount: "),
    ("alloc", lambda e: e.alloc(16), "allocating GPU memory failed: CUDA error in cudaGetDeviceCount: "),
    ("to_host", lambda e: e.to_host(P, 8), r"copying from the GPU failed: CUDA error in cudaGetDevice \(no usable"),
    ("synchronize", lambda e: e.synchronize(), "synchronize: CUDA error in cudaDeviceSynchronize: "),
    ("iota", lambda e: e.iota(10, 1), "CUDA kernel launch failed: "),
    ("device_name", lambda e: e.device_name(0), "CUDA device 0: "),
]


@pytest.mark.parametrize("what, call, message", FAILING_WITHOUT_A_DEVICE, ids=[r[0] for r in FAILING_WITHOUT_A_DEVICE])
def test_a_cuda_failure_is_a_runtime_error_naming_the_call(what, call, message):
    if cuda.is_available():
        pytest.skip("a usable GPU: these calls do not fail")
    n, reason = cuda._cuda.device_count()
    assert n == 0 and reason  # the CUDA runtime's own reason, with no prefix
    with pytest.raises(RuntimeError, match="^" + message) as info:
        call(cuda._cuda)
    assert str(info.value).endswith(reason)
