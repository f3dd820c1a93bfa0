"""Plain-Python specification of ccomp.ac's quantization rules and range coder.

Slow and obvious on purpose: every sum is a left-to-right loop in the stated
float type, every step of the coder is written out.
"""
import numpy as np


def _seq_sum(values, ftype):
    acc = ftype(0)
    out = np.empty(len(values) + 1, dtype=ftype)
    out[0] = acc
    for i, v in enumerate(values):
        acc = ftype(acc + ftype(v))
        out[i + 1] = acc
    return out  # running sums c[0..V]; out[-1] is S


def cdf_constriction(p, precision):
    """constriction's Categorical(perfect=False): cdf[i] = int(c[i] * scale) + i."""
    p = np.asarray(p)
    ftype = p.dtype.type
    V = len(p)
    c = _seq_sum(p, ftype)
    S = c[-1]
    free = ftype((1 << precision) - V)
    scale = ftype(free / S)
    cdf = [int(ftype(c[i] * scale)) + i for i in range(V)]
    return np.array(cdf + [1 << precision], dtype=np.int64)


def cdf_nacrith(p, precision):
    """f_i = floor(p_i (2^P - V) / S) + 1 in float64, remainder to the first argmax."""
    p = np.asarray(p).astype(np.float64)
    V = len(p)
    S = _seq_sum(p, np.float64)[-1]
    q = float((1 << precision) - V) / float(S)
    f = [int(float(x) * q) + 1 for x in p]
    f[int(np.argmax(p))] += (1 << precision) - sum(f)
    return np.concatenate([[0], np.cumsum(f)]).astype(np.int64)


def range_encode(pairs, precision):
    """The range coder of ccomp.ac (and constriction), as 32-bit words."""
    M = (1 << 64) - 1
    lower, rng = 0, M
    words, inverted, first = [], 0, 0
    for cum, freq in pairs:
        scale = rng >> precision
        new_lower = (lower + scale * cum) & M
        rng = scale * freq
        if inverted and new_lower + rng <= M:  # no wrap: the carry is known
            carry = new_lower < lower
            words.append((first + carry) & 0xFFFFFFFF)
            words.extend([0 if carry else 0xFFFFFFFF] * (inverted - 1))
            inverted = 0
        lower = new_lower
        if rng < (1 << 32):
            word = lower >> 32
            rng <<= 32
            lower = (lower << 32) & M
            if inverted:
                inverted += 1
            elif lower + rng <= M:
                words.append(word)
            else:
                inverted, first = 1, word
    if rng == M:
        return words
    point = (lower + (1 << 32) - 1) & M
    if inverted:
        carry = point < lower
        words.append((first + carry) & 0xFFFFFFFF)
        words.extend([0 if carry else 0xFFFFFFFF] * (inverted - 1))
    words.append(point >> 32)
    if (point >> 32) == (((lower + rng) & M) >> 32):
        words.append(0)
    return words
