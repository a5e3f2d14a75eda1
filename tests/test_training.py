"""Training: the loss falls, resume is exact, DDP matches one process, schedule and checkpoints."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from piano_gpt.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint
from piano_gpt.train.loop import learning_rate, peak_flops, pick_device, train

CONFIGS = str(Path(__file__).resolve().parents[1] / "src" / "piano_gpt" / "configs")
REPO = Path(__file__).resolve().parents[1]

TINY = [
    "dataset=demo",
    "model=gpt2_demo",
    "model.n_layer=2",
    "model.n_embd=64",
    "model.n_head=2",
    "data.batch_size=4",
    "data.context_size=64",
    "eval_iters=2",
    "logging.progress_bar=false",
    "log_interval=1",
]


def config(tmp_path, *overrides, name="gpt2_pretraining"):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose(config_name=name, overrides=[*TINY, f"out_dir={tmp_path}", *overrides])


def log_rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_model_loss_falls_on_real_data(tmp_path, maestro_dir):
    cfg = config(
        tmp_path,
        "dataset=maestro",
        f"dataset.path={maestro_dir}",
        "optimizer.max_iters=60",
        "eval_interval=30",
        "lr.learning_rate=3e-3",
        "lr.warmup_iters=5",
        "run_name=falls",
    )
    run_dir = train(cfg)
    val = [r["val_loss"] for r in log_rows(run_dir) if "val_loss" in r]
    assert val[-1] < val[0] - 1.5, val  # from ~ln(1241)=7.1 to well below
    model, tokenizer, info = load_checkpoint(run_dir / "falls-best")
    assert info["training"]["iter_num"] in (30, 60)
    assert tokenizer.vocab_size == model.config.vocab_size


def test_resume_is_exact(tmp_path):
    common = ["optimizer.max_iters=6", "eval_interval=3", "training.microbatch_size=2"]
    full = train(config(tmp_path, *common, "run_name=full"))
    half = train(
        config(
            tmp_path,
            "optimizer.max_iters=3",
            "eval_interval=3",
            "training.microbatch_size=2",
            "run_name=half",
        )
    )
    # The run folder moved (copied to another disk, another machine): it resumes where it lies now.
    moved = tmp_path / "elsewhere" / "half"
    shutil.copytree(half, moved)
    # Resume through the real command line: the saved config, max_iters overridden.
    subprocess.run(
        [
            sys.executable, "-m", "piano_gpt.train", "--config-name=resume_training",
            f"checkpoint_path={moved / 'half-last'}", "optimizer.max_iters=6",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )  # fmt: skip
    assert [r["iter"] for r in log_rows(half)][-1] == 3  # the original folder is left as it was
    half = moved
    strip = [
        {k: v for k, v in r.items() if k in ("iter", "train_loss", "val_loss", "lr")} for r in log_rows(full)
    ]
    resumed = [
        {k: v for k, v in r.items() if k in ("iter", "train_loss", "val_loss", "lr")} for r in log_rows(half)
    ]
    assert resumed == strip  # bit-identical losses at every step
    a = load_file(full / "full-last" / "model.safetensors")
    b = load_file(half / "half-last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_schedule_values(tmp_path):
    cfg = config(
        tmp_path, "lr.learning_rate=1.0", "lr.min_lr=0.1", "lr.warmup_iters=9", "optimizer.max_iters=109"
    )
    assert learning_rate(0, cfg) == pytest.approx(0.1)  # (0 + 1) / (9 + 1)
    assert learning_rate(8, cfg) == pytest.approx(0.9)
    assert learning_rate(9, cfg) == pytest.approx(1.0)  # cosine starts at the peak
    assert learning_rate(59, cfg) == pytest.approx(0.55)  # halfway: min + (max - min) / 2
    assert learning_rate(109, cfg) == pytest.approx(0.1)
    assert learning_rate(500, cfg) == pytest.approx(0.1)


def test_checkpoint_survives_crash_mid_write(tmp_path, monkeypatch):
    from piano_gpt.model import GPT, GPTConfig
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    tokenizer = ExponentialTimeTokenizer()
    model = GPT(GPTConfig(block_size=16, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=8))
    path = save_checkpoint(tmp_path / "run-last", model, tokenizer, metrics={"val_loss": 1.0})

    import piano_gpt.train.checkpoint as checkpoint

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint, "_fsync_dir", crash)  # dies after the files, before the rename
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, tokenizer, metrics={"val_loss": 0.5})
    assert verify_checkpoint(path)["metrics"]["val_loss"] == 1.0  # the previous one still loads
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    common = [
        *TINY,
        "optimizer.max_iters=4",
        "eval_interval=2",
        "optimizer.gradient_accumulation_steps=2",
        f"out_dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "piano_gpt.train", *common, "run_name=single"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "-m", "piano_gpt.train", *common, "run_name=ddp",
        ],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = log_rows(tmp_path / "single"), log_rows(tmp_path / "ddp")
    assert [r["iter"] for r in one] == [r["iter"] for r in two]
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a, b)
    wa = load_file(tmp_path / "single" / "single-last" / "model.safetensors")
    wb = load_file(tmp_path / "ddp" / "ddp-last" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_steps_on_cpu(tmp_path, dtype):
    # float16 goes through the GradScaler (CPU build of torch supports it); the scaler state is saved.
    run_dir = train(
        config(tmp_path, f"system.dtype={dtype}", "optimizer.max_iters=3", "eval_interval=3", "run_name=mp")
    )
    rows = log_rows(run_dir)
    assert all(torch.isfinite(torch.tensor(r.get("train_loss", 0.0))) for r in rows)
    meta = json.loads((run_dir / "mp-last" / "training_state.json").read_text())
    assert (meta["scaler"] is not None) == (dtype == "float16")


@pytest.mark.slow
def test_compiled_model_trains(tmp_path):
    run_dir = train(
        config(
            tmp_path,
            "system.compile=true",
            "model.n_layer=1",
            "optimizer.max_iters=2",
            "eval_interval=2",
            "run_name=c",
        )
    )
    assert (run_dir / "c-last" / "model.safetensors").exists()


def test_wandb_offline_needs_no_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = train(
        config(
            tmp_path,
            "logging.wandb_log=true",
            "logging.wandb_mode=offline",
            "optimizer.max_iters=2",
            "eval_interval=2",
            "run_name=wb",
        )
    )
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert (run_dir / "log.jsonl").exists()  # local logs always


def test_cuda_device_and_mfu_peak_on_a_single_gpu(tmp_path, monkeypatch):
    """On one GPU the device must carry an index (torch.cuda.set_device rejects a bare "cuda") and MFU
    is measured against that GPU's data-sheet peak. Found on an H100: set_device("cuda") raised."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cfg = config(tmp_path)
    assert pick_device(cfg, local_rank=0) == "cuda:0"
    assert chosen == ["cuda:0"]
    assert peak_flops(cfg, "cuda:0") == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_flops(cfg, "cuda:0") == 756e12
    assert peak_flops(config(tmp_path, "system.peak_flops=1e12"), "cuda:0") == 1e12
    assert peak_flops(cfg, "cpu") == 1e11


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_resume_exactly(tmp_path):
    """system.fsdp=true under torchrun (gloo on CPU): the same losses and weights as one process, a
    resumed FSDP run bit-identical to an uninterrupted one, and its checkpoint resumable without FSDP."""
    common = [
        *TINY,
        "eval_iters=3",  # not a multiple of 2 ranks: the padded evaluation batches must count zero
        "eval_interval=2",
        "optimizer.gradient_accumulation_steps=2",
        f"out_dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]

    def run(*args, launcher=(sys.executable,)):
        done = subprocess.run([*launcher, "-m", "piano_gpt.train", *args], cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, f"{done.stdout[-1500:]}\n{done.stderr[-4000:]}"  # how far each rank got

    run(*common, "optimizer.max_iters=4", "run_name=single")
    run(*common, "optimizer.max_iters=4", "system.fsdp=true", "run_name=fsdp", launcher=torchrun)
    run(*common, "optimizer.max_iters=2", "system.fsdp=true", "run_name=half", launcher=torchrun)
    resume = ["--config-name=resume_training", "optimizer.max_iters=4"]
    run(*resume, f"checkpoint_path={tmp_path / 'half' / 'half-last'}", launcher=torchrun)
    run(*common, "optimizer.max_iters=2", "system.fsdp=true", "run_name=cross", launcher=torchrun)
    run(*resume, f"checkpoint_path={tmp_path / 'cross' / 'cross-last'}")  # one process, no FSDP

    def losses(name):
        keep = ("iter", "train_loss", "val_loss")
        return [{k: v for k, v in row.items() if k in keep} for row in log_rows(tmp_path / name)]

    def weights(name):
        return load_file(tmp_path / name / f"{name}-last" / "model.safetensors")

    single, fsdp = losses("single"), losses("fsdp")
    assert [r["iter"] for r in single] == [r["iter"] for r in fsdp] == [0, 1, 2, 3, 4]
    for a, b in zip(single, fsdp):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (a, b)
    assert losses("half") == fsdp  # resumed under FSDP: bit-identical
    one, sharded, resumed = weights("single"), weights("fsdp"), weights("half")
    assert sorted(one) == sorted(sharded)  # the same checkpoint files with or without FSDP
    assert all(torch.allclose(one[k], sharded[k], atol=1e-6) for k in one)
    assert all(torch.equal(sharded[k], resumed[k]) for k in sharded)
    crossed = weights("cross")
    assert all(torch.allclose(one[k], crossed[k], atol=1e-6) for k in one)


def test_not_a_terminal_gets_one_plain_line_per_log_interval(tmp_path, capsys):
    """Under a pipe (pytest's capture is one), with the bar asked for: plain lines, no redraws."""
    train(
        config(
            tmp_path, "optimizer.max_iters=4", "log_interval=2", "logging.progress_bar=true", "run_name=plain"
        )
    )
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("iter ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"]
    assert all("loss" in line and "tok/s" in line and "ETA" in line for line in lines)
    assert "\r" not in out


def test_gradient_accumulation_fits_the_process_count():
    from piano_gpt.train.config import ConfigError, gradient_accumulation

    assert gradient_accumulation(None, 1) == 1  # none asked for: one micro-batch per process
    assert gradient_accumulation(None, 2) == 2
    assert gradient_accumulation(None, 8) == 8
    assert gradient_accumulation(8, 2) == 8  # global: 4 per process
    assert gradient_accumulation(3, 1) == 3
    with pytest.raises(ConfigError, match=r"=3 must be a multiple of the 2 processes .* leave it out"):
        gradient_accumulation(3, 2)
    with pytest.raises(ConfigError, match=r"=0: must be the micro-batches per step"):
        gradient_accumulation(0, 1)


def test_the_config_takes_the_chosen_accumulation_and_the_log_names_the_global_batch(
    tmp_path, monkeypatch, capsys
):
    from piano_gpt.train.config import validate_config

    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = config(tmp_path)
    validate_config(cfg)
    assert cfg.optimizer.gradient_accumulation_steps == 4
    monkeypatch.delenv("WORLD_SIZE")
    train(config(tmp_path, "optimizer.max_iters=1", "eval_interval=1", "run_name=gb"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("global batch")]
    # 1 micro-batch of 4 sequences of 64 tokens
    assert lines == [
        "global batch: 256 tokens per step = 1 micro-batch (1 per process x 1) x 4 sequences x 64 tokens"
    ]


@pytest.mark.slow
def test_readme_torchrun_fsdp_command_runs_without_an_accumulation_key(tmp_path):
    """The README's `torchrun --standalone --nproc-per-node=2 -m piano_gpt.train model=gpt2_demo
    system.fsdp=true`, made tiny: gloo on CPU, two processes, no gradient_accumulation_steps given."""
    done = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "-m", "piano_gpt.train", *TINY, "system.fsdp=true", "optimizer.max_iters=2", "eval_interval=2",
            f"out_dir={tmp_path}", "run_name=fsdp",
        ],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("global batch: 512 tokens per step = 2 micro-batches (1 per process x 2)") == 1
    assert done.stdout.count("val_loss:") == 1  # the closing summary: rank 0 only
    assert [r["iter"] for r in log_rows(tmp_path / "fsdp")] == [0, 1, 2]


def test_wandb_without_a_key_stops_before_any_work(tmp_path, monkeypatch):
    from piano_gpt.train.config import ConfigError
    from piano_gpt.train.loop import check_wandb_key

    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(ConfigError, match=r"^logging.wandb_log=true: no W&B API key for api.wandb.ai \(set"):
        train(config(tmp_path, "logging.wandb_log=true", "run_name=nokey"))
    assert not (tmp_path / "nokey").exists()  # nothing built, nothing written
    check_wandb_key("offline")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    check_wandb_key(None)  # `wandb login` wrote one


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_tmp_folder(tmp_path, monkeypatch):
    import errno

    import piano_gpt.train.checkpoint as checkpoint
    from piano_gpt.model import GPT, GPTConfig
    from piano_gpt.tokenizers import ExponentialTimeTokenizer

    tokenizer = ExponentialTimeTokenizer()
    model = GPT(GPTConfig(block_size=16, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=8))
    path = save_checkpoint(tmp_path / "run-best", model, tokenizer, metrics={"val_loss": 1.0})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_model", full)
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(path, model, tokenizer, metrics={"val_loss": 0.5})
    message = str(caught.value)
    assert (
        message.startswith(f"{path}: not saved, no space left on the disk of {tmp_path}")
        and "\n" not in message
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-best"]  # no run-best.tmp
    assert verify_checkpoint(path)["metrics"]["val_loss"] == 1.0  # the previous one is kept

    def safetensors_full(*args, **kwargs):  # what safetensors raises: its own error, the text only
        raise RuntimeError(
            'Error while serializing: IoError(Os { code: 28, message: "No space left on device" })'
        )

    monkeypatch.setattr(checkpoint, "save_model", safetensors_full)
    with pytest.raises(CheckpointError, match="no space left"):
        save_checkpoint(path, model, tokenizer)
    assert not (tmp_path / "run-best.tmp").exists()


def test_compile_says_it_is_compiling(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", lambda model: model)  # the message, not the compiler, is tested
    train(config(tmp_path, "system.compile=true", "optimizer.max_iters=1", "eval_interval=1", "run_name=c"))
    out = capsys.readouterr().out
    assert "compiling the model (system.compile=true): the first steps take a minute or more" in out
    assert out.index("compiling the model") < out.index("iter 1/1")
