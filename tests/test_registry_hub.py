"""The local registry (piano_gpt.registry), the hub (piano_gpt.hub), the piano-gpt command and the
download / upload scripts. Offline: downloads are served by huggingface_hub itself from a cache laid
out by hand (models--org--name/{blobs,snapshots/<commit>,refs/main}), uploads stop at HfApi."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hf_constants

import piano_gpt.train.checkpoint as checkpoint_module
from piano_gpt import hub
from piano_gpt.commands import cli
from piano_gpt.model import GPT, GPTConfig
from piano_gpt.registry import (
    HUB_SOURCE,
    checkpoint_info,
    format_table,
    list_checkpoints,
    register_checkpoint_in_store,
)
from piano_gpt.tokenizers import ExponentialTimeTokenizer
from piano_gpt.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "test-org/piano-gpt-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WEIGHTS_ONLY = ["config.json", "manifest.json", "model.safetensors", "tokenizer.json"]


# --- helpers --------------------------------------------------------------------------------------------


def make_checkpoint(
    path: Path,
    created: str | None = None,
    seed: int = 0,
    tokens_seen: int = 4096,
    val_loss: float = 3.25,
    training_state: bool = False,
) -> Path:
    torch.manual_seed(seed)
    tokenizer = ExponentialTimeTokenizer()
    model = GPT(GPTConfig(block_size=32, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16))
    with pytest.MonkeyPatch.context() as patch:
        if created is not None:  # the creation time config.json records
            patch.setattr(checkpoint_module, "time", types.SimpleNamespace(strftime=lambda _: created))
        save_checkpoint(
            path,
            model,
            tokenizer,
            run_config={"run_name": path.name},
            metrics={"val_loss": val_loss, "best_val_loss": val_loss},
            training={"iter_num": 7, "tokens_seen": tokens_seen},
            training_tensors={"rng.torch": torch.get_rng_state()} if training_state else None,
            training_meta={"iter_num": 7} if training_state else None,
        )
    return path


def publish_to_cache(cache_dir: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay out files the way huggingface_hub's cache holds a downloaded snapshot: content in
    blobs/<hash>, snapshots/<commit>/<path> relative symlinks to the blobs, refs/main the commit."""
    storage = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for path_in_repo, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path_in_repo
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return snapshot


class FakeHfApi:
    """Stands in at the HTTP boundary: records what would be sent; can publish it into a cache."""

    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = cache_dir
        self.created: list[dict] = []
        self.uploads: list[dict] = []
        self.published: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.created.append({"repo_id": repo_id, **kwargs})

    def upload_folder(self, *, repo_id, folder_path, path_in_repo, allow_patterns, **kwargs):
        folder = Path(folder_path)
        sent = {name: (folder / name).read_bytes() for name in allow_patterns}
        self.uploads.append(
            {
                "repo_id": repo_id,
                "folder_path": folder_path,
                "path_in_repo": path_in_repo,
                "allow_patterns": list(allow_patterns),
                "folder_files": sorted(p.name for p in folder.iterdir()),
                "files": sent,
                **kwargs,
            }
        )
        self.published.update({f"{path_in_repo}/{name}": data for name, data in sent.items()})
        if self.cache_dir is not None:
            publish_to_cache(self.cache_dir, repo_id, self.published)
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """huggingface_hub offline (HF_HUB_OFFLINE=1), its cache a fresh folder; returns that folder."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def weights(path: Path) -> dict[str, torch.Tensor]:
    model, _, _ = load_checkpoint(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- registry -------------------------------------------------------------------------------------------


def test_list_checkpoints_finds_runs_and_hub_newest_first_with_their_figures(tmp_path, monkeypatch):
    root = tmp_path / "tmp"
    old = make_checkpoint(root / "runs" / "a" / "a-best", "2024-01-01T10:00:00+0000", tokens_seen=1000)
    new = make_checkpoint(
        root / "runs" / "b" / "b-last",
        "2024-03-01T10:00:00+0000",
        tokens_seen=2000,
        training_state=True,
    )
    hubbed = make_checkpoint(root / "checkpoints" / "hub" / "h-best", "2024-02-01T10:00:00+0000")
    (hubbed / HUB_SOURCE).write_text(json.dumps({"repo_id": REPO_ID, "path_in_repo": "checkpoints/h-best"}))
    # left out: an unfinished write, a folder without manifest, a parked copy next to its checkpoint
    shutil.copytree(old, root / "runs" / "a" / "a-last.tmp")
    (root / "runs" / "a" / "incomplete").mkdir()
    (root / "runs" / "a" / "incomplete" / "config.json").write_text("{}")
    shutil.copytree(old, root / "runs" / "a" / "a-best.old")
    shards = root / "shards" / "demo-123" / "validation"  # token shards have a manifest.json of their own
    shards.mkdir(parents=True)
    (shards / "manifest.json").write_text(json.dumps({"format": 1, "records": 18, "tokens": 25550}))
    # listed under its own name: a crash between save_checkpoint's two renames left only the .old copy
    shutil.copytree(old, root / "runs" / "c" / "c-best.old")

    infos = list_checkpoints(root)
    assert [i.label for i in infos] == [
        "runs/b/b-last",
        "checkpoints/hub/h-best",
        "runs/a/a-best",
        "runs/c/c-best",
    ]
    by_name = {i.name: i for i in infos}
    assert by_name["c-best"].path == root / "runs" / "c" / "c-best"
    assert load_checkpoint(by_name["c-best"].path)[2]["training"]["tokens_seen"] == 1000

    model = load_checkpoint(new)[0]
    info = by_name["b-last"]
    assert info.parameter_count == model.num_parameters() > 0
    assert info.training_tokens == 2000 and info.iter_num == 7 and info.val_loss == 3.25
    assert info.model["n_layer"] == 1 and info.model["block_size"] == 32
    assert info.tokenizer == ExponentialTimeTokenizer().name
    assert info.created == "2024-03-01T10:00:00+0000"
    assert info.git_commit == checkpoint_module.git_commit()
    assert info.has_training_state and not by_name["a-best"].has_training_state
    assert info.origin == "local" and by_name["h-best"].origin == f"hub:{REPO_ID}"
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_state.safetensors"} <= set(
        info.files
    )
    assert info.verify()["parameter_count"] == info.parameter_count
    assert "1 layers, context 32" in info.summary and "val loss 3.250" in info.summary

    # several roots, a missing root, the default root relative to the current folder
    assert [i.name for i in list_checkpoints([root / "checkpoints", tmp_path / "nothing"])] == ["h-best"]
    monkeypatch.chdir(tmp_path)
    assert len(list_checkpoints()) == 4
    table = format_table(infos)
    assert table.splitlines()[0].split()[:3] == ["name", "params", "shape"]
    assert all(name in table for name in by_name) and "2.0k" in table


def test_checkpoint_info_rejects_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        checkpoint_info(tmp_path / "half")
    (tmp_path / "model.pt").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint_info(tmp_path / "model.pt")


def test_register_checkpoint_in_store(tmp_path):
    pytest.importorskip("sqlalchemy", reason="the generation store needs the store extra")
    from piano_gpt.store import GenerationStore

    path = make_checkpoint(tmp_path / "runs" / "r" / "r-best", tokens_seen=12345)
    with GenerationStore(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        model_id = register_checkpoint_in_store(store, path)
        assert register_checkpoint_in_store(store, path) == model_id  # the same model, updated
        (info,) = store.list_models()
        assert (info.id, info.name, info.checkpoint_path) == (model_id, "r-best", str(path.resolve()))
        assert info.parameter_count == load_checkpoint(path)[0].num_parameters()
        assert info.training_tokens == 12345
        assert info.config["metrics"]["val_loss"] == 3.25
        assert register_checkpoint_in_store(store, path, name="other") != model_id
        # generations can refer to the registered model by name
        from piano_gpt.midi import make_notes

        notes = make_notes([60], [80], [0.0], [0.5])
        gid = store.save_generation(model="r-best", settings={"mode": "sample"}, notes=notes)
        assert store.get_generation(gid).model.checkpoint_path == str(path.resolve())
        # a corrupt checkpoint is not registered
        data = bytearray((path / "model.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (path / "model.safetensors").write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="corrupt"):
            register_checkpoint_in_store(store, path, name="corrupt")


def test_models_command_table_json_and_register(tmp_path, capsys, monkeypatch):
    make_checkpoint(tmp_path / "tmp" / "runs" / "r" / "r-best")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "r-best" in out and "tmp/runs/r/r-best" in out
    assert cli.main(["models", "--json", "--verify"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "r-best" and row["verified"] is True and row["training_tokens"] == 4096
    assert cli.main(["models", "--root", str(tmp_path / "empty")]) == 0
    assert "no checkpoint" in capsys.readouterr().out
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:  # the store extra: the rest of the command is tested without it
        pass
    else:
        url = f"sqlite:///{tmp_path / 's.sqlite'}"
        assert cli.main(["models", "--register", "--database-url", url]) == 0
        assert "registered r-best" in capsys.readouterr().out
    (tmp_path / "tmp" / "runs" / "r" / "r-best" / "tokenizer.json").write_text("{}")
    assert cli.main(["models", "--verify"]) == 1
    assert "tokenizer.json is corrupt" in capsys.readouterr().err


# --- names, defaults ------------------------------------------------------------------------------------


def test_remote_paths_and_defaults(monkeypatch):
    monkeypatch.delenv(hub.REPO_ENV, raising=False)
    monkeypatch.delenv(hub.SUBFOLDER_ENV, raising=False)
    assert hub.default_repo_id() == "epr-labs/piano-gpt"
    assert hub.remote_path("run-best") == "checkpoints/run-best"
    assert hub.remote_path("run-best/", subfolder="") == "run-best"
    assert hub.remote_path("run-best", subfolder="/models/v1/") == "models/v1/run-best"
    assert hub.remote_path("other/run-best") == "other/run-best"  # a full path in the repo
    assert hub.remote_path("other/run-best/manifest.json") == "other/run-best"
    monkeypatch.setenv(hub.REPO_ENV, "me/my-models")
    monkeypatch.setenv(hub.SUBFOLDER_ENV, "ckpts")
    assert hub.default_repo_id() == "me/my-models" and hub.remote_path("x") == "ckpts/x"
    for bad in ("", "../x", "a/../b", "model.pt", "gpt2.ckpt"):
        with pytest.raises(hub.HubError):
            hub.remote_path(bad)
    with pytest.raises(hub.HubError, match="pickle"):
        hub.remote_path("midi-gpt2-10M.pt")


# --- upload ---------------------------------------------------------------------------------------------


def test_upload_sends_weights_only_with_a_manifest_that_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.REPO_ENV, REPO_ID)
    path = make_checkpoint(tmp_path / "run-best", training_state=True)
    api = FakeHfApi()
    result = hub.upload_checkpoint(path, api=api)
    assert api.created == [{"repo_id": REPO_ID, "repo_type": "model", "private": None, "exist_ok": True}]
    (sent,) = api.uploads
    assert sent["repo_id"] == REPO_ID and sent["repo_type"] == "model"
    assert sent["path_in_repo"] == "checkpoints/run-best"
    assert sorted(sent["allow_patterns"]) == WEIGHTS_ONLY == sent["folder_files"]
    assert Path(sent["folder_path"]) != path and not Path(sent["folder_path"]).exists()  # a staging folder
    assert "tokens seen" in sent["commit_message"]
    assert result == {
        "repo_id": REPO_ID,
        "path_in_repo": "checkpoints/run-best",
        "files": WEIGHTS_ONLY,
        "url": f"https://huggingface.co/{REPO_ID}/commit/{COMMIT}",
    }
    # what was sent is a complete checkpoint on its own: the same weights, a manifest for the files kept
    received = tmp_path / "received" / "run-best"
    received.mkdir(parents=True)
    for name, data in sent["files"].items():
        (received / name).write_bytes(data)
    assert verify_checkpoint(received) == verify_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(weights(received).values(), weights(path).values()))
    # with the training state: the checkpoint folder itself, every file of its manifest
    api = FakeHfApi()
    hub.upload_checkpoint(
        path, repo_id="me/other", subfolder="", training_state=True, create_repo=False, api=api
    )
    (sent,) = api.uploads
    assert api.created == [] and sent["repo_id"] == "me/other" and sent["path_in_repo"] == "run-best"
    assert sent["folder_path"] == str(path)
    assert sorted(sent["allow_patterns"]) == sorted(
        [*WEIGHTS_ONLY, "training_state.json", "training_state.safetensors"]
    )


def test_upload_refuses_a_corrupt_checkpoint(tmp_path):
    path = make_checkpoint(tmp_path / "run-best")
    (path / "config.json").write_text((path / "config.json").read_text().replace("3.25", "1.25"))
    api = FakeHfApi()
    with pytest.raises(hub.HubError, match="does not verify.*config.json is corrupt"):
        hub.upload_checkpoint(path, repo_id=REPO_ID, api=api)
    assert api.uploads == [] and api.created == []


def test_upload_models_script_defaults_to_the_best_checkpoints_through_hfapi(tmp_path, monkeypatch, capsys):
    """``python scripts/upload_models.py``: every -best checkpoint under tmp/runs, sent with HfApi."""
    make_checkpoint(tmp_path / "tmp" / "runs" / "a" / "a-best")
    make_checkpoint(tmp_path / "tmp" / "runs" / "a" / "a-last")
    make_checkpoint(tmp_path / "tmp" / "runs" / "b" / "b-best")
    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)),
    )

    def upload_folder(self, **kwargs):
        calls.append(("upload", kwargs["repo_id"], kwargs))
        assert sorted(os.listdir(kwargs["folder_path"])) == WEIGHTS_ONLY

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(hub, "check_reachable", lambda: None)  # the fakes above are the hub
    monkeypatch.setenv(hub.REPO_ENV, REPO_ID)
    monkeypatch.chdir(tmp_path)
    assert cli.run_command("upload", [], prog="upload_models.py") == 0
    assert [c[0] for c in calls] == ["create", "upload", "upload"]  # the repo is created once
    assert sorted(c[2]["path_in_repo"] for c in calls[1:]) == ["checkpoints/a-best", "checkpoints/b-best"]
    assert all(c[1] == REPO_ID for c in calls)
    assert "uploaded" in capsys.readouterr().out
    # explicit paths, another repo; nothing is sent when one of them does not verify
    calls.clear()
    assert cli.run_command("upload", ["tmp/runs/a/a-last", "--repo-id", "me/x", "--private"]) == 0
    assert calls[0] == ("create", "me/x", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][2]["path_in_repo"] == "checkpoints/a-last"
    calls.clear()
    (tmp_path / "tmp" / "runs" / "b" / "b-best" / "model.safetensors").write_bytes(b"x")
    assert cli.run_command("upload", [], prog="upload_models.py") == 1
    assert calls == [] and "not uploading anything" in capsys.readouterr().err
    assert cli.run_command("upload", ["--runs-root", "nowhere"]) == 1
    assert "no *-best checkpoint" in capsys.readouterr().err


# --- download (offline, through huggingface_hub's cache) -----------------------------------------------


def test_upload_then_download_round_trip_through_the_hub_cache(tmp_path, offline_cache):
    path = make_checkpoint(tmp_path / "runs" / "r" / "r-best", seed=3)
    hub.upload_checkpoint(path, repo_id=REPO_ID, api=FakeHfApi(cache_dir=offline_cache))
    dest = tmp_path / "tmp" / "checkpoints" / "hub"
    got = hub.download_checkpoint("r-best", repo_id=REPO_ID, dest_root=dest)
    assert got == dest / "r-best"
    assert verify_checkpoint(got)["training"] == verify_checkpoint(path)["training"]
    assert all(torch.equal(a, b) for a, b in zip(weights(got).values(), weights(path).values()))
    source = json.loads((got / HUB_SOURCE).read_text())
    assert source["repo_id"] == REPO_ID and source["path_in_repo"] == "checkpoints/r-best"
    assert source["commit"] == COMMIT
    assert not any(p.is_symlink() for p in got.iterdir())  # real files, not links into the cache
    assert not (dest / "r-best.tmp").exists() and not (dest / "r-best.old").exists()
    # the registry sees it, as a hub checkpoint
    (info,) = list_checkpoints(tmp_path / "tmp")
    assert info.path == got and info.origin == f"hub:{REPO_ID}" and info.training_tokens == 4096


def test_download_of_a_missing_or_corrupt_checkpoint(tmp_path, offline_cache, monkeypatch):
    good = make_checkpoint(tmp_path / "src" / "m-best", seed=1)
    files = {f"checkpoints/m-best/{p.name}": p.read_bytes() for p in good.iterdir()}
    publish_to_cache(offline_cache, REPO_ID, files)
    dest = tmp_path / "hubdir"
    first = hub.download_checkpoint("m-best", repo_id=REPO_ID, dest_root=dest)
    before = weights(first)

    with pytest.raises(hub.HubError, match="no checkpoint 'checkpoints/nope'.*offline"):
        hub.download_checkpoint("nope", repo_id=REPO_ID, dest_root=dest)
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(LocalEntryNotFoundError):  # a repo the cache has never seen
        hub.download_checkpoint("m-best", repo_id="someone/else", dest_root=dest)

    # a new commit whose weights do not match its manifest: refused, the verified local copy is kept
    other = make_checkpoint(tmp_path / "src2" / "m-best", seed=2)
    files["checkpoints/m-best/model.safetensors"] = (other / "model.safetensors").read_bytes()
    publish_to_cache(offline_cache, REPO_ID, files, commit="f" * 40)
    with pytest.raises(hub.HubError, match="does not verify.*model.safetensors is corrupt"):
        hub.download_checkpoint("m-best", repo_id=REPO_ID, dest_root=dest)
    assert all(torch.equal(a, b) for a, b in zip(weights(first).values(), before.values()))
    assert sorted(p.name for p in dest.iterdir()) == ["m-best"]

    # through the command: a clear error, exit status 1
    monkeypatch.chdir(tmp_path)
    assert cli.main(["download", "nope", "--repo-id", REPO_ID]) == 1
    assert cli.run_command("download", [], prog="download_model.py") == 1


def test_download_model_script_as_in_the_readme(tmp_path):
    """``python scripts/download_model.py <model_filename>`` in a fresh process: HF_HOME + HF_HUB_OFFLINE
    and PIANO_GPT_HUB_REPO from the environment, the checkpoint lands in ./tmp/checkpoints/hub."""
    good = make_checkpoint(tmp_path / "src" / "gpt2-demo-best", seed=4)
    hf_home = tmp_path / "hf_home"
    publish_to_cache(
        hf_home / "hub",
        REPO_ID,
        {f"checkpoints/gpt2-demo-best/{p.name}": p.read_bytes() for p in good.iterdir()},
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        hub.REPO_ENV: REPO_ID,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "download_model.py"), "gpt2-demo-best"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    got = work / "tmp" / "checkpoints" / "hub" / "gpt2-demo-best"
    assert "downloaded and verified" in done.stdout
    assert verify_checkpoint(got) == verify_checkpoint(good)
    # and the dry run of the upload script, in the same kind of fresh process
    shutil.copytree(good, work / "tmp" / "runs" / "r" / "r-best")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "upload_models.py"), "--dry-run"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"would upload tmp/runs/r/r-best -> {REPO_ID}/checkpoints/r-best" in done.stdout


# --- dashboard ------------------------------------------------------------------------------------------


def test_dashboard_command_runs_streamlit_on_the_page(monkeypatch):
    pytest.importorskip("streamlit", reason="the dashboards extra")
    ran = []
    monkeypatch.setattr(cli, "run_forwarding_signals", lambda command: ran.append(command) or 0)
    assert cli.main(["dashboard", "prompt_practice", "--", "--server.port", "8502"]) == 0
    (command,) = ran
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == REPO / "dashboards" / "prompt_practice.py" and Path(command[4]).is_file()
    assert command[5:] == ["--server.port", "8502"]
    assert cli.main(["dashboard", "piano_dataset_review"]) == 0
    assert ran[1][4].endswith("piano_dataset_review.py") and ran[1][5:] == []
    with pytest.raises(SystemExit):
        cli.main(["dashboard", "nope"])


def test_list_remote_checkpoints_reads_the_repo_listing(monkeypatch, capsys):
    listing = [
        ".gitattributes",
        "README.md",
        "checkpoints/a-best/manifest.json",
        "checkpoints/a-best/model.safetensors",
        "checkpoints/b-best/manifest.json",
        "checkpoints/nested/x/manifest.json",
        "other/c-best/manifest.json",
        "d-best/manifest.json",
    ]
    asked = []

    def list_repo_files(self, repo_id, **kwargs):
        asked.append((repo_id, kwargs))
        return listing

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(hub, "check_reachable", lambda: None)  # the fake above is the hub
    monkeypatch.delenv(hub.SUBFOLDER_ENV, raising=False)
    assert hub.list_remote_checkpoints(REPO_ID) == ["a-best", "b-best"]
    assert hub.list_remote_checkpoints(REPO_ID, subfolder="") == ["d-best"]
    assert asked[0] == (REPO_ID, {"repo_type": "model", "revision": None})
    assert cli.run_command("download", ["--list", "--repo-id", REPO_ID, "--subfolder", "other"]) == 0
    assert capsys.readouterr().out.split() == ["c-best"]


def test_an_unreachable_hub_is_one_line_without_retries(tmp_path):
    """No network (the endpoint a closed local port): download --list, download and upload say so in
    one line, instead of huggingface_hub's retry lines and a transport traceback."""
    make_checkpoint(tmp_path / "runs" / "r" / "r-best")
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    env.pop("HF_HUB_OFFLINE", None)
    for args in (["download", "--list"], ["download", "m-best"], ["upload", "--runs-root", "runs"]):
        done = subprocess.run(
            [sys.executable, "-m", "piano_gpt.cli", *args, "--repo-id", REPO_ID],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("piano-gpt: error: cannot reach the Hugging Face Hub at http://127.0.0.1:9")
        assert "no network, or $HF_ENDPOINT is wrong" in line


@pytest.mark.parametrize(
    ("url", "why"),
    [("sqlite:///{tmp}/notes.txt", "file is not a database"), ("nosuchdb://x", "Can't load plugin")],
)
def test_register_into_what_is_not_a_database_is_one_line(tmp_path, capsys, monkeypatch, url, why):
    pytest.importorskip("sqlalchemy", reason="the store extra")
    make_checkpoint(tmp_path / "tmp" / "runs" / "r" / "r-best")
    (tmp_path / "notes.txt").write_text("not a database, just some text that is long enough\n" * 20)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["models", "--register", "--database-url", url.format(tmp=tmp_path)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("piano-gpt: error: cannot open the generation store ") and why in line


def test_killing_the_dashboard_command_stops_its_child(tmp_path):
    """`kill <piano-gpt dashboard>` (SIGTERM) reaches the streamlit child: nothing is left running."""
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    parent = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys; from piano_gpt.commands.cli import run_forwarding_signals; "
            f"sys.exit(run_forwarding_signals([sys.executable, '-c', {child!r}]))",
        ]
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=120) == 128 + signal.SIGTERM  # the child died of the forwarded signal
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
