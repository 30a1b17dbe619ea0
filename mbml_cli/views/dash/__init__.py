"""`mbml dash`: a read-only Textual dashboard over an experiment store (app.py), its widgets
(widgets.py) and the store reader they share (reader.py, no UI)."""
