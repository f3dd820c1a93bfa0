"""ccomp.ops: every torch custom op ccomp registers is there, with a fake implementation that gives the
real implementation's shapes and dtypes (torch.library.opcheck runs each op eagerly, under fake
tensors and through autograd's registration checks)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ccomp.ops  # noqa: E402
from ccomp import _ops_kv  # noqa: E402


def test_every_listed_op_is_registered_and_nothing_else():
    registered = {n for n in dir(torch.ops.ccomp) if not n.startswith("_") and
                  isinstance(getattr(torch.ops.ccomp, n), torch._ops.OpOverloadPacket)}
    assert registered == set(ccomp.ops.OPS)


def test_opcheck_of_a_sample_of_each_area():
    from ccomp import sketch

    rng = np.random.default_rng(0)
    s = sketch.fit(rng.normal(size=(8, 32)).astype(np.float32), bits=4, groups=2, method="rtn")
    x = torch.randn(3, 32)
    torch.library.opcheck(torch.ops.ccomp.sketch_matmul,
                          (x, torch.from_numpy(s.tables.copy()), torch.from_numpy(s.codes.copy()), 32, None))
    k = torch.randn(3, 64, 64)
    params = _ops_kv.params_json({"bits": 4, "group": 32, "axis": "token"})
    torch.library.opcheck(torch.ops.ccomp.kv_quantize, (k, "groupwise", params))
