"""`mbml dash`: a read-only Textual dashboard over an experiment store (app.py) and its widgets
(widgets.py); they read the store through `mbml_cli.read` (no UI there)."""
