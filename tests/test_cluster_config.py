"""cluster.yaml: valid for Ray's cluster launcher (its own schema and validator, no cloud calls), and no Ray port
open to the internet."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
OPEN_TO_ALL = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_ports(config: dict) -> set[int]:
    """The ports the start commands give Ray, plus Ray's fixed defaults (GCS, dashboard, client, metrics)."""
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    given = {int(p) for p in re.findall(r"--[a-z-]*port=(\d+)", commands)}
    return given | {6379, 8265, 10001, 8080}


def ray_default_inbound_rules(group_ids: set[str], extra: list[dict]) -> list[dict]:
    """Ray's AWS bootstrap: the rules it authorises on a security group it creates (its own function when boto3,
    which `ray up` on AWS needs, is installed; else the same rules as Ray 2.60 defines them)."""
    try:
        from ray.autoscaler._private.aws.config import _create_default_inbound_rules
    except ImportError:  # ray/autoscaler/_private/aws/config.py imports boto3 at module level
        return [{"FromPort": -1, "ToPort": -1, "IpProtocol": "-1",
                 "UserIdGroupPairs": [{"GroupId": g} for g in sorted(group_ids)]},
                {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                *extra]
    return _create_default_inbound_rules(group_ids, extra)


def effective_inbound_rules(config: dict) -> list[dict]:
    """What Ray's AWS bootstrap authorises on the group it creates: its defaults plus our IpPermissions."""
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    return ray_default_inbound_rules({"sg-raylrec"}, extra)


def covers(rule: dict, port: int) -> bool:
    if rule.get("IpProtocol") == "-1":
        return True
    low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return low == -1 or low <= port <= high


def public_sources(rule: dict) -> set[str]:
    """The rule's sources that are not this cluster's own security group (any CIDR or prefix list counts)."""
    sources = {r["CidrIp"] for r in rule.get("IpRanges", [])} | {r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])}
    return sources | {r["PrefixListId"] for r in rule.get("PrefixListIds", [])}


def test_cluster_yaml_passes_rays_own_validation(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))  # merges Ray's AWS defaults, as `ray up` does
    validate_config(prepared)  # Ray's JSON schema + its cross-field checks
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and set(types) == {"head", "cpu-worker", "gpu-worker"}
    assert types["head"]["resources"] == {"CPU": 0}
    assert sum(t.get("min_workers", 0) for t in types.values()) <= prepared["max_workers"]
    assert all(types[t]["max_workers"] >= 1 for t in ("cpu-worker", "gpu-worker"))
    assert types["gpu-worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    # raylrec is installed by install.sh on every node, and run directories live on the shared mount.
    setup = "\n".join(prepared["setup_commands"])
    assert "install.sh" in setup and "/mnt/raylrec" in setup


def test_a_broken_config_is_rejected_by_the_same_validator(config):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(config)
    broken["available_node_types"]["cpu-worker"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_no_ray_port_is_open_to_the_internet(config):
    rules = effective_inbound_rules(config)
    open_ports = []
    for rule in rules:
        if public_sources(rule):
            open_ports += [port for port in sorted(ray_ports(config)) if covers(rule, port)]
            assert (rule.get("FromPort"), rule.get("ToPort"), rule.get("IpProtocol")) == (22, 22, "tcp"), rule
    assert not open_ports, f"Ray ports reachable from outside the cluster: {open_ports}"
    # Every other rule admits only the cluster's own security group.
    assert any(rule.get("UserIdGroupPairs") and not public_sources(rule) for rule in rules)
    # No node type bypasses the managed group with groups this check cannot see.
    assert not any("SecurityGroupIds" in t["node_config"] for t in config["available_node_types"].values())


def test_the_check_catches_an_exposed_dashboard(config):
    exposed = copy.deepcopy(config)
    exposed["provider"]["security_group"]["IpPermissions"] = [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    with pytest.raises(AssertionError):
        test_no_ray_port_is_open_to_the_internet(exposed)


def test_token_auth_on_every_node_and_no_secrets_in_the_file(config):
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
        if "ray start --head" in command:  # the dashboard/job server listens on loopback: reached by SSH tunnel only
            assert "--dashboard-host=127.0.0.1" in command
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # copied over SSH, not written here
    text = CLUSTER_YAML.read_text()
    for pattern in (r"AKIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key", r"(?i)aws_access_key_id", r"hf_[A-Za-z0-9]{20,}",
                    r"(?i)(token|password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", r"[0-9a-f]{64}"):
        assert not re.search(pattern, text), pattern
