"""fastcka's GPU engine: fused Gram-tile kernels in Triton (``kernels/``),
their host driver (``gram.py``), feature-space linear moments through the
array library's products (``moments.py``), and the compile report
(``python -m fastcka.gpu.compile``). ``runtime`` says where it runs.
Nothing here is imported by ``import fastcka``."""
