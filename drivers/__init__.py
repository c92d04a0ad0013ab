"""Camera and serial drivers for edgegw; each driver's config lives beside its code."""
