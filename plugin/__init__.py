"""StoreSight: the async bridge between cameras, Triton and the operator's VMS."""

import os

# The tracker's small matrix products otherwise wake OpenBLAS's worker threads, which busy-wait on the cores
# Triton needs: measured with `storesight bench` at 4 cameras, one BLAS thread cut StoreSight's CPU from 29-78 % to
# 10-11 % of a core and p95 latency from 365-683 ms to 119-123 ms. Set before numpy is first imported; an explicit
# setting by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
