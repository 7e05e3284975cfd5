"""`agender models ...` and the downloader, against a real HTTP server on 127.0.0.1.

The server serves a models directory (the real files in ../shared/models, or a tmp mirror with a
corrupted copy) and can misbehave the ways real servers do: answer slowly, ignore ``Range``,
or hang up half-way through a body.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agender.cli.main import main
from agender.errors import ModelError
from agender.models.fetch import FetchError, fetch_entry, part_path
from agender.models.store import ModelEntry, ModelStore

from conftest import MODELS

YUNET = "yunet/face_detection_yunet.onnx"
YUNET_SHA = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
SSRNET_FILES = ["ssrnet/wiki_age.h5", "ssrnet/imdb_age.h5", "ssrnet/morph2_age.h5",
                "ssrnet/wiki_gender.h5", "ssrnet/imdb_gender.h5", "ssrnet/morph_gender.h5"]


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, *, ranges: bool = True, cut_after: int | None = None, hang: bool = False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.ranges, self.cut_after = root, ranges, cut_after
        self.hang = threading.Event() if hang else None
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        srv = self.server
        if srv.hang is not None:
            srv.hang.wait(10)  # longer than any client timeout in these tests
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = (srv.root / rel).resolve()
        rng = self.headers.get("Range")
        if srv.root.resolve() not in path.parents or not path.is_file():
            srv.requests.append((rel, rng, 404))
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start, status = 0, 200
        if rng and srv.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                srv.requests.append((rel, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        srv.requests.append((rel, rng, status))
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if srv.cut_after is not None:  # hang up mid-body, like a dropped connection
            self.wfile.write(body[: srv.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(root, **behaviour) -> a running ModelServer; all are shut down after the test."""
    servers: list[ModelServer] = []

    def start(root: Path, **kw) -> ModelServer:
        srv = ModelServer(root, **kw)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        if srv.hang is not None:
            srv.hang.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def _private_user_dirs(monkeypatch, tmp_path):
    """Keep the user models dir (platformdirs cache) and any mirror env inside the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("AGENDER_MODELS_URL", raising=False)
    monkeypatch.delenv("AGENDER_FETCH_TIMEOUT", raising=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrupted_mirror(tmp_path: Path, file: str = YUNET) -> Path:
    """A models dir holding a copy of ``file`` with one byte flipped (lives in tmp only)."""
    root = tmp_path / "bad-mirror"
    target = root / file
    target.parent.mkdir(parents=True)
    data = bytearray((MODELS / file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return root


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --------------------------------------------------------------------------- fetch: success


def test_fetch_yunet_from_local_server_verifies_sha256_and_store_resolves_it(serve, tmp_path, capsys):
    srv = serve(MODELS)
    dest = tmp_path / "dest"
    rc = main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert sha256(dest / YUNET) == YUNET_SHA
    assert f"{YUNET}: fetched 224.4 KiB, sha256 verified -> {dest / YUNET}" in out
    assert not part_path(dest / YUNET).exists()
    assert ModelStore([dest]).resolve(YUNET) == dest / YUNET
    assert srv.requests == [(YUNET, None, 200)]
    assert "not on the model search path" in err  # a --dest outside the search path gets a hint


def test_fetch_ssrnet_gets_every_variant_through_the_mirror_env_var(serve, tmp_path, capsys, monkeypatch):
    srv = serve(MODELS)
    monkeypatch.setenv("AGENDER_MODELS_URL", srv.url + "/")
    dest = tmp_path / "dest"
    assert main(["models", "fetch", "ssrnet", "--dest", str(dest)]) == 0
    for f in SSRNET_FILES:
        assert sha256(dest / f) == sha256(MODELS / f)
    assert sorted(r[0] for r in srv.requests) == sorted(SSRNET_FILES)
    assert capsys.readouterr().out.count("sha256 verified") == 6


def test_fetch_single_variant_gets_only_its_two_files(serve, tmp_path):
    srv = serve(MODELS)
    dest = tmp_path / "dest"
    assert main(["models", "fetch", "ssrnet:wiki", "--dest", str(dest), "--models-url", srv.url]) == 0
    assert sorted(r[0] for r in srv.requests) == ["ssrnet/wiki_age.h5", "ssrnet/wiki_gender.h5"]


def test_fetch_into_default_user_models_dir_makes_the_file_resolvable(serve, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AGENDER_MODELS")  # nothing but the user dir (under tmp XDG_CACHE_HOME) and repo
    srv = serve(MODELS)
    with pytest.raises(ModelError):
        ModelStore().resolve(YUNET)
    assert main(["models", "fetch", "yunet", "--models-url", srv.url]) == 0
    path = ModelStore().resolve(YUNET)
    assert path.is_relative_to(tmp_path / "xdg-cache") and sha256(path) == YUNET_SHA
    assert "not on the model search path" not in capsys.readouterr().err


def test_fetch_skips_a_verified_copy_already_at_destination(serve, tmp_path, capsys):
    srv = serve(MODELS)
    dest = tmp_path / "dest"
    assert main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url]) == 0
    capsys.readouterr()
    assert main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url]) == 0
    assert "already present, sha256 verified" in capsys.readouterr().out
    assert len(srv.requests) == 1
    assert main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url, "--force"]) == 0
    assert len(srv.requests) == 2


def test_fetch_without_published_sha256_reports_computed_hash_as_unverified(serve, tmp_path):
    srv = serve(MODELS)
    entry = ModelEntry(name="yunet", file=YUNET, url="", sha256="")
    res = fetch_entry(entry, tmp_path / "dest", base_url=srv.url, progress=False)
    assert (res.verified, res.sha256, res.path.is_file()) == (False, YUNET_SHA, True)


@pytest.mark.needs_shared  # the rest of the manifest is found through AGENDER_MODELS
def test_fetch_without_names_gets_only_what_the_search_path_lacks(serve, tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "levi_hassner").mkdir(parents=True)
    for name in ("age_net.caffemodel", "gender_net.caffemodel"):  # stand-ins: no sha256 is published
        (mirror / "levi_hassner" / name).write_bytes(name.encode() * 100)
    srv = serve(mirror)
    dest = tmp_path / "dest"
    rc = main(["models", "--models", str(dest), "fetch", "--dest", str(dest), "--models-url", srv.url])
    out = capsys.readouterr().out
    assert rc == 0
    assert sorted(r[0] for r in srv.requests) == ["levi_hassner/age_net.caffemodel", "levi_hassner/gender_net.caffemodel"]
    assert out.count("unverified: upstream publishes no checksum") == 2
    assert main(["models", "--models", str(dest), "fetch", "--dest", str(dest), "--models-url", srv.url]) == 0
    assert "nothing to fetch" in capsys.readouterr().out


# --------------------------------------------------------------------------- fetch: failures


def test_fetch_of_file_the_server_lacks_fails_with_one_line_naming_file_and_404(serve, tmp_path, capsys):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    srv = serve(empty)
    dest = tmp_path / "dest"
    rc = main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 1
    assert len(lines) == 1 and YUNET in lines[0] and "404" in lines[0]
    assert not (dest / YUNET).exists() and not part_path(dest / YUNET).exists()


def test_fetch_with_connection_refused_fails_with_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    rc = main(["models", "fetch", "ssrnet", "--dest", str(tmp_path / "dest"), "--models-url", url])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 1
    assert len(lines) == 1  # six files, but an unreachable server is reported once
    assert "ssrnet/wiki_age.h5" in lines[0] and "connection refused" in lines[0]
    assert "5 more files not attempted" in lines[0]
    assert not any((tmp_path / "dest").rglob("*.h5*"))


def test_fetch_of_corrupted_copy_fails_naming_file_and_checksum_and_leaves_no_file(serve, tmp_path, capsys):
    srv = serve(corrupted_mirror(tmp_path))
    dest = tmp_path / "dest"
    rc = main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 1
    assert len(lines) == 1 and YUNET in lines[0] and "checksum" in lines[0] and YUNET_SHA in lines[0]
    assert not (dest / YUNET).exists() and not part_path(dest / YUNET).exists()


def test_fetch_of_corrupted_copy_keeps_the_good_file_already_there(serve, tmp_path):
    srv = serve(corrupted_mirror(tmp_path))
    dest = tmp_path / "dest"
    (dest / "yunet").mkdir(parents=True)
    shutil.copyfile(MODELS / YUNET, dest / YUNET)
    with pytest.raises(FetchError, match="checksum"):
        fetch_entry(ModelStore().entries("yunet")[0], dest, base_url=srv.url, force=True, progress=False)
    assert sha256(dest / YUNET) == YUNET_SHA


def test_fetch_timeout_fails_with_one_line(serve, tmp_path, capsys):
    srv = serve(MODELS, hang=True)
    rc = main(["models", "fetch", "yunet", "--dest", str(tmp_path / "dest"), "--models-url", srv.url,
               "--timeout", "0.3"])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 1
    assert len(lines) == 1 and YUNET in lines[0] and "timed out after 0.3s" in lines[0]


def test_fetch_timeout_comes_from_env_when_no_option(serve, tmp_path, monkeypatch):
    srv = serve(MODELS, hang=True)
    monkeypatch.setenv("AGENDER_FETCH_TIMEOUT", "0.2")
    with pytest.raises(FetchError, match=r"timed out after 0\.2s"):
        fetch_entry(ModelStore().entries("yunet")[0], tmp_path, base_url=srv.url, progress=False)


def test_fetch_unknown_name_is_a_usage_error(capsys):
    assert main(["models", "fetch", "resnet-9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet-9000'" in err and "yunet" in err and "ssrnet:wiki" in err


def test_fetch_all_continues_past_files_the_mirror_lacks(serve, tmp_path, capsys):
    srv = serve(MODELS)  # holds everything except the Levi-Hassner caffemodels
    dest = tmp_path / "dest"
    rc = main(["models", "fetch", "all", "--dest", str(dest), "--models-url", srv.url])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = error_lines(err.replace("note:", "\nnote:"))
    bad = [line for line in lines if "error" in line]
    assert len(bad) == 2 and all("404" in line and ".caffemodel" in line for line in bad)
    # 11 pinned files verified; the Levi-Hassner gender prototxt has no pinned hash (see
    # age_gender_net/models.toml), so it is fetched and reported unverified.
    assert out.count("sha256 verified") == 11
    assert out.count("unverified") == 1 and "gender_deploy.prototxt" in out


# --------------------------------------------------------------------------- resume


def test_fetch_resumes_partial_download_with_range_request(serve, tmp_path, capsys):
    srv = serve(MODELS, ranges=True)
    dest = tmp_path / "dest"
    data = (MODELS / YUNET).read_bytes()
    part = part_path(dest / YUNET)
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100_000])
    assert main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", srv.url]) == 0
    assert srv.requests == [(YUNET, "bytes=100000-", 206)]
    assert sha256(dest / YUNET) == YUNET_SHA and not part.exists()
    assert "resumed at 97.7 KiB" in capsys.readouterr().out


def test_fetch_starts_over_when_server_ignores_range(serve, tmp_path):
    srv = serve(MODELS, ranges=False)
    dest = tmp_path / "dest"
    part = part_path(dest / YUNET)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from some other file" * 100)
    res = fetch_entry(ModelStore().entries("yunet")[0], dest, base_url=srv.url, progress=False)
    assert srv.requests == [(YUNET, "bytes=2800-", 200)]
    assert res.resumed_from == 0 and sha256(dest / YUNET) == YUNET_SHA


def test_fetch_restarts_when_partial_file_is_already_as_long_as_the_file(serve, tmp_path):
    srv = serve(MODELS)
    dest = tmp_path / "dest"
    part = part_path(dest / YUNET)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (MODELS / YUNET).stat().st_size)
    res = fetch_entry(ModelStore().entries("yunet")[0], dest, base_url=srv.url, progress=False)
    assert [r[2] for r in srv.requests] == [416, 200]
    assert res.verified and sha256(dest / YUNET) == YUNET_SHA


def test_interrupted_download_leaves_only_the_part_file_and_the_next_run_resumes(serve, tmp_path, capsys):
    dest = tmp_path / "dest"
    dropping = serve(MODELS, cut_after=50_000)
    rc = main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", dropping.url])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 1 and len(lines) == 1
    assert YUNET in lines[0] and "50000 of 229738 bytes" in lines[0] and "resume" in lines[0]
    assert not (dest / YUNET).exists() and part_path(dest / YUNET).stat().st_size == 50_000

    healthy = serve(MODELS)
    assert main(["models", "fetch", "yunet", "--dest", str(dest), "--models-url", healthy.url]) == 0
    assert healthy.requests == [(YUNET, "bytes=50000-", 206)]
    assert sha256(dest / YUNET) == YUNET_SHA


# --------------------------------------------------------------------------- list / verify / path


def test_models_list_shows_shared_models_verified_and_missing_caffemodels(capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "FILE", "SIZE", "LICENSE", "FOUND", "VERIFIED"]
    row = {line.split()[1]: line for line in lines[1:] if not line.endswith("bundled")}
    assert len(row) == len(ModelStore().entries())
    assert str(MODELS / YUNET) in row[YUNET] and row[YUNET].split()[-1] == "yes" and "224.4 KiB" in row[YUNET]
    assert "MIT (OpenCV Zoo)" in row[YUNET]
    assert row["levi_hassner/age_net.caffemodel"].split()[-2:] == ["missing", "-"]


def test_models_list_shows_the_pip_bundled_zero_download_models(capsys):
    assert main(["models", "list"]) == 0
    bundled = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.endswith("bundled")}
    assert set(bundled) == {"agender", "agender-gender", "cydral", "mtcnn", "haar"}
    assert "age-v1.onnx" in bundled["cydral"] and "CC0-1.0" in bundled["cydral"]
    assert "agender-net-v1.onnx" in bundled["agender"] and "non-commercial" in bundled["agender"]
    assert "agender-gender-v1.onnx" in bundled["agender-gender"] and "non-commercial" in bundled["agender-gender"]
    assert "pnet.onnx" in bundled["mtcnn"] and "haarcascade_frontalface_default.xml" in bundled["haar"]


def test_models_verify_passes_on_shared_models(capsys):
    assert main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok          {YUNET}  {MODELS / YUNET}" in out
    assert out.splitlines()[-1] == "11 verified, 1 without checksum, 2 missing, 0 bad"


def test_models_verify_flags_corrupted_file_in_models_dir(tmp_path, capsys):
    bad_dir = corrupted_mirror(tmp_path)
    rc = main(["models", "verify", "--models", str(bad_dir)])
    out, err = capsys.readouterr()
    lines = error_lines(err)
    assert rc == 1
    assert len(lines) == 1
    assert str(bad_dir / YUNET) in lines[0] and "checksum" in lines[0] and "agender models fetch yunet" in lines[0]
    assert out.splitlines()[-1] == "10 verified, 1 without checksum, 2 missing, 1 bad"


def test_models_path_lists_search_dirs_in_order_marking_which_exist(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    assert main(["models", "--models", str(tmp_path), "path", "--models", str(nowhere)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"missing  {nowhere}  (--models)"  # the action's --models wins over the group's
    assert lines[1] == f"exists   {MODELS}  (AGENDER_MODELS)"
    assert lines[2].startswith("missing ") and "user models dir" in lines[2]
    assert all(line.startswith("exists ") and line.endswith("(repository)") for line in lines[3:])


def test_models_without_action_is_a_usage_error(capsys):
    assert main(["models"]) == 2


# --------------------------------------------------------------------------- ModelStore errors


def test_resolve_missing_file_names_file_and_fetch_hint(monkeypatch):
    monkeypatch.delenv("AGENDER_MODELS")
    with pytest.raises(ModelError) as info:
        ModelStore().resolve(YUNET)
    msg = str(info.value)
    assert "\n" not in msg and YUNET in msg and "not found" in msg and "agender models fetch yunet" in msg


def test_resolve_corrupted_file_names_checksum_and_fetch_hint(tmp_path):
    bad_dir = corrupted_mirror(tmp_path)
    with pytest.raises(ModelError) as info:
        ModelStore([bad_dir]).resolve(YUNET)
    msg = str(info.value)
    assert "\n" not in msg and str(bad_dir / YUNET) in msg
    assert f"expected {YUNET_SHA[:12]}" in msg and "agender models fetch yunet" in msg


# --------------------------------------------------------------------------- console script


def test_console_script_agender_models_list_runs(tmp_path):
    exe = shutil.which("agender") or str(Path(sys.executable).with_name("agender"))
    env = {**os.environ, "AGENDER_MODELS": str(MODELS), "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([exe, "models", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert YUNET in proc.stdout and str(MODELS / YUNET) in proc.stdout
