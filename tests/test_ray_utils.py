import os
import subprocess
import sys
import textwrap
import time

import pytest
from ray_cluster import REPO, free_port

FIND_OWN_CLUSTER = textwrap.dedent("""
    import sys
    import time

    import ray
    from raylrec import ray_utils

    ray_utils.DEFAULT_DASHBOARD_PORT = int(sys.argv[2])  # the port every copy prefers, as 8265 when it is free
    time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # start with the other copies (see find_own_cluster)
    ray_utils.ensure_ray()

    @ray.remote
    def nodes_seen_by_the_state_api():
        from ray.util.state import list_nodes  # no address: Ray Train's placement-group cleaner asks the same way
        return [node.node_id for node in list_nodes()]

    print("NODES", ray.get(nodes_seen_by_the_state_api.remote()) == [ray.get_runtime_context().get_node_id()])
""")
IMPORT_WAIT_S = 15  # per copy: time to import Ray and raylrec on a busy 2-core host
START_GAP_S = 1.0


def find_own_cluster(copies: int) -> list[subprocess.CompletedProcess]:
    """Run FIND_OWN_CLUSTER in `copies` processes, each starting its own local Ray instance, all preferring the same
    free dashboard port. Once all have imported Ray they start a second apart: after the previous copy has probed
    the port (probes at the same instant would see each other's probe and pick different ports) and before its
    dashboard listens on it (several seconds later) — the window two commands launched together fall into."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    start_at, port = time.time() + (IMPORT_WAIT_S * copies if copies > 1 else 0), str(free_port())
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", FIND_OWN_CLUSTER, str(start_at + copy * START_GAP_S), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for copy in range(copies)
    ]
    results = []
    try:
        for job in jobs:
            stdout, stderr = job.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr))
    finally:
        for job in jobs:  # only the processes this test started
            if job.poll() is None:
                job.kill()
    return results


def test_a_local_instance_is_found_by_its_own_processes_beside_another(ray_session):
    """With the test session's Ray instance running, a job's own local instance is the one its workers' State API
    calls reach (without the fix: "Found multiple active Ray instances")."""
    [result] = find_own_cluster(1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NODES True" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow  # ≈ 50 s: two drivers each start a local instance
def test_two_jobs_starting_together_each_reach_their_own_instance():
    """Two jobs starting at once must not both give their dashboards the same free port (without the start lock the
    second dashboard fails to bind it and that job's processes reach the first job's instance)."""
    for result in find_own_cluster(2):
        assert result.returncode == 0, result.stderr[-3000:]
        assert "NODES True" in result.stdout, result.stderr[-3000:]
