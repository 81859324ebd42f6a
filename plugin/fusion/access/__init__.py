"""Access control: door events and their fusion with the door camera (tailgating, forced and held doors)."""
