"""The read layer: what a store says (stage status, scores, embeddings, progress), torch-free. The views
(`dash`, `report`, `cli info`, the sweep table) and `api.Run` read through it; `run/` only writes."""
