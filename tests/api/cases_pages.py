"""Hostile arguments of ccomp.pages (the ones that need no PDF renderer are checked before it runs)."""
import numpy as np

from ccomp import pages
from tests.api import Case

MODULES = ["pages"]

_IMG = np.full((20, 30, 3), 255, np.uint8)
_TILES = np.zeros((2, 28, 28, 1), np.uint8)

CASES = [
    Case("pages.render_pages", "pages", lambda: pages.render_pages("x.pdf", 1.5), TypeError, "pages", "fraction"),
    Case("pages.render_pages", "pages", lambda: pages.render_pages("x.pdf", 0), ValueError, "pages", "zero"),
    Case("pages.render_pages", "pages", lambda: pages.render_pages("x.pdf", []), ValueError, "pages", "empty"),
    Case("pages.render_pages", "pages", lambda: pages.render_pages("x.pdf", [2**70]), ValueError, "pages", "2**70"),
    Case("pages.render_pages", "dpi", lambda: pages.render_pages("x.pdf", 1, dpi=72.5), TypeError, "dpi", "fraction"),
    Case("pages.render_pages", "dpi", lambda: pages.render_pages("x.pdf", 1, dpi=0), ValueError, "dpi", "zero"),
    Case("pages.render_pages", "gray", lambda: pages.render_pages("x.pdf", 1, gray="yes"), TypeError, "gray", "str"),
    Case("pages.render_pages", "pdf", lambda: pages.render_pages(None, 1), TypeError, "pdf", "None"),
    Case("pages.render_pages", "pdf", lambda: pages.render_pages(3, 1), TypeError, "pdf", "int (a file descriptor)"),
    Case("pages.render_pages", "pdf", lambda: pages.render_pages("a\0.pdf", 1), ValueError, "pdf", "NUL"),
    Case("pages.read_pnm", "path_or_bytes", lambda: pages.read_pnm(5), TypeError, "path_or_bytes", "int"),
    # a negative width reached NumPy's reshape ("cannot reshape array of size 10 into shape (5,newaxis,3)")
    Case("pages.read_pnm", "path_or_bytes", lambda: pages.read_pnm(b"P6\n-1 5\n255\n" + bytes(10)), ValueError,
         "PNM header", "negative width"),
    Case("pages.read_pnm", "path_or_bytes", lambda: pages.read_pnm(b"P5\n+2 1_0\n255\n" + bytes(40)), ValueError,
         "PNM header", "signed or underscored number"),
    # a 1-D array gave a bare 0.0, NaN tokens NaN weights
    Case("pages.saliency", "tokens", lambda: pages.saliency(np.zeros(5)), ValueError, "tokens", "1-D"),
    Case("pages.saliency", "tokens", lambda: pages.saliency(np.zeros((2, 3, 0))), ValueError, "tokens", "D = 0"),
    Case("pages.saliency", "tokens", lambda: pages.saliency(np.full((1, 4, 6), np.nan)), ValueError, "tokens", "NaN"),
    Case("pages.read_pnm", "path_or_bytes", lambda: pages.read_pnm(b"P6\n2 2\n255\n\x00"), ValueError, "truncated",
         "truncated"),
    Case("pages.sub_images", "page", lambda: pages.sub_images(np.zeros(5, np.uint8)), ValueError, "page", "1-D"),
    Case("pages.sub_images", "page", lambda: pages.sub_images(np.array([["a"]])), TypeError, "page", "str"),
    Case("pages.sub_images", "size", lambda: pages.sub_images(_IMG, 1.5), TypeError, "size", "fraction"),
    Case("pages.sub_images", "size", lambda: pages.sub_images(_IMG, 2**70), ValueError, "size", "2**70"),
    Case("pages.sub_images", "fill", lambda: pages.sub_images(_IMG, 16, fill=300), ValueError, "fill", "300 in uint8"),
    Case("pages.sub_images", "fill", lambda: pages.sub_images(_IMG, 16, fill="white"), TypeError, "fill", "str"),
    Case("pages.patch_tokens", "images", lambda: pages.patch_tokens(np.zeros((2, 28, 14), np.uint8)), ValueError,
         "images", "not square"),
    Case("pages.patch_tokens", "patch", lambda: pages.patch_tokens(_TILES, 1.5), TypeError, "patch", "fraction"),
    Case("pages.patch_tokens", "patch", lambda: pages.patch_tokens(_TILES, 0), ValueError, "patch", "zero"),
    Case("pages.patch_tokens", "patch", lambda: pages.patch_tokens(_TILES, 5), ValueError, "patch", "not a divisor"),
    Case("pages.saliency", "tokens", lambda: pages.saliency(np.array([["a"]])), TypeError, "tokens", "str"),
    Case("pages.page_tokens", "page", lambda: pages.page_tokens("x.pdf", 1.5), TypeError, "page", "fraction"),
    Case("pages.page_tokens", "page", lambda: pages.page_tokens("x.pdf", 2**70), ValueError, "page", "2**70"),
    Case("pages.page_tokens", "dpi", lambda: pages.page_tokens("x.pdf", 1, dpi=1e9), TypeError, "dpi", "float"),
    Case("pages.page_tokens", "size", lambda: pages.page_tokens("x.pdf", 1, size=0), ValueError, "size", "zero"),
    Case("pages.page_tokens", "patch", lambda: pages.page_tokens("x.pdf", 1, patch=-3), ValueError, "patch", "negative"),
    Case("pages.page_tokens", "gray", lambda: pages.page_tokens("x.pdf", 1, gray=1), TypeError, "gray", "int"),
    Case("pages.page_tokens", "pdf", lambda: pages.page_tokens(3.5, 1), TypeError, "", "float"),
    Case("pages.minilm_tokens", "text", lambda: pages.minilm_tokens(text=b"abc"), TypeError, "text", "bytes"),
    Case("pages.minilm_tokens", "tokens", lambda: pages.minilm_tokens(tokens=2.5), TypeError, "tokens", "fraction"),
    Case("pages.minilm_tokens", "windows", lambda: pages.minilm_tokens(windows=0), ValueError, "windows", "zero"),
    Case("pages.minilm_tokens", "layer", lambda: pages.minilm_tokens(layer=2**70), ValueError, "layer", "2**70"),
    Case("pages.minilm_tokens", "model", lambda: pages.minilm_tokens(model="minilm"), TypeError, "model", "str"),
]

EXEMPT = {
    "pages.PageTokens": {"*": "a record of results that page_tokens fills; not an input"},
}
