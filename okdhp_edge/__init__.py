"""okdhp_edge."""
