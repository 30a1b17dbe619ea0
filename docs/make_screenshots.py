"""Save an SVG screenshot of each `mbml dash` panel of a store under docs/.

    python docs/make_screenshots.py runs/point_goal-s0.zarr            # docs/dash-{losses,returns,embeddings}.svg
    python docs/make_screenshots.py --demo                             # on a generated demo store
    python docs/make_screenshots.py STORE --out DIR --size 120x40 --clock UNIX_SECONDS

The app runs headless (Textual's test driver), reads the store once, and each panel is exported
with `App.save_screenshot`. `--clock` fixes the time the header's elapsed/ETA are computed from.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))            # run from a checkout without installing

from mbml_cli.views.dash import demo                   # noqa: E402
from mbml_cli.views.dash.app import PANELS, DashApp    # noqa: E402


async def shoot(store: str, out: Path, size: tuple[int, int], clock) -> list[Path]:
    app = DashApp(store, interval=3600, clock=clock)
    written = []
    async with app.run_test(size=size) as pilot:
        while app.polls < 1:
            await pilot.pause(0.05)
        for key, panel in enumerate(PANELS, start=1):
            await pilot.press(str(key))
            await pilot.pause()
            written.append(Path(app.save_screenshot(f"dash-{panel}.svg", str(out))))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", help="experiment store (runs/<name>.zarr)")
    parser.add_argument("--demo", action="store_true", help="use a generated point_goal-sized demo store")
    parser.add_argument("--out", default=str(HERE), help="folder for the SVGs (default: docs/)")
    parser.add_argument("--size", default="120x40", help="terminal size COLSxROWS")
    parser.add_argument("--clock", type=float, default=None, help="fixed 'now' (unix s) for the header")
    args = parser.parse_args(argv)
    if not args.store and not args.demo:
        parser.error("name a store, or --demo")
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store, clock = args.store, args.clock
        if args.demo:
            store = str(Path(tmp) / "demo.zarr")
            demo.build(store, n_train=10, n_test=8, rows=120, latent=20, name="demo")
            clock = demo.NOW if clock is None else clock
        fixed = (lambda: clock) if clock is not None else time.time
        written = asyncio.run(shoot(store, out, (cols, rows), fixed))
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
