"""The runtime server over real HTTP on loopback: execute, files, limits, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.component.test_runtime_support import RuntimeServer, children_of, peak_rss_bytes, process_alive

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A runtime with default limits."""
    with RuntimeServer(tmp_path_factory.mktemp("runtime") / "app") as running:
        yield running


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A runtime with tiny output, upload and timeout limits."""
    env = {
        "SANDBOX_MAX_OUTPUT_BYTES": "1000",
        "SANDBOX_MAX_UPLOAD_BYTES": "1Mi",
        "SANDBOX_EXEC_TIMEOUT_SECONDS": "1",
        "SANDBOX_MAX_EXEC_TIMEOUT_SECONDS": "1.5",
    }
    with RuntimeServer(tmp_path_factory.mktemp("limited") / "app", env=env) as running:
        yield running


# --- health and execute -------------------------------------------------------------------

def test_health_reports_ok(server: RuntimeServer) -> None:
    status, body = server.request("GET", "/")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "message": "Sandbox Runtime is active."}


def test_execute_returns_exact_stdout_and_no_timed_out_key(server: RuntimeServer) -> None:
    reply = server.execute("echo hello world")
    assert reply == {"stdout": "hello world\n", "stderr": "", "exit_code": 0}


def test_execute_runs_in_base_dir(server: RuntimeServer) -> None:
    assert server.execute("pwd")["stdout"] == f"{os.path.realpath(server.base_dir)}\n"


def test_execute_passes_exit_codes_and_stderr(server: RuntimeServer) -> None:
    reply = server.execute("sh -c 'echo oops >&2; exit 3'")
    assert (reply["stdout"], reply["stderr"], reply["exit_code"]) == ("", "oops\n", 3)


def test_execute_without_shell_treats_operators_as_arguments(server: RuntimeServer) -> None:
    assert server.execute("echo a | wc -c && ls; $HOME")["stdout"] == "a | wc -c && ls; $HOME\n"


def test_execute_shell_is_explicit_choice(server: RuntimeServer) -> None:
    assert server.execute("sh -c 'echo a | wc -c'")["stdout"].strip() == "2"


def test_execute_missing_binary_is_exit_1_with_reason(server: RuntimeServer) -> None:
    reply = server.execute("definitely-not-a-binary --flag")
    assert reply["exit_code"] == 1
    assert "No such file or directory" in reply["stderr"] and "definitely-not-a-binary" in reply["stderr"]


@pytest.mark.parametrize("command, reason", [("", "empty"), ("echo 'unbalanced", "No closing quotation")])
def test_execute_unparseable_command_is_exit_1(server: RuntimeServer, command: str, reason: str) -> None:
    reply = server.execute(command)
    assert reply["exit_code"] == 1 and reason in reply["stderr"]


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"cmd": "ls"}', b'{"command": 5}',
    b'{"command": "ls", "timeout_seconds": 0}', b'{"command": "ls", "timeout_seconds": -1}',
    b'{"command": "ls", "timeout_seconds": "10"}', b'{"command": "ls", "timeout_seconds": true}',
    b'{"command": "ls", "timeout_seconds": NaN}', b'{"command": "ls", "timeout_seconds": Infinity}',
])
def test_execute_rejects_bad_requests_with_422_naming_the_field(server: RuntimeServer, body: bytes) -> None:
    status, reply = server.request("POST", "/execute", body, {"Content-Type": "application/json"})
    assert status == 422
    assert json.loads(reply)["detail"]


def test_execute_timeout_kills_the_whole_group(server: RuntimeServer) -> None:
    started = time.monotonic()
    reply = server.execute("sh -c 'sleep 60 & echo $!; sleep 60'", timeout_seconds=0.5)
    elapsed = time.monotonic() - started
    assert reply["timed_out"] is True and reply["exit_code"] == 124
    assert "timed out after 0.5 seconds" in reply["stderr"]
    assert elapsed < 5
    background = int(reply["stdout"].strip())
    deadline = time.monotonic() + 5
    while process_alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(background), "the background child of the timed-out command survived"


def test_execute_timeout_defaults_from_env_and_is_capped(limited: RuntimeServer) -> None:
    started = time.monotonic()
    assert limited.execute("sleep 30")["timed_out"] is True  # default 1 s
    assert limited.execute("sleep 30", timeout_seconds=1000)["timed_out"] is True  # capped at 1.5 s
    assert time.monotonic() - started < 8
    assert "timed_out" not in limited.execute("sleep 0.1", timeout_seconds=1000)


def test_execute_output_is_capped_with_marker(limited: RuntimeServer) -> None:
    reply = limited.execute("sh -c 'yes x | head -c 50000; yes e | head -c 3000 >&2'")
    assert reply["exit_code"] == 0
    assert reply["stdout"].startswith("x\n" * 500)
    assert "[output truncated: 49000 more bytes not shown" in reply["stdout"]
    assert "[output truncated: 2000 more bytes not shown" in reply["stderr"]


def test_server_answers_while_commands_run(server: RuntimeServer) -> None:
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(server.execute, "sleep 1.5") for _ in range(3)]
        time.sleep(0.2)
        started = time.monotonic()
        assert server.request("GET", "/")[0] == 200
        assert server.execute("echo quick")["stdout"] == "quick\n"
        assert time.monotonic() - started < 1.0
        assert all(f.result()["exit_code"] == 0 for f in slow)


# --- files --------------------------------------------------------------------------------

def _upload(server: RuntimeServer, filename: str, content: bytes) -> requests.Response:
    return requests.post(f"{server.url}/upload", files={"file": (filename, content)}, timeout=60)


def test_upload_creates_nested_directories_and_round_trips(server: RuntimeServer) -> None:
    content = os.urandom(4096)
    reply = _upload(server, "deep/er/still/data.bin", content)
    assert reply.status_code == 200
    assert reply.json() == {"message": "File 'deep/er/still/data.bin' uploaded successfully."}
    assert (server.base_dir / "deep/er/still/data.bin").read_bytes() == content
    download = requests.get(f"{server.url}/download/deep%2Fer%2Fstill%2Fdata.bin", timeout=30)
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-length"] == "4096"
    assert "attachment" in download.headers["content-disposition"]


def test_upload_overwrites_and_leaves_no_temp_files(server: RuntimeServer) -> None:
    _upload(server, "over/write.txt", b"first")
    assert _upload(server, "over/write.txt", b"second").status_code == 200
    assert sorted(p.name for p in (server.base_dir / "over").iterdir()) == ["write.txt"]
    assert (server.base_dir / "over/write.txt").read_bytes() == b"second"


def test_upload_absolute_filename_lands_inside_base(server: RuntimeServer) -> None:
    assert _upload(server, "/abs/inside.txt", b"x").status_code == 200
    assert (server.base_dir / "abs/inside.txt").read_bytes() == b"x"


def test_upload_without_file_part_is_422(server: RuntimeServer) -> None:
    reply = requests.post(f"{server.url}/upload", files={"other": ("a.txt", b"x")}, timeout=30)
    assert reply.status_code == 422 and "'file'" in reply.json()["message"]
    reply = requests.post(f"{server.url}/upload", data=b"raw", timeout=30)
    assert reply.status_code == 422


def test_upload_empty_file(server: RuntimeServer) -> None:
    assert _upload(server, "empty/zero.txt", b"").status_code == 200
    assert (server.base_dir / "empty/zero.txt").read_bytes() == b""


def test_upload_onto_directory_or_through_file_fails_cleanly(server: RuntimeServer) -> None:
    _upload(server, "occupied/inner.txt", b"i")
    onto_directory = _upload(server, "occupied", b"x")
    assert onto_directory.status_code == 500 and onto_directory.json()["message"].startswith("File upload failed:")
    through_file = _upload(server, "occupied/inner.txt/below.txt", b"x")
    assert through_file.status_code == 500 and through_file.json()["message"].startswith("File upload failed:")
    assert sorted(p.name for p in (server.base_dir / "occupied").iterdir()) == ["inner.txt"]


def test_upload_unicode_names(server: RuntimeServer) -> None:
    assert _upload(server, "ünï/cödé 文件.txt", b"u").status_code == 200
    assert (server.base_dir / "ünï" / "cödé 文件.txt").read_bytes() == b"u"
    download = requests.get(f"{server.url}/download/" + requests.utils.quote("ünï/cödé 文件.txt", safe=""), timeout=30)
    assert download.content == b"u"


def test_list_reports_contract_shape(server: RuntimeServer) -> None:
    _upload(server, "listing/b.txt", b"12345")
    _upload(server, "listing/a/inner.txt", b"1")
    reply = requests.get(f"{server.url}/list/listing", timeout=30)
    assert reply.status_code == 200
    entries = reply.json()
    assert [(e["name"], e["type"]) for e in entries] == [("a", "directory"), ("b.txt", "file")]
    assert entries[1]["size"] == 5 and abs(entries[1]["mod_time"] - time.time()) < 60


def test_list_of_root_and_slash_is_base(server: RuntimeServer) -> None:
    _upload(server, "rootfile.txt", b"r")
    for raw in ("/list/", "/list/%2F", "/list/."):
        status, body = server.request("GET", raw)
        assert status == 200 and "rootfile.txt" in [e["name"] for e in json.loads(body)], raw


def test_list_of_file_or_missing_is_404(server: RuntimeServer) -> None:
    _upload(server, "plain.txt", b"p")
    for raw in ("/list/plain.txt", "/list/missing-dir"):
        status, body = server.request("GET", raw)
        assert (status, json.loads(body)) == (404, {"message": "Path is not a directory"}), raw


def test_download_missing_or_directory_is_404(server: RuntimeServer) -> None:
    _upload(server, "somedir/f.txt", b"f")
    for raw in ("/download/nope.txt", "/download/somedir", "/download/"):
        status, body = server.request("GET", raw)
        assert (status, json.loads(body)) == (404, {"message": "File not found"}), raw


def test_download_refuses_fifo_without_blocking(server: RuntimeServer) -> None:
    os.mkfifo(server.base_dir / "pipe")
    status, _ = server.request("GET", "/download/pipe", timeout=5)
    assert status == 404


def test_exists_reports_path_and_flag(server: RuntimeServer) -> None:
    _upload(server, "ex/here.txt", b"h")
    for path, expected in (("ex/here.txt", True), ("ex", True), ("ex/not-here.txt", False)):
        status, body = server.request("GET", "/exists/" + requests.utils.quote(path, safe=""))
        assert (status, json.loads(body)) == (200, {"path": path, "exists": expected})


def test_symlink_inside_base_is_followed(server: RuntimeServer) -> None:
    _upload(server, "target/real.txt", b"real")
    os.symlink("target", server.base_dir / "alias")
    assert requests.get(f"{server.url}/download/alias/real.txt", timeout=30).content == b"real"


def test_large_file_streams_both_ways_without_buffering(tmp_path: Path) -> None:
    size = 50 * MIB
    with RuntimeServer(tmp_path / "app") as fresh:
        baseline = peak_rss_bytes(fresh.pid)
        digest = hashlib.sha256()

        def body() -> Iterator[bytes]:
            # A generator body is sent chunked: the server cannot know the size in advance.
            block = bytes(range(256)) * 4096
            for _ in range(size // len(block)):
                digest.update(block)
                yield block

        boundary = "runtime-test-boundary"
        framing_head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big/blob.bin\"\r\n"
                        "Content-Type: application/octet-stream\r\n\r\n").encode()

        def multipart() -> Iterator[bytes]:
            yield framing_head
            yield from body()
            yield f"\r\n--{boundary}--\r\n".encode()

        reply = requests.post(f"{fresh.url}/upload", data=multipart(),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=120)
        assert reply.status_code == 200, reply.text
        assert (fresh.base_dir / "big/blob.bin").stat().st_size == size

        received = hashlib.sha256()
        total = 0
        with requests.get(f"{fresh.url}/download/big/blob.bin", stream=True, timeout=120) as download:
            assert download.headers["content-length"] == str(size)
            for chunk in download.iter_content(1024 * 1024):
                received.update(chunk)
                total += len(chunk)
        assert total == size and received.hexdigest() == digest.hexdigest()
        growth = peak_rss_bytes(fresh.pid) - baseline
        assert growth < 25 * MIB, f"server peak RSS grew by {growth / MIB:.1f} MiB for a 50 MiB round trip"


def test_upload_over_limit_is_413_by_declared_length(limited: RuntimeServer) -> None:
    reply = _upload(limited, "too/big.bin", b"z" * (2 * MIB))
    assert reply.status_code == 413 and "SANDBOX_MAX_UPLOAD_BYTES" in reply.json()["message"]
    assert not (limited.base_dir / "too").exists() or not any((limited.base_dir / "too").iterdir())


def test_upload_over_limit_is_413_when_streamed(limited: RuntimeServer) -> None:
    boundary = "b0undary"

    def chunked() -> Iterator[bytes]:
        yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stream/big.bin\"\r\n\r\n".encode()
        for _ in range(24):
            yield b"y" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    reply = requests.post(f"{limited.url}/upload", data=chunked(),
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=60)
    assert reply.status_code == 413
    leftovers = list((limited.base_dir / "stream").iterdir()) if (limited.base_dir / "stream").exists() else []
    assert leftovers == [], "a rejected upload left files behind"


def test_upload_over_limit_with_expect_continue_is_refused_before_the_body(limited: RuntimeServer) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as raw:
        raw.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n")
        head = raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def test_upload_at_limit_is_accepted(limited: RuntimeServer) -> None:
    assert _upload(limited, "exact.bin", b"e" * MIB).status_code == 200


# --- concurrency --------------------------------------------------------------------------

def test_200_concurrent_requests_without_errors_or_leaked_processes(server: RuntimeServer) -> None:
    def one(index: int) -> str | None:
        """None on success, else what went wrong."""
        kind = index % 4
        if kind == 0:
            reply = server.execute(f"echo req-{index}")
            return None if reply["stdout"] == f"req-{index}\n" else f"execute {index}: {reply}"
        if kind == 1:
            response = _upload(server, f"conc/{index}.txt", str(index).encode())
            return None if response.status_code == 200 else f"upload {index}: {response.status_code} {response.text}"
        if kind == 2:
            reply = server.execute(f"sh -c 'sleep 0.2; echo {index}'")
            return None if reply["stdout"] == f"{index}\n" else f"execute {index}: {reply}"
        status, body = server.request("GET", "/exists/conc")
        return None if status == 200 and json.loads(body)["path"] == "conc" else f"exists: {status} {body!r}"

    open_fds_before = len(os.listdir(f"/proc/{server.pid}/fd"))
    with ThreadPoolExecutor(200) as pool:
        failures = [problem for problem in pool.map(one, range(200)) if problem]
    assert not failures, f"{len(failures)} of 200 requests failed: {failures[:5]}"
    deadline = time.monotonic() + 5
    while children_of(server.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_of(server.pid) == [], "commands left processes (or zombies) behind"
    while len(os.listdir(f"/proc/{server.pid}/fd")) > open_fds_before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{server.pid}/fd")) <= open_fds_before + 2, "pipes or files were left open"
