"""On-disk state: atomic writes (`atomic`), the video index (`index`, `ann`) and recomputable caches (`cache`)."""
