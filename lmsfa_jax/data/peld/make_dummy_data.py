"""Regenerates dummy_data/: a tiny synthetic PELD-layout folder (YOLO-seg) for the builder test.

python -m lmsfa_jax.data.peld.make_dummy_data
"""

import pathlib
import shutil

from lmsfa_jax.data import synthetic

DUMMY_DIR = pathlib.Path(__file__).parent / "dummy_data"
COUNTS = {"train": 3, "val": 2, "test": 1}
SIZE = 64


def main():
    shutil.rmtree(DUMMY_DIR, ignore_errors=True)
    synthetic.write_dataset(DUMMY_DIR / "PELD", COUNTS, SIZE, seed=0)
    print(f"wrote {DUMMY_DIR}")


if __name__ == "__main__":
    main()
