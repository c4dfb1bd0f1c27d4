"""Small helpers every part of xenpvh shares (files, hashes, locks, the cache root)."""
