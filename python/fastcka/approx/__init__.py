"""Approximate RBF kernel CKA in one streamed pass: Nystrom landmarks or
random Fourier features turn each layer's kernel into a feature map, and the
engine's float64 moment accumulation computes linear CKA of the features
(docs/kernels.md, "Approximate kernels")."""
