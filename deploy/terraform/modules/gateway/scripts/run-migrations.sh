#!/usr/bin/env bash
# Runs the Tollgate migrations task once and waits for it: exit status 0 only when every
# container of the task exited 0. Called by terraform apply (modules/gateway) before the
# gateway service rolls; usable by hand with the same variables.
#   AWS_REGION CLUSTER TASK_DEFINITION SUBNETS (comma-separated) SECURITY_GROUPS
#   [CAPACITY_PROVIDER=FARGATE] [TIMEOUT_SECONDS=900]
set -euo pipefail
: "${AWS_REGION:?}" "${CLUSTER:?}" "${TASK_DEFINITION:?}" "${SUBNETS:?}" "${SECURITY_GROUPS:?}"
command -v aws >/dev/null || { echo "run-migrations: the AWS CLI is required" >&2; exit 1; }
capacity="${CAPACITY_PROVIDER:-FARGATE}"
timeout="${TIMEOUT_SECONDS:-900}"

run="$(aws ecs run-task --region "$AWS_REGION" --cluster "$CLUSTER" \
  --task-definition "$TASK_DEFINITION" --started-by tollgate-migrations \
  --capacity-provider-strategy "capacityProvider=$capacity,weight=1" \
  --network-configuration "awsvpcConfiguration={subnets=[$SUBNETS],securityGroups=[$SECURITY_GROUPS],assignPublicIp=DISABLED}" \
  --output json)"
task="$(printf '%s' "$run" | python3 -c 'import json,sys; t=json.load(sys.stdin).get("tasks") or [{}]; print(t[0].get("taskArn",""))')"
if [ -z "$task" ]; then
  echo "run-migrations: ECS did not start the task: $run" >&2
  exit 1
fi
echo "run-migrations: started $task"

deadline=$(( $(date +%s) + timeout ))
while :; do
  status="$(aws ecs describe-tasks --region "$AWS_REGION" --cluster "$CLUSTER" --tasks "$task" \
    --query 'tasks[0].lastStatus' --output text)"
  [ "$status" = "STOPPED" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "run-migrations: $task still $status after ${timeout}s; stopping it" >&2
    aws ecs stop-task --region "$AWS_REGION" --cluster "$CLUSTER" --task "$task" \
      --reason "migrations timed out" >/dev/null || true
    exit 1
  fi
  sleep 6
done

# One line per container: name, exit code (None if it never ran), reason.
result="$(aws ecs describe-tasks --region "$AWS_REGION" --cluster "$CLUSTER" --tasks "$task" \
  --query 'tasks[0].[stoppedReason, containers[].[name, exitCode, reason]]' --output json)"
printf '%s' "$result" | python3 -c '
import json, sys
reason, containers = json.load(sys.stdin)
ok = bool(containers) and all(c[1] == 0 for c in containers)
for name, code, why in containers:
    print(f"run-migrations: container {name}: exit {code}" + (f" ({why})" if why else ""))
if not ok:
    print(f"run-migrations: failed: {reason}; see the log streams with prefix migrations/", file=sys.stderr)
sys.exit(0 if ok else 1)
'
