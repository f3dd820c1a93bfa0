"""What a sketch on the host (:class:`ccomp.sketch.Sketch`) and on the GPU
(:class:`ccomp._sketch_gpu.DeviceSketch`) have in common: the table types, the code width and the
shape properties.  Both modules import it; it imports neither, so the GPU module never reaches up
into ccomp.sketch.
"""

__all__ = ["SketchShape", "TABLE_CODES", "bits_of"]

TABLE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2, "float64": 3}  # the core's CCOMP_SKETCH_*


def bits_of(K):
    """The code width of tables with K entries per group."""
    if K not in (4, 8, 16):
        raise ValueError(f"tables must have 4, 8 or 16 entries per group (2, 3 or 4 bits), got {K}")
    return int(K).bit_length() - 1


class SketchShape:
    """The shape of a sketched weight matrix ``[out_features, in_features]`` held as tables
    ``[out_features, groups, 2**bits]`` and packed codes.

    A subclass sets ``in_features`` and gives ``_tables_shape``.  The host class declares itself with
    ``class Sketch(SketchShape, host=True)``: :meth:`host_class` then gives it to the GPU module, which
    builds host sketches (``DeviceSketch.to_host``) without importing ccomp.sketch.
    """

    _host = None

    def __init_subclass__(cls, host=False, **kwargs):
        super().__init_subclass__(**kwargs)
        if host:
            SketchShape._host = cls

    @staticmethod
    def host_class():
        """The host sketch class (ccomp.sketch.Sketch, declared when ccomp is imported)."""
        if SketchShape._host is None:  # pragma: no cover - importing ccomp imports ccomp.sketch
            raise RuntimeError("ccomp.sketch is not imported")
        return SketchShape._host

    @property
    def out_features(self):
        return int(self._tables_shape[0])

    @property
    def groups(self):
        return int(self._tables_shape[1])

    @property
    def shape(self):
        """``(out_features, in_features)`` of the sketched matrix."""
        return (self.out_features, self.in_features)

    @property
    def group_size(self):
        return self.in_features // self.groups
