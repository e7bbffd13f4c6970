"""On-disk layouts: where models live and how they are published."""
