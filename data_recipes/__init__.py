"""Data recipes: raw videos to curated, captioned WebDataset shards with a queryable catalog.

Stages (``stages/``) are functions over clip records; scorers and captioners are pluggable;
``pipeline.run`` composes them and ``curate.py`` is the Hydra command line. See docs/curation.md.
"""
