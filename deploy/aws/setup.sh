#!/usr/bin/env bash
# One-time AWS set-up for cluster.yaml (README, "The cluster"): least-privilege roles and the security group.
#
#   SSH_CIDR=198.51.100.7/32 RUN_BUCKET=my-raylrec-runs VPC_ID=vpc-... bash deploy/aws/setup.sh [--dry-run]
#
# - raylrec-worker: instance profile of the workers; read/write to s3://RUN_BUCKET only (worker-policy.json).
# - raylrec-head: instance profile of the head; the same bucket, plus the EC2 calls Ray's autoscaler makes, limited
#   to instances tagged ray-cluster-name=raylrec, and iam:PassRole on raylrec-worker only (head-policy.json).
# - raylrec-cluster: security group; SSH only from SSH_CIDR (refused when it is the whole internet), every other
#   port only between the cluster's own nodes (security-group-rules.json). Put its id into cluster.yaml.
# Prints every aws command; --dry-run prints without running them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run=""
[[ "${1:-}" == "--dry-run" ]] && run="echo"

: "${SSH_CIDR:?set SSH_CIDR to the address range allowed to SSH to the head, e.g. your IP/32}"
: "${RUN_BUCKET:?set RUN_BUCKET to the bucket holding run directories}"
: "${VPC_ID:?set VPC_ID to the VPC the cluster runs in}"
python3 - "$SSH_CIDR" <<'PY'
import ipaddress, sys
try:
    network = ipaddress.ip_network(sys.argv[1], strict=False)
except ValueError as err:
    sys.exit(f"SSH_CIDR {sys.argv[1]!r} is not an address range: {err}")
if network.prefixlen == 0:
    sys.exit(f"SSH_CIDR {sys.argv[1]} opens SSH to the whole internet; give your own network's range")
PY
if [[ -n "$run" ]]; then account=ACCOUNT_ID; else account="$(aws sts get-caller-identity --query Account --output text)"; fi

for role in worker head; do
  policy="$(sed -e "s/RUN_BUCKET/${RUN_BUCKET}/g" -e "s/ACCOUNT_ID/${account}/g" "$here/$role-policy.json")"
  $run aws iam create-role --role-name "raylrec-$role" --assume-role-policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
  $run aws iam put-role-policy --role-name "raylrec-$role" --policy-name "raylrec-$role" --policy-document "$policy"
  $run aws iam create-instance-profile --instance-profile-name "raylrec-$role"
  $run aws iam add-role-to-instance-profile --instance-profile-name "raylrec-$role" --role-name "raylrec-$role"
done

if [[ -n "$run" ]]; then group=sg-DRYRUN; else
  group="$(aws ec2 create-security-group --group-name raylrec-cluster --vpc-id "$VPC_ID" \
    --description "raylrec: SSH from SSH_CIDR only; Ray ports between members" --query GroupId --output text)"
fi
rules="$(sed -e "s#SSH_CIDR#${SSH_CIDR}#" -e "s/GROUP_ID/${group}/" "$here/security-group-rules.json" |
  python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["IpPermissions"]))')"
$run aws ec2 authorize-security-group-ingress --group-id "$group" --ip-permissions "$rules"
echo "security group: $group — set it as SecurityGroupIds in every node_config of cluster.yaml"
