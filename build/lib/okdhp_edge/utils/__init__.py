"""Small shared helpers: atomic I/O, hashing, CLI plumbing."""
