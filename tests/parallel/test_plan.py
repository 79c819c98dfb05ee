"""The planner's choices at known points, and the ZeRO state formula at the released size."""

from __future__ import annotations

import pytest

from allegro_train.models.dit import dit_config
from allegro_train.parallel.memory import Layout, state_bytes
from allegro_train.parallel.plan import main, num_parameters, plans

P = 2_771_907_856  # the released DiT


def test_parameter_count_and_zero_states_at_the_released_size():
    assert num_parameters(dit_config("allegro-2.8b")) == P
    # bf16 weights and gradients, fp32 master + Adam moments (12 bytes), 8 ranks
    assert state_bytes(P, Layout(8, zero_stage=0)) == (16 * P, 0)
    assert state_bytes(P, Layout(8, zero_stage=2)) == (2 * P + 14 * P / 8, 0)
    assert state_bytes(P, Layout(8, zero_stage=3)) == (16 * P / 8, 0)
    assert state_bytes(P, Layout(8, zero_stage=3, offload_optimizer=True, offload_params=True)) == (0, 18 * P / 8)


def best(*args, **kwargs) -> Layout:
    return plans(*args, **kwargs)[0].layout


def test_88x720p_on_80gb_splits_the_sequence_rather_than_recompute():
    """79,200 tokens keep 272 GiB of activations without checkpointing: SP 8 brings them to 34 GiB."""
    found = plans(80, 88, 720, 1280, gpus=8)
    assert found[0].layout == Layout(8, zero_stage=2, sequence_parallel=8, checkpointing="none")
    assert not any(p.layout.sequence_parallel == 1 and p.layout.checkpointing == "none" for p in found)
    # the released recipe (ZeRO-2, every block recomputed, no SP) fits as well
    assert any(p.layout == Layout(8, zero_stage=2, sequence_parallel=1, checkpointing="all") for p in found)


def test_larger_gpus_and_shorter_clips_need_smaller_groups():
    assert best(141, 88, 720, 1280, gpus=8).sequence_parallel == 4
    assert best(80, 40, 720, 1280, gpus=8).sequence_parallel == 4
    image = plans(80, 1, 368, 640, gpus=8)[0]
    assert (image.layout.sequence_parallel, image.layout.checkpointing) == (1, "none") and image.max_batch == 16


def test_small_gpus_fall_back_to_offload_and_checkpointing():
    single = best(24, 40, 368, 640, gpus=1)
    assert (single.zero_stage, single.offload_optimizer, single.checkpointing) == (2, True, "all")
    assert best(40, 88, 720, 1280, gpus=2, gpus_per_node=2) == Layout(2, 3, 2, checkpointing="all")
    assert plans(24, 88, 720, 1280, gpus=1) == []  # even fully offloaded, 79,200 tokens on one 24 GB GPU do not fit


def test_sp_groups_stay_inside_a_node_and_divide_the_heads():
    degrees = {p.layout.sequence_parallel for p in plans(80, 88, 720, 1280, gpus=32, gpus_per_node=4)}
    assert degrees and degrees <= {1, 2, 4}
    assert {p.layout.sequence_parallel for p in plans(141, 88, 720, 1280, gpus=16)} <= {1, 2, 3, 4, 6, 8}


def test_command_line(capsys):
    main(["--gpu-mem", "80", "--frames", "88", "--height", "720", "--width", "1280", "--gpus", "8"])
    out = capsys.readouterr().out
    assert ("proposed: parallel.zero_stage=2 parallel.sequence_parallel=8 parallel.offload_optimizer=false "
            "parallel.offload_params=false model.activation_checkpointing=none") in out
    with pytest.raises(SystemExit, match="nothing fits"):
        main(["--gpu-mem", "24", "--frames", "88", "--height", "720", "--width", "1280", "--gpus", "1"])
    with pytest.raises(SystemExit):
        main(["--gpu-mem", "80"])
