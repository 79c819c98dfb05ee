"""The built-in demo, end to end on a CPU: ``python launch/demo.py [run.dir=...] [any key of the demo config]``.

Synthetic shape videos -> curation -> VideoVAE -> precomputed latents -> DiT -> samples of
held-out prompts -> a colour and direction detector's score. Keys: allegro_train/demo/config.py;
what each step does: allegro_train/demo/pipeline.py and docs/demo.md.

Not a ``@hydra.main``: each step composes its own entry point's config with Hydra's compose API,
which refuses to run inside an active ``hydra.main``; the overrides here are read the same way.
"""

import logging
import sys

from allegro_train.demo.config import load_demo_config
from allegro_train.demo.pipeline import Demo


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    demo = Demo(load_demo_config(argv))  # validated before anything runs
    result = demo.run()
    print(demo.table(result))
    print(demo.closing_lines(result))


if __name__ == "__main__":
    main(sys.argv[1:])
