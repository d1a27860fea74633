"""Edge bench: timing protocol, device fingerprint, accuracy per backend, reports, pick."""
