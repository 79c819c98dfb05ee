#!/usr/bin/env bash
# Issue 12's GPU measurements in one short session (one H100, torch only: no deepspeed, hydra or
# diffusers needed). Results: one JSON line per run in $OUT/results.jsonl, a markdown summary in
# $OUT/summary.md, failures (stderr tails) in $OUT/errors.log, the machine in $OUT/env.txt.
#
#     OUT=/tmp/gpu bash benchmarks/gpu_session.sh          # about 7 minutes on an H100
#     OUT=/tmp/smoke SMOKE=1 DEADLINE=900 bash benchmarks/gpu_session.sh   # the script itself, on a CPU
#
# Every run is the released width at 88 x 720 x 1280 (22 x 90 x 160 latents, 79,200 tokens, 512
# text tokens half padded), bf16, in priority order:
#   1. the whole 2.8B model, one training step: selective checkpointing, compiled, default SDPA
#   2. sampling: 2 CFG denoising steps (batch 2) of the random-weight 2.8B DiT after a warm-up,
#      extrapolated to 100 steps, plus one tiled decode of the released VAE (fp32)
#   3. SDPA kernels cudnn / flash / efficient, eager, checkpointing all, 4 blocks
#   4. fused vs unfused q/k/v, compiled, selective, 4 blocks
#   5. checkpointing all vs selective, compiled, 4 blocks
# Comparisons 3-5 time 4 of the 32 blocks: a block's cost does not depend on the depth, and 4
# blocks fit the session (the full model's step is run 1). The compiled block graph does not
# depend on the depth or the checkpointing policy, so runs after the first reuse inductor's cache.
# A run that would end past $DEADLINE seconds (default 450) is cut short or skipped and recorded.
set -u
OUT=${OUT:?set OUT to the results folder}
DEADLINE=${DEADLINE:-450}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
mkdir -p "$OUT"
START=$SECONDS
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c \
  "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  date -u; git rev-parse HEAD 2>/dev/null; } > "$OUT/env.txt" 2>&1

run() {  # run NAME LIMIT_S COMMAND...: append the command's JSON line (tagged with NAME) to results.jsonl
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - (SECONDS - START)))
  if [ "$left" -lt 30 ]; then echo "$name: skipped, session deadline" >> "$OUT/errors.log"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[$((SECONDS - START)) s] $name (limit $limit s)"
  if timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; then
    tail -n 1 "$OUT/$name.out" | python -c "import json, sys; r = json.loads(sys.stdin.read()); r['run'] = '$name'; print(json.dumps(r))" \
      >> "$OUT/results.jsonl"
  else
    { echo "== $name: exit $? after $((SECONDS - START)) s"; tail -n 20 "$OUT/$name.err"; } >> "$OUT/errors.log"
  fi
}

if [ "${SMOKE:-0}" = 1 ]; then  # the script's own check on a CPU: debug sizes, fp32, SDPA's math kernel
  STEP="python benchmarks/dit_step.py --size allegro-debug --grid 4 16 16 --text-len 16 --device cpu --dtype fp32"
  SAMPLE="--dit-size allegro-debug --vae-size allegro-vae-debug --clip 8 64 64 --text-len 16 --device cpu --dtype fp32"
  KERNELS=math
else
  STEP="python benchmarks/dit_step.py --size allegro-2.8b --device cuda --dtype bf16"
  SAMPLE="--device cuda --dtype bf16 --clip 88 720 1280 --text-len 128"
  KERNELS="cudnn flash efficient"
fi
STEP="$STEP --json"
BLOCKS="$STEP --layers 4 --steps 3 --warmup 1"
run full_selective_compiled 170 $STEP --checkpointing selective --compile --steps 2 --warmup 1
run sample_100_steps 150 python benchmarks/sample_speed.py --random-weights $SAMPLE --steps 2 --total-steps 100
for kernel in $KERNELS; do
  run "sdpa_${kernel}_all_eager_4blocks" 60 $BLOCKS --checkpointing all --sdpa-kernel $kernel
done
run unfused_selective_compiled_4blocks 90 $BLOCKS --checkpointing selective --compile
run fused_selective_compiled_4blocks 120 $BLOCKS --checkpointing selective --compile --fused-qkv
run unfused_all_compiled_4blocks 90 $BLOCKS --checkpointing all --compile

python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] \
    if (out / "results.jsonl").exists() else []
lines = ["| run | s/step | TFLOP/s | MFU | peak GiB | predicted activations GiB |", "|---|---|---|---|---|---|"]
for r in rows:
    if "decode_s" in r:
        continue
    lines.append(f"| {r['run']} | {r['s_per_step']:.3f} | {r['tflops']:.0f} | {r.get('mfu') or 0:.1%} "
                 f"| {r.get('peak_mem_gib', 0):.1f} | {r['predicted_activations_gib']:.1f} |")
for r in rows:
    if "decode_s" in r:
        lines.append(f"\nsampling {r['clip']}: {r['s_per_step']:.2f} s/step (CFG batch 2, {r['timed_steps']} steps "
                     f"after a {r['warmup_step_s']:.1f} s warm-up), decode {r['decode_s']:.1f} s, "
                     f"{r['total_steps']} steps + decode = {r['extrapolated_total_s'] / 60:.1f} min (extrapolated)")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "done in $((SECONDS - START)) s"
