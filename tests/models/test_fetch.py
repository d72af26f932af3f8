"""`finet2i fetch-models` obtains every model: the V2.5 head file (license accepted by a flag, atomic, checked
download) and hub repositories, gated ones with a message naming the license page and HF_TOKEN. No network:
files come from an http.server on 127.0.0.1, the hub is huggingface_hub's functions monkeypatched."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from finet2i.cli.main import main
from finet2i.models import fetch
from finet2i.models.known import AESTHETIC_HEAD

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
SECRET = "hf_NotARealTokenButSecret123"
GATED = {"meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-Guard-3-8B"}
HEAD_SHAPES = [("scoring_head.0.weight", (1024, 1152)), ("scoring_head.0.bias", (1024,)),
               ("scoring_head.2.weight", (128, 1024)), ("scoring_head.2.bias", (128,)),
               ("scoring_head.4.weight", (64, 128)), ("scoring_head.4.bias", (64,)),
               ("scoring_head.6.weight", (16, 64)), ("scoring_head.6.bias", (16,)),
               ("scoring_head.8.weight", (1, 16)), ("scoring_head.8.bias", (1,))]


def _head_bytes(width: int = 1152, drop: str | None = None) -> bytes:
    """A state dict named and shaped like the released aesthetic_predictor_v2_5.pth (zeros)."""
    import torch

    state = OrderedDict((k, torch.zeros(shape if k != "scoring_head.0.weight" else (1024, width)))
                        for k, shape in HEAD_SHAPES if k != drop)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {"/head.pth": _head_bytes(), "/narrow.pth": _head_bytes(width=32),
            "/truncated.pth": _head_bytes()[:5000], "/garbage.pth": b"<html>not found</html>",
            "/missing-layer.pth": _head_bytes(drop="scoring_head.8.bias")}


@pytest.fixture
def server(files: dict[str, bytes], monkeypatch) -> Iterator[SimpleNamespace]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            body = files.get(self.path.removeprefix("/cut"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            # /cut/...: the connection drops halfway (fewer bytes than Content-Length)
            self.wfile.write((body or b"")[: len(body or b"") // 2 if self.path.startswith("/cut/") else None])

        def log_message(self, *args: object) -> None:
            pass

    for var in ("no_proxy", "NO_PROXY"):  # never through a proxy of the environment
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", hits=hits)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_is_checked_then_renamed_atomically(server, tmp_path):
    dest = tmp_path / "resources" / "aesthetic_predictor_v2_5.pth"
    seen: list[tuple[Path, bool]] = []

    def check(p: Path) -> None:
        seen.append((p, dest.exists()))
        fetch.file_check(AESTHETIC_HEAD)(p)  # the published head's check: every layer, 1152 wide

    digest = fetch.download_file(server.url + "/head.pth", dest, check=check, allow_private=True)
    data = _head_bytes()
    assert dest.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    (tmp, existed), = seen
    assert tmp.parent == dest.parent and tmp != dest and not existed  # checked beside the target, before the rename
    assert _leftovers(dest.parent) == [] and not tmp.exists()
    assert dest.stat().st_mode & 0o044  # readable by the group and others, as the umask allows (not mkstemp's 0600)


@pytest.mark.parametrize(("name", "why"), [
    ("/garbage.pth", "not a loadable torch state dict"),
    ("/truncated.pth", "not a loadable torch state dict"),
    ("/narrow.pth", "1152"),
    ("/missing-layer.pth", "scoring_head.8.bias"),
    ("/nowhere.pth", "download failed"),
    ("/cut/head.pth", "download failed"),
])
def test_a_bad_download_never_gets_the_final_name(server, tmp_path, name, why):
    dest = tmp_path / "aesthetic_predictor_v2_5.pth"
    with pytest.raises(fetch.DownloadRejected, match=why):
        fetch.download_file(server.url + name, dest, check=fetch.file_check(AESTHETIC_HEAD), allow_private=True)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_sha256_mismatch_is_rejected(server, tmp_path):
    dest = tmp_path / "head.pth"
    with pytest.raises(fetch.DownloadRejected, match="sha256 .* does not match the configured 0{64}"):
        fetch.download_file(server.url + "/head.pth", dest, sha256="0" * 64, allow_private=True)
    assert not dest.exists() and _leftovers(tmp_path) == []
    good = hashlib.sha256(_head_bytes()).hexdigest()
    assert fetch.download_file(server.url + "/head.pth", dest, sha256=good.upper(), allow_private=True) == good


def _head_config(path: Path, **extra: str) -> dict:
    return {"models": {"aesthetic_head": {"path": str(path), **extra}}}


def test_the_head_needs_its_license_accepted(server, tmp_path):
    dest = tmp_path / "aesthetic_predictor_v2_5.pth"
    config = _head_config(dest, url=server.url + "/head.pth")
    out: list[str] = []
    report = fetch.fetch_models(config, ["aesthetic_head"], echo=out.append)
    text = "\n".join(out)
    assert "AGPL-3.0" in text and "https://github.com/discus0434/aesthetic-predictor-v2-5" in text
    assert "--accept-license aesthetic_head" in text and "--accept-license aesthetic_head" in report.missing[0]
    assert server.hits == [] and not dest.exists()  # nothing downloaded before the license is accepted

    report = fetch.fetch_models(config, ["aesthetic_head"], accepted=["models.aesthetic_head"],
                                allow_private=True)  # the test's server is a local mirror
    assert report.missing == [] and dest.read_bytes() == _head_bytes() and server.hits == ["/head.pth"]
    assert "add `sha256: " in report.lines[-1]
    # present now: not downloaded again; a configured sha256 is checked against the file that is there
    report = fetch.fetch_models(_head_config(dest, sha256="f" * 64), ["aesthetic_head"])
    assert len(server.hits) == 1 and "sha256 mismatch" in report.missing[0]


def test_the_default_url_is_the_published_head():
    from finet2i.models.spec import ModelNotAvailable, ModelSpec

    with pytest.raises(ModelNotAvailable, match="fetch-models --accept-license aesthetic_head .*AGPL-3.0"):
        ModelSpec(key="models.aesthetic_head", path="/nonexistent/aesthetic_predictor_v2_5.pth").local_path()
    assert fetch.file_source("aesthetic_head", {"path": "x.pth"}) is AESTHETIC_HEAD
    assert AESTHETIC_HEAD.url == ("https://github.com/discus0434/aesthetic-predictor-v2-5/raw/main/models/"
                                        "aesthetic_predictor_v2_5.pth")
    assert fetch.file_source("embedder", {"path": "x"}) is None  # nothing knows where another local model is
    mirror = fetch.file_source("aesthetic_head", {"path": "x.pth", "url": "https://mirror.example/h.pth"})
    assert mirror is not None and mirror.license == "AGPL-3.0" and mirror.check is not None


def _gated_error(model_id: str):
    from huggingface_hub.errors import GatedRepoError

    response = SimpleNamespace(status_code=403, headers={}, request=None)
    return GatedRepoError(f"403 Client Error. Cannot access gated repo for url https://huggingface.co/{model_id}",
                          response=response)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """snapshot_download that serves every repo except the gated ones (and only cached ones when offline)."""
    import huggingface_hub

    calls: list[tuple[str, bool]] = []

    def snapshot_download(repo_id, revision=None, local_files_only=False, **kw):
        from huggingface_hub.errors import LocalEntryNotFoundError

        calls.append((repo_id, local_files_only))
        if local_files_only:
            if repo_id == "sentence-transformers/all-MiniLM-L6-v2":
                return str(tmp_path / "snapshots" / SHA)
            raise LocalEntryNotFoundError("not in cache")
        if repo_id in GATED:
            raise _gated_error(repo_id)
        return str(tmp_path / "snapshots" / SHA)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def _production(tmp_path: Path, monkeypatch, head: Path) -> list[str]:
    """The shipped config (a copy) and an overlay that puts the head file under tmp_path."""
    monkeypatch.chdir(ROOT)  # the config's taxonomy and resolution paths are relative to the workflow
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config" / "config.yaml").read_text())
    overlay = tmp_path / "head.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"aesthetic_head": {"path": str(head)}}}))
    return [str(config), str(overlay)]


def test_gated_models_name_the_license_page_and_hf_token_and_the_rest_is_fetched(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    head = tmp_path / "head.pth"
    head.write_bytes(_head_bytes())
    configs = _production(tmp_path, monkeypatch, head)
    result = CliRunner().invoke(main, ["fetch-models", "--pin", *configs])
    out = result.output
    assert result.exit_code == 1, out
    assert SECRET not in out
    for model_id in GATED:
        assert f"license page https://huggingface.co/{model_id} while logged in" in out
    assert "HF_TOKEN" in out and "a token is set, but its account has no access yet" in out
    # every other model was fetched (and pinned), and the summary says what is missing and how to get it
    assert "models.embedder: sentence-transformers/all-MiniLM-L6-v2@main -> " + SHA in out
    assert "models.aesthetic_head: local" in out and "(present)" in out
    summary = out.split("2 model(s) not fetched; to get them:")[1]
    assert summary.count("\n  - ") == 2 and "models.guard: meta-llama/Llama-Guard-3-8B is gated" in summary
    assert f"{configs[0]}: 7 revision(s) pinned" in out
    pinned = yaml.safe_load(Path(configs[0]).read_text())["models"]
    assert pinned["guard"]["revision"] == "main" and pinned["embedder"]["revision"] == SHA
    assert SECRET not in Path(configs[0]).read_text()


def test_no_token_and_other_errors_say_so_without_leaking(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert "no token is set (HF_TOKEN is empty" in fetch.gated_advice("meta-llama/Llama-Guard-3-8B")

    monkeypatch.setenv("HF_TOKEN", SECRET)

    def broken(repo_id, **kw):
        raise OSError(f"connection reset while sending Authorization: Bearer {SECRET}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    out: list[str] = []
    config = {"models": {"embedder": {"id": "org/model", "revision": "main"}}}
    report = fetch.fetch_models(config, ["embedder"], echo=out.append)
    assert SECRET not in "\n".join(out + report.missing) and "***" in out[0]
    assert "check the id and revision" in report.missing[0]


def test_dry_run_lists_what_would_be_fetched_and_downloads_nothing(fake_hub, tmp_path, monkeypatch, server):
    from huggingface_hub import HfApi, constants

    def no_network(*a, **kw):
        raise AssertionError("the dry run asked the hub while offline")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(HfApi, "model_info", no_network)
    head = tmp_path / "resources" / "aesthetic_predictor_v2_5.pth"
    configs = _production(tmp_path, monkeypatch, head)
    result = CliRunner().invoke(main, ["fetch-models", "--dry-run", *configs])
    out = result.output
    assert result.exit_code == 0, out
    assert all(local for _, local in fake_hub)  # only the cache was looked at
    assert server.hits == [] and not head.parent.exists()
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if line.startswith("models.")}
    assert "in the cache (" + SHA + ")" in lines["models.embedder"]
    for key, model_id in (("models.prompt_generator", "meta-llama/Llama-3.1-8B-Instruct"),
                          ("models.guard", "meta-llama/Llama-Guard-3-8B")):
        assert "would download" in lines[key] and "gated (finet2i's list)" in lines[key]
        assert f"https://huggingface.co/{model_id}" in lines[key] and "HF_TOKEN" in lines[key]
    assert "gated" not in lines["models.verifier"]
    assert lines["models.aesthetic_head"] == (
        f"models.aesthetic_head: would download {AESTHETIC_HEAD.url} -> {head} (AGPL-3.0, "
        "https://github.com/discus0434/aesthetic-predictor-v2-5; needs --accept-license aesthetic_head); "
        "size unknown offline")
    # Offline, the sizes are unknown except what the cache holds; the cache's path is the first line.
    assert out.splitlines()[0].startswith(f"Hugging Face cache: {constants.HF_HUB_CACHE} (set HF_HOME")
    assert "size unknown offline" in lines["models.guard"] and " in the cache" in lines["models.embedder"]
    assert out.splitlines()[-1].startswith("to download: ") and "of unknown size (offline" in out.splitlines()[-1]


def test_dry_run_asks_the_hub_when_online(fake_hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub import HfApi

    files = [SimpleNamespace(rfilename="model.safetensors", size=16_060_000_000),
             SimpleNamespace(rfilename="config.json", size=855)]
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: SimpleNamespace(
        gated="manual" if repo_id.startswith("org/") else False, siblings=files))

    def auth_check(repo_id, **kw):
        if repo_id == "org/closed":
            raise _gated_error(repo_id)

    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    config = {"models": {k: {"id": f"org/{k}", "revision": "main"} for k in ("open", "closed")}
              | {"guard": {"id": "meta-llama/Llama-Guard-3-8B", "revision": "main"}}}
    report = fetch.fetch_models(config, ["open", "closed", "guard"], dry_run=True)
    assert report.lines[0].startswith("Hugging Face cache: ")
    assert "gated (the hub says)" in report.lines[1] and "your token has access" in report.lines[1]
    assert "no access with the current token yet" in report.lines[2]
    assert "gated" not in report.lines[3]  # the hub's answer wins over the list in code
    assert report.missing == []
    # The size of each repository at its revision, from the hub's file list; the total at the end.
    assert all("; 16.1 GB" in line for line in report.lines[1:4]), report.lines
    assert report.lines[-1] == "to download: 48.2 GB"


def test_accept_license_names_a_model_key(fake_hub, tmp_path, monkeypatch):
    configs = _production(tmp_path, monkeypatch, tmp_path / "head.pth")
    result = CliRunner().invoke(main, ["fetch-models", "--dry-run", "--accept-license", "aesthetic_haed", *configs])
    assert result.exit_code == 2 and "no such model key: aesthetic_haed" in result.output


def test_the_schema_takes_url_and_sha256_for_files_only(tmp_path, monkeypatch):
    from finet2i.workflow.config import ConfigError, load_config

    def load(head: dict) -> dict:
        configs = _production(tmp_path, monkeypatch, tmp_path / "head.pth")
        Path(configs[1]).write_text(yaml.safe_dump({"models": {"aesthetic_head": head}}))
        return load_config(*configs, check_models=False)["models"]["aesthetic_head"]

    ok = {"path": "h.pth", "url": "https://mirror.example/h.pth", "sha256": "a" * 64}
    assert load(ok) == ok
    for bad in ({"path": "h.pth", "url": "ftp://mirror.example/h.pth"}, {"path": "h.pth", "sha256": "abc"}):
        with pytest.raises(ConfigError, match="aesthetic_head"):
            load(bad)
    # a hub model has a revision: no url or sha256
    import jsonschema

    schema = yaml.safe_load((ROOT / "src/finet2i/core/schema/config.schema.yaml").read_text())
    model = jsonschema.Draft202012Validator({**schema["definitions"]["model"], "definitions": schema["definitions"]})
    assert model.is_valid({"id": "org/m", "revision": SHA}) and model.is_valid(ok)
    assert not model.is_valid({"id": "org/m", "url": "https://mirror.example/h.pth"})
    assert not model.is_valid({"id": "org/m", "sha256": "a" * 64})


def test_the_fine_tune_models_are_fetched_when_switched_on_and_only_the_files_that_load(monkeypatch, tmp_path):
    """finetune.enabled adds SD-XL and CLIP to what fetch-models gets, and of their repositories only the
    diffusers folders and one weights format (the rest is tens of GB the workflow never reads)."""
    import huggingface_hub

    got: dict[str, list[str] | None] = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        got[repo_id] = allow_patterns
        return str(tmp_path / "snapshots" / SHA)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    head = tmp_path / "resources" / "aesthetic_predictor_v2_5.pth"
    configs = _production(tmp_path, monkeypatch, head)
    on = tmp_path / "on.yaml"
    on.write_text("finetune: {enabled: true}\n")
    CliRunner().invoke(main, ["fetch-models", *configs])
    assert "stabilityai/stable-diffusion-xl-base-1.0" not in got
    result = CliRunner().invoke(main, ["fetch-models", *configs, str(on)])
    sdxl = got["stabilityai/stable-diffusion-xl-base-1.0"]
    assert "models.finetune_base: stabilityai/stable-diffusion-xl-base-1.0@main ->" in result.output
    assert "unet/diffusion_pytorch_model.safetensors" in sdxl and not any("onnx" in p or "fp16" in p for p in sdxl)
    assert got["openai/clip-vit-large-patch14"] == ["*.json", "*.txt", "model.safetensors"]
    assert got["sentence-transformers/all-MiniLM-L6-v2"] is None  # every other repository whole, as before
