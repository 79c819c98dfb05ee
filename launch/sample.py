"""Sample videos: ``python launch/sample.py checkpoint=PATH prompt="..." out=video.mp4``;
on K GPUs: ``torchrun --nproc_per_node=K launch/sample.py ... sequence_parallel=K``.

Keys (allegro_train/sampling/config.py): prompts_file, negative_prompt, num_frames, height, width,
steps, guidance, seed, scheduler, clean_caption, out (.mp4 or .npy), vae, text_encoder, image,
last_image, video, context_frames, windows (TI2V, docs/ti2v.md), device, dtype, vae_tiling,
offload, sequence_parallel. See docs/sampling.md.
"""

from typing import cast

import hydra
from omegaconf import DictConfig

from allegro_train.sampling.command import run_sample
from allegro_train.sampling.config import CONFIG_DIR, SampleConfig, validate_sample


@hydra.main(config_path=str(CONFIG_DIR), config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    validate_sample(cast(SampleConfig, cfg))
    run_sample(cast(SampleConfig, cfg))


if __name__ == "__main__":
    main()
