"""Speed features: the slow tail, the bandwidth cap, one copy on disk (behaviour, not timings)."""
