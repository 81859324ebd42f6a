"""Inference: the Triton client (the tensor contract), shared memory, the pose client, the embedded server, model assets
and the naive in-process baseline."""
