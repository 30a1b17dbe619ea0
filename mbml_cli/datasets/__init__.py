"""Users' data in and out of a store: `mbml import minari|arrays` (`importing`, `minari_io`,
`arrays`), `mbml export --format minari` (`export`), and the shared `batches` (columns, episodes,
task parameters, action bounds). Minari is an optional extra, imported only when used."""
from .batches import action_scale, original_units

__all__ = ["action_scale", "original_units"]
