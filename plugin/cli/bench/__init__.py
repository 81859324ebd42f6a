"""`storesight bench`: sizing. trial.py runs N cameras through the product's pieces (and the naive baseline),
report.py searches for the most cameras held and prints the result; clip.py, rtsp.py and monitor.py supply the video
and the measurements."""
