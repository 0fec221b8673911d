"""The GPU smoke check behind ``scripts/gpu_smoke.sh`` (issue #30); see that script for what it checks.

Every check prints one line, ``PASS``, ``FAIL`` or ``PENDING`` (a part that needs work not done
yet; it names what). The exit code is 1 when a check failed, else 0. ``GPU_SMOKE_DEVICE=cpu``
runs every check with the CPU standing in for the GPU (comparisons are then CPU against CPU):
it tests this script on a machine without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("GPU_SMOKE_DEVICE", "cuda")
GPUS = torch.cuda.device_count() if DEVICE == "cuda" else 2  # the dry run stands in for two
TOY = ["--set", "train.steps=40", "--set", "train.log_every=1", "--set", "train.eval_batches=0",
       "--set", "train.save_every=0"]
RUNS = (("device", DEVICE), ("cpu", "cpu"))
"""Each comparison trains or samples twice: ``(label, device)``, the label naming the output."""
results: list[tuple[str, str, str]] = []


def report(status: str, name: str, detail: str) -> None:
    results.append((status, name, detail))
    print(f"{status:<8}{name}: {detail}", flush=True)


def flexmdm(*args: str, ranks: int = 1) -> str:
    """Run the ``flexmdm`` command (under torchrun for ``ranks`` > 1); its stdout."""
    launcher = [sys.executable, "-m", "flexmdm.cli"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                    "-m", "flexmdm.cli"]
    done = subprocess.run([*launcher, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"flexmdm {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return done.stdout


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def close(first: float, second: float, relative: float) -> bool:
    return abs(first - second) <= relative * max(abs(first), abs(second))


def check(name: str, function, *args) -> None:
    try:
        function(name, *args)
    except Exception as error:  # a check that crashes is a failed check; the others still run
        report("FAIL", name, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def train_toy(name: str, work: Path) -> None:
    """Tiny FlexMDM on the device and on the CPU: same first loss (1e-4), last loss within 5 %."""
    for label, device in RUNS:
        flexmdm("train", "configs/toy.yaml", *TOY, "--set", f"train.device={device}",
                "--set", f"output_dir={work / f'toy-{label}'}")
    gpu, cpu = losses(work / "toy-device"), losses(work / "toy-cpu")
    ok = close(gpu[0], cpu[0], 1e-4) and close(gpu[-1], cpu[-1], 0.05)
    report("PASS" if ok else "FAIL", name, f"first loss {gpu[0]:.6f} vs {cpu[0]:.6f} on CPU, last {gpu[-1]:.4f} vs "
           f"{cpu[-1]:.4f}")


def forward_matches(name: str, work: Path) -> None:
    """The CPU-trained model's logits and gaps on the device equal the CPU's (1e-4)."""
    from flexmdm.models import load_pretrained

    model, _ = load_pretrained(work / "toy-cpu" / "model")
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (8, 30), generator=generator)
    t, lengths = torch.rand(8, generator=generator), torch.randint(1, 31, (8,), generator=generator)
    with torch.no_grad():
        expected = model(x, t, lengths)
        got = model.to(DEVICE)(x.to(DEVICE), t.to(DEVICE), lengths.to(DEVICE))
    errors = [float((g.cpu() - e).nan_to_num(posinf=0, neginf=0).abs().max()) for g, e in zip(got, expected)]
    ok = all(error <= 1e-4 for error in errors) and all(g.device.type == torch.device(DEVICE).type for g in got)
    report("PASS" if ok else "FAIL", name, f"largest differences {errors} (logits, gaps)")


def sample_on_device(name: str, work: Path) -> None:
    """1000 samples on the device and on the CPU: length distributions within TV 0.15."""
    if "--device" not in flexmdm("sample", "--help"):
        report("PENDING", name, "'flexmdm sample' has no --device yet (issue #30: device-agnostic sampling)")
        return
    lengths = {}
    for label, device in RUNS:
        out = work / f"samples-{label}.jsonl"
        flexmdm("sample", str(work / "toy-cpu" / "model"), "--num", "1000", "--steps", "32", "--device", device,
                "--out", str(out))
        lengths[label] = [json.loads(line)["length"] for line in out.read_text().splitlines()]
    top = max(max(v) for v in lengths.values()) + 1
    histograms = [torch.bincount(torch.tensor(v), minlength=top).double() / len(v) for v in lengths.values()]
    tv = 0.5 * float((histograms[0] - histograms[-1]).abs().sum())
    report("PASS" if tv <= 0.15 else "FAIL", name, f"length TV {tv:.3f} between device and CPU samples")


def two_ranks(name: str, work: Path) -> None:
    """2 processes (NCCL on CUDA, gloo in the dry run) reproduce the 1-process run's losses (1e-4)."""
    if GPUS < 2:
        report("PENDING", name, f"needs 2 GPUs, this machine has {GPUS}")
        return
    flexmdm("train", "configs/toy.yaml", *TOY, "--set", f"train.device={DEVICE}",
            "--set", f"output_dir={work / 'toy-2-ranks'}", ranks=2)
    two, one = losses(work / "toy-2-ranks"), losses(work / "toy-device")
    ok = all(close(a, b, 1e-4) for a, b in zip(two[:5], one[:5])) and close(two[-1], one[-1], 0.05)
    report("PASS" if ok else "FAIL", name, f"first losses {two[0]:.6f} vs {one[0]:.6f} with one rank, "
           f"last {two[-1]:.4f} vs {one[-1]:.4f}")


def tiny_llada(work: Path) -> Path:
    """A tiny native LLaDA checkpoint (the toy task's vocabulary), written once."""
    from flexmdm.models import ModelConfig, build_model
    from flexmdm.models.llada import save_llada

    if not (work / "tiny-llada" / "config.json").is_file():
        torch.manual_seed(0)
        save_llada(build_model(ModelConfig(kind="mdm", architecture="llada", vocab_size=4, mask_id=2, pad_id=3,
                                           d_model=32, n_layers=2, n_heads=4, mlp_ratio=2.0, max_length=48)),
                   work / "tiny-llada")
    return work / "tiny-llada"


def retrofit_run(work: Path, label: str, device: str, ranks: int = 1, base_dtype: str = "float32",
                 **train: object) -> list[float]:
    """Retrofit the tiny checkpoint through a config (20 steps) with ``train`` settings; the losses."""
    config = {"retrofit": {"base": str(tiny_llada(work)), "lora_rank": 4, "time_rank": 8, "base_dtype": base_dtype},
              "data": {"task": "toy", "max_a": 8, "max_b": 8},
              "train": {"steps": 20, "batch_size": 16, "micro_batch_size": 8, "lr": 1e-2, "warmup_steps": 1,
                        "log_every": 1, "eval_batches": 0, "device": device, **train},
              "output_dir": str(work / f"retrofit-{label}")}
    (work / f"retrofit-{label}.yaml").write_text(yaml.safe_dump(config))
    flexmdm("train", str(work / f"retrofit-{label}.yaml"), ranks=ranks)
    return losses(work / f"retrofit-{label}")


def retrofit_on_device(name: str, work: Path) -> None:
    """A tiny native LLaDA checkpoint retrofitted through the config on the device and on the CPU."""
    gpu, cpu = (retrofit_run(work, label, device) for label, device in RUNS)
    exported = (work / "retrofit-device" / "adapters" / "adapter_model.safetensors").is_file()
    ok = exported and close(gpu[0], cpu[0], 1e-4) and close(gpu[-1], cpu[-1], 0.05)
    report("PASS" if ok else "FAIL", name, f"float32 base, DDP path: first loss {gpu[0]:.6f} vs {cpu[0]:.6f} on CPU, "
           f"last {gpu[-1]:.4f} vs {cpu[-1]:.4f}, adapters written: {exported}")


def retrofit_bf16_fsdp(name: str, work: Path) -> None:
    """The tiny retrofit with a bfloat16 base under autocast, sharded with FSDP over min(2, GPUs) ranks,
    against the float32 CPU run: first loss within 3 %, last within 15 % (bfloat16 rounding)."""
    ranks = min(2, GPUS)
    sharded = retrofit_run(work, "bf16-fsdp", DEVICE, ranks=ranks, strategy="fsdp", autocast="bfloat16",
                           save_every=10, base_dtype="bfloat16")
    cpu = losses(work / "retrofit-cpu")
    shards = sorted(p.name for p in (work / "retrofit-bf16-fsdp" / "checkpoints" / "step_000020" / "sharded").iterdir())
    ok = close(sharded[0], cpu[0], 0.03) and close(sharded[-1], cpu[-1], 0.15) and len(shards) == ranks + 1
    report("PASS" if ok else "FAIL", name, f"{ranks} rank(s): first loss {sharded[0]:.4f} vs {cpu[0]:.4f} (float32 "
           f"CPU), last {sharded[-1]:.4f} vs {cpu[-1]:.4f}, checkpoint shards {shards}")


def main() -> int:
    print(f"GPU smoke check on {DEVICE} ({GPUS} device(s)){' (dry run on the CPU)' if DEVICE == 'cpu' else ''}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as directory:
        work = Path(directory)
        check("train a tiny FlexMDM", train_toy, work)
        check("forward on the device", forward_matches, work)
        check("sample on the device", sample_on_device, work)
        check("2 processes", two_ranks, work)
        check("retrofit a tiny LLaDA checkpoint", retrofit_on_device, work)
        check("retrofit in bf16 with FSDP", retrofit_bf16_fsdp, work)
    counts = {status: sum(1 for r in results if r[0] == status) for status in ("PASS", "FAIL", "PENDING")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['PENDING']} pending", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
