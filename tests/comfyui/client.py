"""A real ComfyUI server started for the tests, driven only through its HTTP and websocket API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import websocket  # websocket-client


def status_mib(pid: int | str = "self") -> dict[str, float]:
    """The memory lines of a process's /proc status (VmRSS, RssAnon, ...), in MiB; this process by default."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.endswith(" kB")}


@dataclass
class Run:
    """One queued prompt and what the server said about it."""

    prompt_id: str
    status: str  # "success", "error", "interrupted"
    messages: list[dict] = field(default_factory=list)  # every websocket message for this prompt, with "t" (seconds)
    started: float = 0.0
    ended: float = 0.0
    history: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    def progress(self, node: str) -> list[tuple[int, int]]:
        return [(m["data"]["value"], m["data"]["max"]) for m in self.of_type("progress") if m["data"].get("node") == node]

    @property
    def error(self) -> dict:
        errors = self.of_type("execution_error")
        return errors[0]["data"] if errors else {}

    def outputs(self, node: str) -> dict:
        return self.history.get("outputs", {}).get(node, {})


class RejectedPrompt(Exception):
    """``POST /prompt`` answered 400: ComfyUI's validation refused the graph."""

    def __init__(self, body: dict) -> None:
        super().__init__(json.dumps(body)[:2000])
        self.body = body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """``main.py --cpu`` of one installed ComfyUI, its log in a file, stopped by its own PID."""

    def __init__(self, version: str, home: Path, workdir: Path, extra_args: tuple[str, ...] = (), python: Path | None = None) -> None:
        self.version = version
        self.extra_args = extra_args
        self.home = home
        self.tree = home / "ComfyUI"
        self.python = python or home / "venv" / "bin" / "python"
        self.input_dir = workdir / "input"
        self.output_dir = workdir / "output"
        self.log_path = workdir / "server.log"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.process: subprocess.Popen | None = None
        self.ws: websocket.WebSocket | None = None

    def start(self, timeout: float = 180.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(GROUNDED_SAM_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        cmd = [
            str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir), *self.extra_args,
        ]  # fmt: skip
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(cmd, cwd=self.tree, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI {self.version} exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        else:
            raise RuntimeError(f"ComfyUI {self.version} did not answer within {timeout}s:\n{self.log_text()[-4000:]}")
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=600)

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _status_mib(self) -> dict[str, float]:
        """The memory lines of the server process's /proc status (VmRSS, RssAnon, ...), in MiB."""
        return status_mib(self.process.pid)

    def rss_mib(self) -> float:
        """The server process's resident memory now (VmRSS)."""
        return self._status_mib()["VmRSS"]

    def rss_parts_mib(self) -> dict[str, int]:
        """The server's resident memory by kind: anonymous (heaps, tensors), file-backed (code and mapped files), shared."""
        status = self._status_mib()
        return {part: round(status[f"Rss{name}"]) for part, name in (("anon", "Anon"), ("file", "File"), ("shmem", "Shmem"))}

    # --- HTTP ---------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body: dict | None = None):
        return self.request("POST", path, body or {})

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict) -> str:
        try:
            return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]
        except urllib.error.HTTPError as err:
            if err.code == 400:
                raise RejectedPrompt(json.loads(err.read() or b"{}")) from err
            raise

    def interrupt(self) -> None:
        self.post("/interrupt")

    def free(self) -> None:
        self.post("/free", {"unload_models": True, "free_memory": True})

    # --- websocket ----------------------------------------------------------------------

    def run(self, prompt: dict, on_message=None, timeout: float = 900.0) -> Run:
        """Queue ``prompt`` and follow it to its end; ``on_message(run, message)`` sees each message as it comes."""
        start = time.monotonic()
        prompt_id = self.queue(prompt)
        run = Run(prompt_id, status="", started=start)
        deadline = start + timeout
        while not run.status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s")
            raw = self.ws.recv()
            if not isinstance(raw, str):
                continue  # binary preview frames
            message = json.loads(raw)
            data = message.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            message["t"] = time.monotonic() - start
            run.messages.append(message)
            kind = message["type"]
            if kind == "execution_success" or (kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id):
                run.status = "success"
            elif kind == "execution_error":
                run.status = "error"
            elif kind == "execution_interrupted":
                run.status = "interrupted"
            if on_message is not None and not run.status:
                on_message(run, message)
        run.ended = time.monotonic()
        run.history = self.history(prompt_id)
        return run

    def history(self, prompt_id: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            time.sleep(0.2)
        return {}
