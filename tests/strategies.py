"""Hypothesis strategies shared by the size-model tests."""
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("CCOMP_HYPOTHESIS_EXAMPLES", "1000"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Texts with long repeats and few symbols exercise matches, lazy evaluation and block limits.
low_entropy = st.builds(lambda alphabet, picks: bytes(alphabet[i % len(alphabet)] for i in picks),
                        st.binary(min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=5000))
repeated = st.builds(lambda chunk, times, tail: chunk * times + tail, st.binary(max_size=300),
                     st.integers(0, 200), st.binary(max_size=50))
texts = st.one_of(st.binary(max_size=2000), low_entropy, repeated)
