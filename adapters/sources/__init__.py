"""Camera sources: each yields Frames to the pipeline."""
