"""`python -m bridgetune.methods`: regenerate docs/config.md (every config key, the methods'
options included)."""

from pathlib import Path

from bridgetune.methods import config_reference

path = Path(__file__).resolve().parents[2] / "docs" / "config.md"
path.write_text(config_reference(), encoding="utf-8")
print(f"wrote {path}")
