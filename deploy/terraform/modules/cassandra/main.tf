# Optional: Apache Cassandra on ECS for users who choose Tollgate's Cassandra store
# (database = cassandra). PostgreSQL (modules/postgres) is the recommended store.
#
# Shape: a "seed" service with one task and a "members" service with node_count - 1 tasks,
# both awsvpc tasks in the private subnets, each task with its own ECS-managed, encrypted EBS
# volume for /var/lib/cassandra, discoverable as cassandra-seed.<namespace> and
# cassandra.<namespace> through Cloud Map (the seed's Weave DNS names, without the overlay).
# Ordering is explicit instead of the seed's fixed sleeps: the members service is created
# only once the seed service is stable.
#
# Caveat (see deploy/README.md): ECS deletes a task's managed volume when the task stops, so
# a replaced task joins as a new node (a replaced member re-streams its data, a replaced seed
# needs `nodetool repair`); the old node must be removed with `nodetool removenode`. Keep
# replication at 3 (NetworkTopologyStrategy).

data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  region      = data.aws_region.current.name
  seed_name   = "cassandra-seed"
  member_name = "cassandra"
  environment = {
    CASSANDRA_CLUSTER_NAME    = var.cluster_name
    CASSANDRA_DC              = var.datacenter
    CASSANDRA_RACK            = "rack1"
    CASSANDRA_ENDPOINT_SNITCH = "GossipingPropertyFileSnitch"
    MAX_HEAP_SIZE             = "${floor(var.memory / 2)}M"
    HEAP_NEWSIZE              = "${floor(var.memory / 8)}M"
  }
}

# ------------------------------------------------------------------------------- IAM

data "aws_iam_policy_document" "tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${substr(var.name, 0, 20)}-cass-exec-"
  assume_role_policy = data.aws_iam_policy_document.tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "cassandra-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# The role ECS uses to create, attach and delete the tasks' EBS volumes.
data "aws_iam_policy_document" "infrastructure_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "infrastructure" {
  name_prefix        = "${substr(var.name, 0, 20)}-cass-ebs-"
  assume_role_policy = data.aws_iam_policy_document.infrastructure_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "infrastructure" {
  role       = aws_iam_role.infrastructure.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSInfrastructureRolePolicyForVolumes"
}

data "aws_iam_policy_document" "volume_key" {
  statement {
    actions   = ["kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ec2.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "volume_key" {
  name   = "encrypt-volumes"
  role   = aws_iam_role.infrastructure.id
  policy = data.aws_iam_policy_document.volume_key.json
}

# -------------------------------------------------------------------- security group

resource "aws_security_group" "cassandra" {
  name_prefix = "${var.name}-cassandra-"
  description = "Cassandra: CQL from Tollgate tasks, gossip between nodes"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-cassandra" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "cql" {
  count = length(var.client_security_group_ids)

  security_group_id            = aws_security_group.cassandra.id
  description                  = "CQL from Tollgate tasks"
  ip_protocol                  = "tcp"
  from_port                    = 9042
  to_port                      = 9042
  referenced_security_group_id = var.client_security_group_ids[count.index]
}

resource "aws_vpc_security_group_ingress_rule" "gossip" {
  security_group_id            = aws_security_group.cassandra.id
  description                  = "Internode traffic (gossip, streaming)"
  ip_protocol                  = "tcp"
  from_port                    = 7000
  to_port                      = 7000
  referenced_security_group_id = aws_security_group.cassandra.id
}

resource "aws_vpc_security_group_ingress_rule" "cql_peers" {
  security_group_id            = aws_security_group.cassandra.id
  description                  = "CQL between nodes (health checks, nodetool, cqlsh)"
  ip_protocol                  = "tcp"
  from_port                    = 9042
  to_port                      = 9042
  referenced_security_group_id = aws_security_group.cassandra.id
}

resource "aws_vpc_security_group_egress_rule" "gossip" {
  security_group_id            = aws_security_group.cassandra.id
  description                  = "Internode traffic to the other nodes"
  ip_protocol                  = "tcp"
  from_port                    = 7000
  to_port                      = 7000
  referenced_security_group_id = aws_security_group.cassandra.id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.cassandra.id
  description       = "Image registry and CloudWatch endpoints (HTTPS through the NAT gateways)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# ----------------------------------------------------------------- task definitions

locals {
  members_dns = "${local.member_name}.${var.namespace_name}"
  # The seed lists itself and the members: on the very first start the members' name does
  # not resolve yet (Cassandra skips unresolvable seeds) and the seed founds the ring; a
  # replaced seed finds the running members and rejoins that ring instead of founding a
  # second one. Members list only the seed (a node that lists itself never bootstraps).
  seed_command = [
    "bash", "-c",
    "export CASSANDRA_SEEDS=\"$(hostname --ip-address),${local.members_dns}\"; exec docker-entrypoint.sh cassandra -f",
  ]
}

resource "aws_ecs_task_definition" "node" {
  for_each = {
    (local.seed_name)   = { env = {}, command = local.seed_command }
    (local.member_name) = { env = { CASSANDRA_SEEDS = "${local.seed_name}.${var.namespace_name}" }, command = null }
  }

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  tags                     = var.tags

  # The EBS volume is described by the service at launch (volume_configuration below).
  volume {
    name                = "data"
    configure_at_launch = true
  }

  #checkov:skip=CKV_AWS_336:the official Cassandra image writes its configuration files at start (entrypoint), so its root filesystem cannot be read-only; data lives on the EBS volume
  container_definitions = jsonencode([{
    name        = "cassandra"
    image       = var.image
    essential   = true
    environment = [for k, v in merge(local.environment, each.value.env) : { name = k, value = v }]
    entryPoint  = each.value.command
    portMappings = [
      { containerPort = 9042, protocol = "tcp" },
      { containerPort = 7000, protocol = "tcp" },
    ]
    mountPoints = [{ sourceVolume = "data", containerPath = "/var/lib/cassandra", readOnly = false }]
    ulimits     = [{ name = "nofile", softLimit = 100000, hardLimit = 100000 }]
    healthCheck = {
      command     = ["CMD-SHELL", "cqlsh -e 'SELECT release_version FROM system.local' >/dev/null || exit 1"]
      interval    = 30
      timeout     = 10
      retries     = 5
      startPeriod = 240
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_name
        awslogs-region        = local.region
        awslogs-stream-prefix = each.key
        mode                  = "non-blocking"
      }
    }
    stopTimeout = 120 # nodetool drain-like shutdown: let Cassandra flush memtables
  }])
}

# ------------------------------------------------------------- discovery and services

resource "aws_service_discovery_service" "node" {
  for_each = toset([local.seed_name, local.member_name])

  name = each.key
  tags = var.tags

  dns_config {
    namespace_id   = var.namespace_id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}

resource "aws_ecs_service" "seed" {
  name                  = local.seed_name
  cluster               = var.cluster_arn
  task_definition       = aws_ecs_task_definition.node[local.seed_name].arn
  desired_count         = 1
  launch_type           = "FARGATE"
  wait_for_steady_state = true # members join only once the seed is up
  propagate_tags        = "SERVICE"
  tags                  = var.tags
  # One node: replace in place (a second seed task would form a separate ring).
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = [var.subnet_ids[0]]
    security_groups  = [aws_security_group.cassandra.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.node[local.seed_name].arn
  }

  volume_configuration {
    name = "data"
    managed_ebs_volume {
      role_arn         = aws_iam_role.infrastructure.arn
      size_in_gb       = var.volume_size_gib
      volume_type      = "gp3"
      encrypted        = true
      kms_key_id       = var.kms_key_arn
      file_system_type = "ext4"
    }
  }

  depends_on = [aws_iam_role_policy_attachment.infrastructure, aws_iam_role_policy.volume_key]
}

resource "aws_ecs_service" "members" {
  name                  = local.member_name
  cluster               = var.cluster_arn
  task_definition       = aws_ecs_task_definition.node[local.member_name].arn
  desired_count         = var.node_count - 1
  launch_type           = "FARGATE"
  wait_for_steady_state = true
  propagate_tags        = "SERVICE"
  tags                  = var.tags
  # Replace one node at a time; never run more nodes than asked.
  deployment_minimum_healthy_percent = floor(100 * (var.node_count - 2) / (var.node_count - 1))
  deployment_maximum_percent         = 100

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.cassandra.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.node[local.member_name].arn
  }

  volume_configuration {
    name = "data"
    managed_ebs_volume {
      role_arn         = aws_iam_role.infrastructure.arn
      size_in_gb       = var.volume_size_gib
      volume_type      = "gp3"
      encrypted        = true
      kms_key_id       = var.kms_key_arn
      file_system_type = "ext4"
    }
  }

  depends_on = [aws_ecs_service.seed]
}
