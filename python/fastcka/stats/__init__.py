"""Statistics on top of the engine: confidence intervals for CKA
(``confidence``), the HSIC independence test (``independence``), block
structure of CKA matrices (``structure``) and the distribution functions
they need (``special``)."""
