"""Download Meta's official SAM 2 / 2.1 checkpoints (needs network access; torch-free)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from sam2_ros.models import official_model


def download_checkpoint(model: str, out_dir: str | Path, timeout: float = 30.0) -> Path:
    """Return the local path of ``model``'s official checkpoint, downloading it if missing."""
    info = official_model(model)
    url = info.checkpoint_url
    out = Path(out_dir) / info.checkpoint_file
    if out.is_file() and out.stat().st_size > 0:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=out.name) as bar:
                while block := r.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"cannot download the official {model} checkpoint from {url}: {e}. "
            f"Without network access, copy the file to {out} by hand"
        ) from None
    part.rename(out)
    return out
