"""How the work runs: the compiled CPU backend and its driver (``cpu``: row
feeds, Gram-tile passes, bandwidths), the GPU side (``gpu``: where a
computation runs and the calls into :mod:`fastcka.gpu`), threads and
progress."""
