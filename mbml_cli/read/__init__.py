"""The read layer: what a store says, torch-free and apart from `run/` (which only writes). The views
(`dash`, `report`, `cli info`, the sweep table), the live view and `api.Run` read through it.

records.py   stage status: the one fold of the stage records, `stale` where inputs changed; progress
tables.py    metric tables (`metrics/<stage>/<name>`) and what a plot of them draws
scores.py    eval results per test task, and the summary (best/last/eval/probe) of each algorithm
batches.py   the training batches' returns, whether their collector learned, the BCQ teachers' report
finetune.py  fine-tuning curves and summaries
embedding.py task embeddings projected to 2-D
snapshot.py  everything the dashboard shows at once, and what each panel makes of it
values.py    plain numbers from records that may hold anything
"""
