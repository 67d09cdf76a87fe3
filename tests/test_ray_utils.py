import os
import subprocess
import sys
import textwrap

from ray_cluster import REPO

FIND_OWN_CLUSTER = textwrap.dedent("""
    import ray
    from raylrec.ray_utils import ensure_ray

    ensure_ray()

    @ray.remote
    def nodes_seen_by_the_state_api():
        from ray.util.state import list_nodes  # no address: Ray Train's placement-group cleaner asks the same way
        return [node.node_id for node in list_nodes()]

    print("NODES", ray.get(nodes_seen_by_the_state_api.remote()) == [ray.get_runtime_context().get_node_id()])
""")


def test_a_local_instance_is_found_by_its_own_processes_beside_another(ray_session):
    """With the test session's Ray instance running, a job's own local instance is the one its workers' State API
    calls reach (without the fix: "Found multiple active Ray instances")."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    result = subprocess.run([sys.executable, "-c", FIND_OWN_CLUSTER], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NODES True" in result.stdout, result.stderr[-3000:]
