"""python submit.py --config configs/kaggle_config.json [--output PATH]: the same as `python -m interrogator submit`."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from interrogator.commands.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["submit", *sys.argv[1:]]))
