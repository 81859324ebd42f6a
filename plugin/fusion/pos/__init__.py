"""Point of sale: the transaction model, exception rules and fusion with the lane camera."""
