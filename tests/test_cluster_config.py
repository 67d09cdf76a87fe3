"""cluster.yaml: valid for Ray's cluster launcher (its own schema and validator, no cloud calls), no Ray port
open to the internet, SSH only from the range the user sets, least-privilege instance profiles."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
DEPLOY = CLUSTER_YAML.parent / "deploy" / "aws"
SECURITY_GROUP_RULES = DEPLOY / "security-group-rules.json"
SETUP = DEPLOY / "setup.sh"
OPEN_TO_ALL = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_ports(config: dict) -> set[int]:
    """The ports the start commands give Ray, plus Ray's fixed defaults (GCS, dashboard, client, metrics)."""
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    given = {int(p) for p in re.findall(r"--[a-z-]*port=(\d+)", commands)}
    return given | {6379, 8265, 10001, 8080}


def effective_inbound_rules(config: dict, ssh_cidr: str = "198.51.100.7/32") -> list[dict]:
    """The rules of the group every node uses: deploy/aws/security-group-rules.json as setup.sh fills it in, plus
    any rule the file would have Ray add (Ray adds none to a group given by SecurityGroupIds)."""
    rules = json.loads(SECURITY_GROUP_RULES.read_text().replace("SSH_CIDR", ssh_cidr).replace("GROUP_ID", "sg-raylrec"))
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    return rules["IpPermissions"] + extra


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
    # Every node type uses that one group (Ray would create a group admitting SSH from anywhere otherwise).
    groups = {tuple(t["node_config"].get("SecurityGroupIds", ())) for t in config["available_node_types"].values()}
    assert groups == {("sg-REPLACE-ME",)} and "security_group" not in config["provider"]


def test_the_check_catches_an_exposed_dashboard(config):
    exposed = copy.deepcopy(config)
    exposed["provider"]["security_group"] = {
        "IpPermissions": [
            {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ]
    }
    with pytest.raises(AssertionError):
        test_no_ray_port_is_open_to_the_internet(exposed)


def test_ssh_is_open_only_to_the_range_the_user_sets(config):
    rules = effective_inbound_rules(config, "198.51.100.7/32")
    ssh = [rule for rule in rules if public_sources(rule)]
    assert len(ssh) == 1 and public_sources(ssh[0]) == {"198.51.100.7/32"} and covers(ssh[0], 22)
    assert not any(public_sources(rule) & OPEN_TO_ALL for rule in rules)
    for cidr, accepted in (
        ("198.51.100.7/32", True),
        ("10.0.0.0/16", True),
        ("0.0.0.0/0", False),
        ("::/0", False),
        ("not-a-range", False),
        ("", False),
    ):
        result = subprocess.run(
            ["bash", str(SETUP), "--dry-run"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ["PATH"], "SSH_CIDR": cidr, "RUN_BUCKET": "runs", "VPC_ID": "vpc-1"},
        )
        assert (result.returncode == 0) == accepted, (cidr, result.stderr)
        if accepted:
            assert f'"CidrIp": "{cidr}"' in result.stdout and "0.0.0.0/0" not in result.stdout


def test_instance_profiles_are_least_privilege(config):
    """Workers: the run bucket only. Head: the run bucket, the autoscaler's EC2 calls limited to this cluster's
    tagged instances, and passing the worker role only — never Ray's default role (EC2 and S3 full access)."""
    types = config["available_node_types"]
    assert types["head"]["node_config"]["IamInstanceProfile"] == {"Name": "raylrec-head"}
    assert {types[t]["node_config"]["IamInstanceProfile"]["Name"] for t in ("cpu-worker", "gpu-worker")} == {
        "raylrec-worker"
    }
    bucket = {"arn:aws:s3:::RUN_BUCKET", "arn:aws:s3:::RUN_BUCKET/*"}
    for role in ("worker", "head"):
        statements = json.loads((DEPLOY / f"{role}-policy.json").read_text())["Statement"]
        for statement in statements:
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
            assert statement["Effect"] == "Allow" and not any(a == "*" or a.endswith(":*") for a in actions)
            if any(a.startswith("s3:") for a in actions):
                assert set(resources) <= bucket, statement  # no other bucket, no wildcard bucket
            if role == "worker":
                assert all(a.startswith("s3:") for a in actions), statement
            elif any(a in ("ec2:TerminateInstances", "ec2:StopInstances") for a in actions):
                assert (
                    statement["Condition"]["StringEquals"]["aws:ResourceTag/ray-cluster-name"] == config["cluster_name"]
                )
            elif "iam:PassRole" in actions:
                assert resources == ["arn:aws:iam::ACCOUNT_ID:role/raylrec-worker"]


def test_token_auth_on_every_node_and_no_secrets_in_the_file(config):
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
        if "ray start --head" in command:  # the dashboard/job server listens on loopback: reached by SSH tunnel only
            assert "--dashboard-host=127.0.0.1" in command
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # copied over SSH, not written here
    text = CLUSTER_YAML.read_text()
    for pattern in (
        r"AKIA[0-9A-Z]{16}",
        r"(?i)aws_secret_access_key",
        r"(?i)aws_access_key_id",
        r"hf_[A-Za-z0-9]{20,}",
        r"(?i)(token|password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}",
        r"[0-9a-f]{64}",
    ):
        assert not re.search(pattern, text), pattern
