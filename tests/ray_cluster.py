"""A throwaway Ray cluster for tests: `ray start --head` on 127.0.0.1 with its own temp dir, ports and token,
talked to only by explicit addresses, and stopped by the PIDs it started (never `ray stop`, which would kill
every Ray process on the host, other people's clusters included)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = str(Path(sys.executable).with_name("ray"))
TERMINAL_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """`with LocalRayCluster(tmp) as cluster:` — a head node (plus the processes it spawns) that this object owns."""

    def __init__(self, root: Path, num_cpus: int = 2, metrics: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Ray caps the session socket path length (AF_UNIX 107 bytes): keep the temp dir short.
        self.temp_dir = Path(f"/tmp/rlr-{secrets.token_hex(4)}")
        self.token_file = self.root / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        self.ports = {
            name: free_port()
            for name in (
                "gcs",
                "dashboard",
                "client",
                "agent_listen",
                "agent_grpc",
                "runtime_env",
                "node_manager",
                "object_manager",
                "metrics",
                "dashboard_metrics",
            )
        }
        self.num_cpus = num_cpus
        self.metrics = metrics
        self.process: subprocess.Popen | None = None
        self.known_pids: set[int] = set()

    # -- addresses and environment -------------------------------------------------------------------
    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for any `ray` command against this cluster: its token, never ~/.ray/auth_token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's single-machine mode, in which the node address is the
        # loopback one (otherwise Ray replaces 127.0.0.1 by the host's network address); no worker nodes can join.
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_file),
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            RAY_USAGE_STATS_ENABLED="0",
            PYTHONUNBUFFERED="1",
            **extra,
        )
        return env

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> LocalRayCluster:
        p = self.ports
        command = [
            RAY_BIN,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={p['gcs']}",
            f"--num-cpus={self.num_cpus}",
            "--num-gpus=0",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={p['dashboard']}",
            f"--ray-client-server-port={p['client']}",
            f"--dashboard-agent-listen-port={p['agent_listen']}",
            f"--dashboard-agent-grpc-port={p['agent_grpc']}",
            f"--runtime-env-agent-port={p['runtime_env']}",
            f"--node-manager-port={p['node_manager']}",
            f"--object-manager-port={p['object_manager']}",
            "--disable-usage-stats",
        ]
        if self.metrics:
            command.append(f"--metrics-export-port={p['metrics']}")
        # Custom metrics are pushed to the node's agent every `metrics_report_interval_ms` (10 s by default).
        # On a busy shared machine the agents start slowly, and the raylet gives up on them (taking the node
        # down) after `agent_register_timeout_ms`: allow 5 minutes. The dashboard's own metrics port gets a free
        # port too (its default, 44227, may belong to another cluster on the host).
        env = self.env(
            RAY_metrics_report_interval_ms="1000",
            RAY_agent_register_timeout_ms="300000",
            DASHBOARD_METRIC_PORT=str(p["dashboard_metrics"]),
        )
        self.log_file = open(self.root / "ray_start.log", "w")
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
        )
        self.known_pids.add(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited {self.process.returncode}:\n{self.start_log()}")
            self.track_pids()
            if "Ray runtime started" in (self.root / "ray_start.log").read_text(errors="replace"):
                try:
                    self.http_json("/api/version")
                    return self
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(1)
        raise TimeoutError(f"the dashboard did not come up in {timeout} s:\n{self.start_log()}")

    def start_log(self) -> str:
        return (self.root / "ray_start.log").read_text(errors="replace")[-4000:]

    def track_pids(self) -> None:
        """Remember every process this cluster runs: the tree under our `ray start`, plus anything naming our
        unique temp dir (in case a process was re-parented). Worker processes rename themselves, so the tree
        is the main source."""
        if self.process is None:
            return
        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
            self.known_pids.update(p.pid for p in tree)
        except psutil.NoSuchProcess:
            pass
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(marker in arg for arg in proc.info["cmdline"] or ()):
                    self.known_pids.add(proc.info["pid"])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def stop(self) -> None:
        """SIGTERM then SIGKILL the processes this cluster started, by PID — never `ray stop`."""
        self.track_pids()
        procs = []
        for pid in sorted(self.known_pids):
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "log_file", None):
            self.log_file.close()
        logs = self.temp_dir / "session_latest" / "logs"
        if logs.exists():  # keep the cluster's logs beside the test's files for post-mortems
            shutil.copytree(logs, self.root / "ray_logs", dirs_exist_ok=True, ignore_dangling_symlinks=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- talking to it ----------------------------------------------------------------------------------
    def http_json(self, path: str, token: bool = True, timeout: float = 30):
        request = urllib.request.Request(self.dashboard_url + path)
        if token:
            request.add_header("Authorization", f"Bearer {self.token_file.read_text().strip()}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def ray(
        self, *args: str, timeout: float = 600, check: bool = True, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess:
        """A `ray` CLI command against this cluster (explicit address, this cluster's token)."""
        result = subprocess.run(
            [RAY_BIN, *args], env=self.env(**env), capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO
        )
        self.track_pids()
        if check and result.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def submit(
        self,
        entrypoint: list[str],
        submission_id: str,
        runtime_env: dict | None = None,
        wait: bool = False,
        working_dir: Path = REPO,
    ) -> subprocess.CompletedProcess:
        args = [
            "job",
            "submit",
            "--address",
            self.dashboard_url,
            "--submission-id",
            submission_id,
            "--working-dir",
            str(working_dir),
        ]
        if runtime_env:
            args += ["--runtime-env-json", json.dumps(runtime_env)]
        if not wait:
            args.append("--no-wait")
        deadline = time.monotonic() + 300
        while True:
            result = self.ray(*args, "--", *entrypoint, check=False)
            # The dashboard answers before the node's agent has registered with it (slow on a busy machine).
            if "No available agent" not in result.stderr or time.monotonic() > deadline:
                break
            time.sleep(3)
        if result.returncode != 0:
            raise AssertionError(f"ray job submit exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def job_status(self, submission_id: str) -> str:
        return self.http_json(f"/api/jobs/{submission_id}")["status"]

    def wait_job(self, submission_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.job_status(submission_id)
            self.track_pids()
            if status in TERMINAL_STATES:
                return status
            time.sleep(1)
        raise TimeoutError(f"job {submission_id} still {status} after {timeout} s")

    def job_logs(self, submission_id: str) -> str:
        return self.http_json(f"/api/jobs/{submission_id}/logs")["logs"]

    def alive_actors(self, class_name: str) -> list[dict]:
        """Ray's state API (the REST endpoint behind `ray list actors`)."""
        query = (
            "/api/v0/actors?limit=1000&detail=1&filter_keys=class_name&filter_predicates=%3D"
            f"&filter_values={class_name}&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
        )
        return self.http_json(query)["data"]["result"]["result"]

    def scrape_metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=30) as response:
            return response.read().decode()
