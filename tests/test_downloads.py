"""Checked downloads against a real HTTP server on loopback: verified, atomic, and quick to fail offline."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from dataclasses import replace

import pytest

from grounded_sam.errors import ModelFileError, ModelNotFoundError
from grounded_sam.model_files.downloads import download
from grounded_sam.model_files.folders import resolve_model
from grounded_sam.model_files.registry import KNOWN_MODELS, KnownModel

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        Handler.requests.append(self.path)
        body = PAYLOAD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/cut"):
            self.wfile.write(body[: len(body) // 3])  # the connection dies mid-file
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        """As the hub answers for an LFS file: its sha256 in X-Linked-Etag, its size in X-Linked-Size."""
        digest = {"/lfs-ok": hashlib.sha256(PAYLOAD).hexdigest(), "/lfs-other": "ab" * 32}.get(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.send_header("ETag", '"0123abcd"')  # a git blob id, not a content sha256
        if digest:
            self.send_header("X-Linked-Etag", f'"{digest}"')
            self.send_header("X-Linked-Size", str(len(PAYLOAD)))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def model_at(url: str, **overrides) -> KnownModel:
    fields = {"display_name": "test model", "folder": "sams", "filename": "test.pth", "url": url, "size": len(PAYLOAD), "sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    fields.update(overrides)
    return KnownModel(**fields)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_is_verified_and_lands_atomically(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    progress = []
    path = download(model_at(server + "/ok"), tmp_path, lambda done, total: progress.append((done, total)))
    assert path.read_bytes() == PAYLOAD
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(tmp_path) == ["test.pth"]


def test_md5_only_models_are_checked_too(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    good = model_at(server + "/ok", sha256=None, size=None, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert download(good, tmp_path).read_bytes() == PAYLOAD
    bad = replace(good, filename="other.pth", md5="0" * 32)
    with pytest.raises(ModelFileError, match="md5"):
        download(bad, tmp_path)
    assert leftovers(tmp_path) == ["test.pth"]


def test_wrong_digest_leaves_nothing_behind(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelFileError, match="corrupt.*sha256"):
        download(model_at(server + "/ok", sha256="0" * 64), tmp_path)
    assert leftovers(tmp_path) == []


def test_connection_cut_mid_file_leaves_nothing_behind(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises((ModelNotFoundError, ModelFileError)):
        download(model_at(server + "/cut"), tmp_path)
    assert leftovers(tmp_path) == []


def test_offline_fails_at_once_and_says_where_to_get_the_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(Handler.requests)
    model = model_at(server + "/ok")
    with pytest.raises(ModelNotFoundError) as err:
        download(model, tmp_path / "sams")
    assert len(Handler.requests) == before, "offline mode must not touch the network"
    message = str(err.value)
    assert "test.pth" in message and str(tmp_path / "sams") in message and model.url in message


def test_unreachable_server_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="could not download"):
        download(model_at(f"http://127.0.0.1:{port}/x"), tmp_path)
    assert time.monotonic() - start < 10
    assert leftovers(tmp_path) == []


def test_hub_files_without_a_published_digest_are_checked_against_the_hubs_lfs_sha256(server, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read once at import, under the suite's offline env
    unpinned = {"sha256": None, "size": None, "hub_lfs": True}
    assert download(model_at(server + "/lfs-ok", **unpinned), tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(ModelFileError, match="is corrupt .*sha256 [0-9a-f]{64} instead of (ab){32}"):
        download(model_at(server + "/lfs-other", filename="other.pt", **unpinned), tmp_path)
    with pytest.raises(ModelFileError, match="lists no sha256 for .*/plain, so a download could not be checked; put plain.pt in"):
        download(model_at(server + "/plain", filename="plain.pt", **unpinned), tmp_path)
    assert leftovers(tmp_path) == ["test.pth"]


def test_resolve_reports_known_models_and_rejects_half_files(tmp_path):
    vit_b = next(m for m in KNOWN_MODELS if m.filename == "sam_vit_b_01ec64.pth")
    with pytest.raises(ModelNotFoundError, match="dl.fbaipublicfiles.com"):
        resolve_model("sam_vit_b (375MB)", "sams", [tmp_path])
    (tmp_path / vit_b.filename).write_bytes(b"half a file")
    with pytest.raises(ModelFileError, match="incomplete"):
        resolve_model("sam_vit_b (375MB)", "sams", [tmp_path])


def test_registry_entries_are_complete():
    names = {m.display_name for m in KNOWN_MODELS}
    assert {"sam_vit_h (2.56GB)", "sam_hq_vit_b (379MB)", "mobile_sam(39MB)", "GroundingDINO_SwinB (938MB)"} <= names
    assert {"sam2.1_hiera_tiny (156MB)", "sam2.1_hiera_large (898MB)", "sam2_hiera_base_plus (324MB)", "edgetam (EdgeTAM, 14M parameters)"} <= names
    for model in KNOWN_MODELS:
        assert model.url.startswith("https://") and model.url.endswith(model.filename)
        assert model.sha256 or model.md5 or model.hub_lfs, f"{model.filename} has no digest to verify"
        assert not model.hub_lfs or model.url.startswith(("https://huggingface.co/facebook/sam2", "https://huggingface.co/facebook/EdgeTAM/"))
        assert model.sha256 is None or len(model.sha256) == 64


def test_transformers_repos_resolve_from_disk_or_explain_offline(tmp_path, monkeypatch):
    from grounded_sam.comfy import adapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GROUNDED_SAM_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="offline mode.*huggingface.co/IDEA-Research/grounding-dino-tiny"):
        resolve_model("grounding-dino-tiny (transformers)", "grounding-dino", [tmp_path / "grounding-dino"], allow_download=True)
    assert "grounding-dino-tiny (transformers)" in adapter.model_choices("grounding-dino")
    folder = tmp_path / "grounding-dino" / "grounding-dino-tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    found = resolve_model("grounding-dino-tiny (transformers)", "grounding-dino", [tmp_path / "grounding-dino"], allow_download=True)
    assert found == folder
    choices = adapter.model_choices("grounding-dino")
    assert choices[0] == "grounding-dino-tiny" and "grounding-dino-tiny (transformers)" not in choices
