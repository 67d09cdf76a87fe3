"""Connecting to Ray: the local cluster by default, any cluster by address, with the same code."""

from __future__ import annotations

import getpass
import logging
import os
import socket
import tempfile

import filelock
import ray

log = logging.getLogger(__name__)

DASHBOARD_HOST = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8265
API_SERVER_ADDRESS_VARIABLE = "RAY_API_SERVER_ADDRESS"
START_LOCK_WAIT_S = 180  # a local start takes seconds; longer means the holder is stuck, so start anyway


def ensure_ray(address: str | None = None) -> None:
    """Join `address` (or $RAY_ADDRESS) if given; otherwise start a new local Ray instance.

    Without an address Ray would attach to any cluster already running on the host (e.g. another
    user's); "local" keeps the default run on its own instance. Pass `auto` to join the host's cluster.
    """
    quiet_library_logs()
    if ray.is_initialized():
        return
    # Ray Data's progress bars garble a terminal shared with our own logs; tqdm covers the long loops.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        start_local_ray()


def start_local_ray() -> None:
    """A new local Ray instance whose processes know its address.

    Ray Train 2.60's placement-group cleaner finds its cluster through the State API without an address, which
    fails ("Found multiple active Ray instances") while another Ray instance runs on the host. The instance's
    processes inherit the driver's environment when they start, so for that moment it names this instance's
    dashboard (the State API's server) in $RAY_API_SERVER_ADDRESS.

    Two raylrec commands starting at once would both find the same port free; the second dashboard would then fail
    to bind it (after a minute's wait) and that instance's processes would reach the first instance. A lock held
    from choosing the port until the dashboard listens on it keeps the starts apart.
    """
    lock = filelock.FileLock(os.path.join(tempfile.gettempdir(), f"raylrec-local-ray-start-{getpass.getuser()}.lock"))
    try:
        lock.acquire(timeout=START_LOCK_WAIT_S)
    except filelock.Timeout:
        log.warning(
            "another raylrec command has held %s for %d s; starting Ray without waiting for it",
            lock.lock_file,
            START_LOCK_WAIT_S,
        )
    try:
        launch_local_ray()
    finally:
        lock.release()  # a no-op when the lock was not acquired


def launch_local_ray() -> None:
    port = dashboard_port()
    previous = os.environ.get(API_SERVER_ADDRESS_VARIABLE)
    os.environ[API_SERVER_ADDRESS_VARIABLE] = f"http://{DASHBOARD_HOST}:{port}"
    try:
        context = ray.init(address="local", dashboard_host=DASHBOARD_HOST, dashboard_port=port, logging_level="WARNING")
        if context.dashboard_url:
            log.info("started a local Ray instance; dashboard at http://%s", context.dashboard_url)
    finally:
        if previous is None:
            del os.environ[API_SERVER_ADDRESS_VARIABLE]
        else:
            os.environ[API_SERVER_ADDRESS_VARIABLE] = previous


def dashboard_port() -> int:
    """Ray's default dashboard port when it is free on this host, else any free port (as Ray itself does)."""
    with socket.socket() as probe:
        try:
            probe.bind((DASHBOARD_HOST, DEFAULT_DASHBOARD_PORT))
        except OSError:
            probe.bind((DASHBOARD_HOST, 0))
        return probe.getsockname()[1]


# Library loggers held at WARNING: their INFO lines bury our own progress log.
NOISY_LOGGERS = (
    "ray.data",  # every execution plan; our own step log says what runs
    # Tune's TensorBoard logger renames every metric with "@" (ndcg@10 → ndcg_10) and logs each renaming at every
    # report: thousands of lines per sweep. The event files are still written.
    "tensorboardX",
)


def quiet_library_logs() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0
