"""Convert a T2V transformer to the TI2V layout: ``python launch/convert_ti2v.py T2V_DIR TI2V_DIR``.

``T2V_DIR`` is a diffusers ``transformer/`` folder (or a pipeline folder holding one); ``TI2V_DIR``
receives the released TI2V layout, whose zero-initialised condition embeddings make it compute
exactly what the T2V model did until training opens them. See docs/ti2v.md.
"""

import argparse

from allegro_train.models.dit import convert_t2v_to_ti2v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="T2V transformer/ folder (or a pipeline folder)")
    parser.add_argument("target", help="folder to write the TI2V transformer into")
    parser.add_argument("--max-shard-size", default="10GB", help="shard the safetensors above this size")
    args = parser.parse_args()
    model = convert_t2v_to_ti2v(args.source, args.target, args.max_shard_size)
    print(f"wrote {args.target}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
