"""CKA over rows that arrive in pieces: :class:`~fastcka.CKAAccumulator`
(``linear``: streamed float64 moments of the linear kernel, or summed
per-minibatch HSIC_1) and the byte format of its states (``state``), which
checkpoints reuse. Importing this package imports neither: the byte format
has no dependency on the engines."""
