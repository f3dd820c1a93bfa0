"""The table of hostile arguments of the public API (tests/test_api_args.py walks it).

Each area's module (``tests/api/cases_<area>.py``) lists ``CASES``: one :class:`Case` per bad
argument, and ``EXEMPT``: ``{"module.function": {"param": "why no bad value exists"}}``.  The test
runs every case, checks the exception type and that the message names the argument, and checks that
every parameter of every public function of the area has at least one case or an exemption.
"""
from dataclasses import dataclass
from typing import Callable, Optional, Type


@dataclass
class Case:
    func: str            # "kv.quantize", "ac.Decoder", "sketch.Sketch.matmul"
    param: str           # the argument the case gets wrong
    call: Callable[[], object]
    exc: Type[BaseException]
    match: Optional[str] = None  # a substring the message must contain (default: the param's name)
    what: str = ""       # what is wrong, for the test id ("float", "NaN", "empty", "2**70", ...)

    @property
    def id(self):
        return f"{self.func}:{self.param}:{self.what}" if self.what else f"{self.func}:{self.param}"
