"""Screenshot a report.html in headless Chromium (Debian's ``chromium``): how docs/images/report-*.png
were made.

    .venv/bin/python scripts/report_screenshot.py runs/demo/report.html docs/images/report-run.png
        [--height 2000] [--hash '#sort=iou-asc']

The PNG is quantised to 256 colours so it stays small."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--hash", default="")
    parser.add_argument("--colours", type=int, default=256)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("chromium not found (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run([
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--hide-scrollbars", f"--window-size={args.width},{args.height}", f"--screenshot={raw}",
            args.page.resolve().as_uri() + args.hash,
        ], check=True, capture_output=True, timeout=120)
        from PIL import Image

        with Image.open(raw) as shot:
            small = shot.convert("RGB").quantize(colors=args.colours, method=Image.Quantize.MEDIANCUT)
            args.png.parent.mkdir(parents=True, exist_ok=True)
            small.save(args.png, optimize=True)
    print(f"{args.png}: {args.png.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
