"""Message-passing layers, one per file, each ``(graph, h_src, rel) -> (h_dst, rel)``."""
