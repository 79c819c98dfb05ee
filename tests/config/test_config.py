"""The config system fails at start-up, naming the key, for every kind of bad config.

Composition goes through the real ``configs/`` folder; one test runs a launcher-style
``@hydra.main`` script in a subprocess, the path users hit from the command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from allegro_train.config import ConfigError, TrainConfig, config_dir, load_config, load_vae_config, validate
from allegro_train.config.schema import AttentionBackend, Objective, Precision, dit_config_for

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
STAGES = sorted(p.stem for p in (CONFIGS / "stage").glob("*.yaml"))
SHARDS = "data.shards=['/data/{000000..000009}.tar']"
NULL = "data.null_caption=/data/null.t5.npy"  # the empty caption's T5 states, for caption dropout
VAE_STAGES = {"vae_pretrain"}  # composed on configs/train_vae.yaml, the VAE trainer's root
# The VAE stage freezes 2D layers and wants LPIPS weights: neither exists here, so train all, no LPIPS.
VAE_LOCAL = ("vae.trainable=all", "loss.lpips=0")


def load_stage(stage: str):
    if stage in VAE_STAGES:
        return load_vae_config([f"+stage={stage}", SHARDS, *VAE_LOCAL])
    return load_config([f"+stage={stage}", SHARDS, NULL])


def test_default_config_composes_validates_and_is_the_released_recipe():
    cfg = load_config()
    assert cfg.model.name == "allegro-debug" and cfg.data.shards == [] and cfg.stage.name == "debug"
    assert cfg.run.dir == "runs/debug"
    assert cfg.model.attention_backend == AttentionBackend.sdpa == "sdpa"
    assert cfg.diffusion.objective == Objective.epsilon and cfg.diffusion.min_snr_gamma == 5.0
    assert (cfg.diffusion.offset_noise, cfg.diffusion.caption_dropout) == (0.02, 0.1)
    optim = cfg.optim
    assert (optim.lr, list(optim.betas), optim.weight_decay, optim.eps) == (1e-4, [0.9, 0.999], 1e-2, 1e-8)
    assert cfg.optim.grad_clip == 1.0 and cfg.parallel.precision == Precision.bf16
    assert f"{cfg.parallel.precision}" == "bf16"  # str enums format as their value for downstream code


def test_plain_schema_validates_without_yaml():
    validate(TrainConfig())
    validate(OmegaConf.structured(TrainConfig))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_composes_and_validates(stage):
    cfg = load_stage(stage)
    assert cfg.stage.name == stage and cfg.run.dir == f"runs/{stage}"
    assert cfg.data.buckets, stage


def test_precomputed_shards_need_the_empty_caption_for_caption_dropout():
    with pytest.raises(ConfigError, match="data.null_caption"):
        load_config(["+stage=720p", SHARDS])
    load_config(["+stage=720p", SHARDS, "diffusion.caption_dropout=0"])
    load_config(["+stage=720p", SHARDS, "data.precomputed=false"])  # the trainer encodes "" itself


def test_stage_numbers():
    assert STAGES == sorted(["vae_pretrain", "t2i_368p", "t2v_368p_40f", "t2v_720p_40f", "720p", "finetune", "demo",
                             "demo_ti2v"])
    by_stage = {s: load_stage(s) for s in STAGES}

    def scales(cfg):
        return (cfg.model.interpolation_scale_t, cfg.model.interpolation_scale_h, cfg.model.interpolation_scale_w)

    def buckets(cfg):
        return [(b.frames, b.height, b.width) for b in cfg.data.buckets]

    assert scales(by_stage["720p"]) == (2.2, 2.0, 2.0) and buckets(by_stage["720p"]) == [(88, 720, 1280)]
    assert scales(by_stage["finetune"]) == (2.2, 2.0, 2.0) and by_stage["finetune"].optim.lr == 1e-5
    assert scales(by_stage["t2v_720p_40f"]) == (1.0, 2.0, 2.0)
    assert buckets(by_stage["t2v_720p_40f"]) == [(40, 720, 1280)]
    assert scales(by_stage["t2i_368p"]) == (1.0, 1.0, 1.0) and buckets(by_stage["t2i_368p"]) == [(1, 368, 640)]
    assert scales(by_stage["t2v_368p_40f"]) == (1.0, 1.0, 1.0) and buckets(by_stage["t2v_368p_40f"]) == [(40, 368, 640)]
    for stage in ("t2i_368p", "t2v_368p_40f", "t2v_720p_40f", "720p", "finetune"):
        cfg = by_stage[stage]
        assert cfg.model.name == "allegro-2.8b" and cfg.parallel.zero_stage == 2, stage
        assert cfg.optim.lr == (1e-5 if stage == "finetune" else 1e-4), stage
    demo = by_stage["demo"]
    assert demo.model.name == "allegro-debug" and demo.parallel.precision == "fp32" and (1, 64, 64) in buckets(demo)
    vae = by_stage["vae_pretrain"]
    assert vae.data.precomputed is False and vae.vae.name == "allegro-vae" and vae.parallel.zero_stage == 2
    assert buckets(vae) == [(24, 320, 320), (1, 320, 320)]
    with pytest.raises(ConfigError, match="loss.lpips_path=None: loss.lpips=1.0 needs local LPIPS weights"):
        load_vae_config(["+stage=vae_pretrain", SHARDS, "vae.trainable=all"])  # the stage's SD weights
    # The stage's RoPE scales reach the DiT config the trainer builds.
    dit = dit_config_for(by_stage["t2v_720p_40f"].model)
    assert (dit.interpolation_scale_t, dit.interpolation_scale_h, dit.num_layers) == (1.0, 2.0, 32)


def test_command_line_wins_over_stage():
    cfg = load_config(["+stage=720p", "data=synthetic", "parallel=zero3_offload", "optim.lr=3e-5"])
    assert cfg.data.shards == [] and cfg.parallel.zero_stage == 3 and cfg.parallel.offload_params
    assert cfg.optim.lr == 3e-5 and cfg.data.buckets[0].frames == 88


def test_real_stage_without_shards_fails_naming_data_shards():
    with pytest.raises(ConfigError, match=r"data\.shards"):
        load_config(["+stage=720p"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.nonexistent=1", "model.nonexistent"),
        ("+model.nonexistent=1", "model.nonexistent"),
        ("+nonexistent=1", "nonexistent"),
        ("+data.buckets.0.depth=3", "data.buckets[0].depth"),
        ("optim.lr=abc", "optim.lr"),
        ("parallel.zero_stage=two", "parallel.zero_stage"),
        ("model.attention_backend=xformers", "model.attention_backend"),
        ("diffusion.objective=x0", "diffusion.objective"),
    ],
)
def test_bad_key_type_or_enum_fails_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config([override])
    assert key in str(info.value)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.name=allegro-9b"], "model.name"),
        (["model=allegro_2.8b", "parallel.sequence_parallel=5"], "parallel.sequence_parallel"),
        (["model.activation_checkpointing=sometimes"], "model.activation_checkpointing"),
        (["data.buckets=[{frames: 8, height: 100, width: 64}]"], "data.buckets[0].height"),
        (["data.buckets=[{frames: 6, height: 64, width: 64}]"], "data.buckets[0].frames"),
        (["data.buckets=[{frames: 8, height: 64}]"], "data.buckets[0].width"),
        (["data.buckets=[]"], "data.buckets"),
        (["data.token_budget=100"], "data.token_budget"),  # the 8x64x64 bucket alone is 2x8x8=128 positions
        (["data.image_fraction=0.5"], "data.image_fraction"),  # needs image and video buckets
        (["data.image_fraction=1.5"], "data.image_fraction"),
        (["data.max_upscale=0.5"], "data.max_upscale"),
        (["data.shuffle_buffer=0"], "data.shuffle_buffer"),
        (["data.epochs=0"], "data.epochs"),
        (["data.decode_backend=opencv"], "data.decode_backend"),
        (["parallel.zero_stage=4"], "parallel.zero_stage"),
        (["parallel.offload_params=true"], "parallel.offload_params"),
        (["diffusion.caption_dropout=1.5"], "diffusion.caption_dropout"),
        (["optim.lr=0"], "optim.lr"),
        (["model.interpolation_scale_t=-1"], "model.interpolation_scale_t"),
        (["model.fused_qkv=true", "model.lora_rank=4"], "model.fused_qkv"),  # LoRA's default targets: to_q ...
    ],
)
def test_semantic_errors_raise_config_error_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    assert key in str(info.value)


def test_valid_semantic_overrides_pass():
    cfg = load_config(["model=allegro_2.8b", "parallel.sequence_parallel=8", "model.activation_checkpointing=every_2"])
    assert cfg.parallel.sequence_parallel == 8
    cfg = load_config(["model.activation_checkpointing=selective", "model.fused_qkv=true", "model.lora_rank=4",
                       "model.lora_targets=[to_out.0]"])
    assert cfg.model.fused_qkv and cfg.model.activation_checkpointing == "selective"
    cfg = load_config(["+stage=demo", "data.token_budget=128", "data.image_fraction=0.25", "data.decode_backend=pyav"])
    assert cfg.data.image_fraction == 0.25 and cfg.data.decode_backend == "pyav"


def test_unknown_key_inside_a_stage_yaml_fails_naming_it(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / "stage" / "broken.yaml").write_text("# @package _global_\noptim:\n  learning_rate: 1e-4\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        load_config(["+stage=broken"], config_dir_path=configs)


def test_missing_config_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        config_dir(tmp_path)


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(script), *args], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def test_launcher_exits_nonzero_naming_the_bad_key(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import hydra
        from allegro_train.config import validate

        @hydra.main(config_path={str(CONFIGS)!r}, config_name="config", version_base="1.3")
        def main(cfg):
            validate(cfg)
            heavy = [m for m in ("deepspeed", "webdataset") if m in sys.modules]
            print("TRAINING", cfg.optim.lr, "heavy imports:", heavy)

        main()
    """))
    ok = _run(script, "hydra.run.dir=.", "optim.lr=2e-4")
    assert ok.returncode == 0 and "TRAINING 0.0002 heavy imports: []" in ok.stdout, ok.stderr
    bad = _run(script, "hydra.run.dir=.", "optim.learning_rate=1e-4")
    assert bad.returncode != 0 and "optim.learning_rate" in bad.stderr and "TRAINING" not in bad.stdout


def test_hydra_entry_validates_before_the_task(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        from allegro_train.config import hydra_entry

        @hydra_entry
        def main(cfg):
            print("TRAINING", cfg.stage.name)

        main()
    """))
    assert "TRAINING demo" in _run(script, "hydra.run.dir=.", "+stage=demo").stdout
    bad = _run(script, "hydra.run.dir=.", "model.name=allegro-9b")
    assert bad.returncode != 0 and "model.name" in bad.stderr and "TRAINING" not in bad.stdout


def test_vae_root_errors_name_the_key(tmp_path):
    base = ["+stage=vae_pretrain", SHARDS, *VAE_LOCAL]
    cases = {
        "parallel.zero_stage=3": "parallel.zero_stage=3: VAE training runs ZeRO 0-2",
        "data.precomputed=true": "data.precomputed=True: VAE training reads pixels",
        "validation.every_steps=10": "validation.shards=None: validation.every_steps needs held-out raw shards",
        "vae.name=allegro-vae-huge": "vae.name='allegro-vae-huge': not a VAE size",
        f"vae.image_vae={tmp_path / 'absent'}": "vae.image_vae=.*absent': no such folder",
        "discriminator.betas=[0.5,1.5]": r"discriminator.betas=\[0.5, 1.5\]: must be two numbers in \[0, 1\)",
        "data.buckets=[{frames: 6, height: 36, width: 64}]": "data.buckets\\[0\\].frames=6: must be 1 .* or a multiple of 4",
        "+model.name=allegro-debug": "keys not in the schema .*vae_schema.py.*: model",
        "parallel.sequence_parallel=2": "parallel.sequence_parallel=2: sequence parallelism .* must be 1",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_vae_config([*base, override])
    with pytest.raises(ConfigError, match="data.buckets\\[0\\].height=36: must be a positive multiple of 8"):
        load_vae_config([*base, "data.buckets=[{frames: 8, height: 36, width: 64}]"])
