# The Tollgate gateway on ECS: the service behind the ALB, its task definition, the one-off
# migrations task that runs before a new version rolls, service discovery and autoscaling.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  # Container defaults for this deployment; var.environment (pg_* and anything else) is
  # merged on top and may override them.
  base_environment = {
    TOLLGATE_PREFIX        = "/var/lib/tollgate"
    TOLLGATE_PROXY_LISTEN  = "0.0.0.0:${var.proxy_port} reuseport backlog=16384"
    TOLLGATE_STATUS_LISTEN = "0.0.0.0:${var.status_port}"
    # The Admin API listens on the task's VPC address; the security group admits only
    # admin_cidrs. Tollgate refuses a non-loopback admin_listen unless admin_auth is set.
    TOLLGATE_ADMIN_LISTEN = "0.0.0.0:${var.admin_port}"
    TOLLGATE_ADMIN_AUTH   = var.admin_auth
    NO_COLOR              = "1"
  }
  environment = [
    for k, v in merge(local.base_environment, var.environment) : { name = k, value = v }
  ]
  secrets = [for k, v in var.secrets : { name = k, valueFrom = v }]

  log_configuration = {
    logDriver = "awslogs"
    options = {
      awslogs-group  = var.log_group_name
      awslogs-region = local.region
      # A blocked log pipe must never stall the proxy; 4 MiB of lines are buffered.
      mode                  = "non-blocking"
      max-buffer-size       = "4m"
      awslogs-stream-prefix = "gateway"
    }
  }

  common_container = {
    image                  = var.image
    user                   = "65532:65532"
    readonlyRootFilesystem = true
    environment            = local.environment
    secrets                = local.secrets
    mountPoints            = [{ sourceVolume = "prefix", containerPath = "/var/lib/tollgate", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
  }
}

# ------------------------------------------------------------------------------- IAM

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The execution role is used by ECS itself (pull the image, write logs, read the database
# secret), scoped to exactly those resources. Tollgate makes no AWS API calls, so the tasks
# get no task role at all.
resource "aws_iam_role" "execution" {
  name_prefix        = "${substr(var.name, 0, 24)}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arn}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = length(var.secret_arns) > 0 ? [1] : []
    content {
      sid       = "ReadSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = var.secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = var.kms_key_arns
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.ecr_repository_arn == null ? [] : [1]
    content {
      sid       = "PullImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [var.ecr_repository_arn]
    }
  }

  dynamic "statement" {
    for_each = var.ecr_repository_arn == null ? [] : [1]
    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"] # an account-wide call: it takes no resource
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "tollgate-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# -------------------------------------------------------------------- security group

resource "aws_security_group" "task" {
  name_prefix = "${var.name}-task-"
  description = "Tollgate tasks: proxy and status from the ALB, Admin API from admin_cidrs"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-task" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "from_alb" {
  for_each = { proxy = var.proxy_port, status = var.status_port }

  security_group_id            = aws_security_group.task.id
  description                  = "${each.key} from the ALB"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = var.alb_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "admin" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.task.id
  description       = "Admin API from inside the VPC"
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
  cidr_ipv4         = each.value

  lifecycle {
    # Inside the VPC: at least as long a prefix, and the same network under the VPC's mask.
    precondition {
      condition = (
        tonumber(split("/", each.value)[1]) >= tonumber(split("/", var.vpc_cidr)[1]) &&
        cidrhost("${cidrhost(each.value, 0)}/${split("/", var.vpc_cidr)[1]}", 0) == cidrhost(var.vpc_cidr, 0)
      )
      error_message = "admin_cidrs entry ${each.value} is not inside the VPC (${var.vpc_cidr}): the Admin API is reachable from inside the VPC only."
    }
  }
}

resource "aws_vpc_security_group_ingress_rule" "internal_proxy" {
  for_each = toset(var.internal_proxy_cidrs)

  security_group_id = aws_security_group.task.id
  description       = "Proxy from internal callers (through Cloud Map, bypassing the ALB)"
  ip_protocol       = "tcp"
  from_port         = var.proxy_port
  to_port           = var.proxy_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "upstreams" {
  for_each = toset(var.egress_cidrs)

  security_group_id = aws_security_group.task.id
  description       = "Upstream services, the database and AWS endpoints (TCP)"
  ip_protocol       = "tcp"
  from_port         = 0
  to_port           = 65535
  cidr_ipv4         = each.value
}

# ----------------------------------------------------------------- task definitions

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${var.name}-gateway"
  requires_compatibilities = var.compatibilities
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  tags                     = var.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Scratch space for the prefix (pid file): the root filesystem is read-only.
  volume {
    name = "prefix"
  }

  container_definitions = jsonencode([merge(local.common_container, {
    name      = "tollgate"
    essential = true
    command   = ["start"]
    portMappings = [
      { name = "proxy", containerPort = var.proxy_port, protocol = "tcp" },
      { name = "admin", containerPort = var.admin_port, protocol = "tcp" },
      { name = "status", containerPort = var.status_port, protocol = "tcp" },
    ]
    logConfiguration = local.log_configuration
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/tollgate", "health"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }
    ulimits     = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    stopTimeout = var.stop_timeout
  })])
}

# The schema steps, as one task: `bootstrap` (a no-op on a bootstrapped database) and, once it
# exited 0, `up` (what a newer image brings). Never run by the service itself: several nodes
# must not race to create a schema.
resource "aws_ecs_task_definition" "migrations" {
  family                   = "${var.name}-migrations"
  requires_compatibilities = var.compatibilities
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  execution_role_arn       = aws_iam_role.execution.arn
  tags                     = var.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "prefix"
  }

  container_definitions = jsonencode([
    merge(local.common_container, {
      name             = "bootstrap"
      essential        = false
      command          = ["migrations", "bootstrap"]
      logConfiguration = merge(local.log_configuration, { options = merge(local.log_configuration.options, { awslogs-stream-prefix = "migrations" }) })
    }),
    merge(local.common_container, {
      name             = "up"
      essential        = true
      command          = ["migrations", "up"]
      dependsOn        = [{ containerName = "bootstrap", condition = "SUCCESS" }]
      logConfiguration = merge(local.log_configuration, { options = merge(local.log_configuration.options, { awslogs-stream-prefix = "migrations" }) })
    }),
  ])
}

# Runs the migrations task and fails the apply unless every container exited 0 — before the
# service below rolls. It re-runs only when the migrations task definition changes (a new
# image or new settings), never on every apply. With manage_service = false, tollgate-ecs
# runs this task itself before each rollout.
# Whatever the datastore module reports as ready (e.g. the Cassandra services) comes first.
resource "terraform_data" "datastore" {
  input = var.datastore_ready
}

resource "terraform_data" "migrations" {
  count            = var.manage_service && var.run_migrations_on_apply ? 1 : 0
  triggers_replace = [aws_ecs_task_definition.migrations.arn]
  depends_on       = [terraform_data.datastore]

  provisioner "local-exec" {
    command     = "${path.module}/scripts/run-migrations.sh"
    interpreter = ["bash"]
    environment = {
      AWS_REGION        = local.region
      CLUSTER           = var.cluster_arn
      TASK_DEFINITION   = aws_ecs_task_definition.migrations.arn
      SUBNETS           = join(",", var.subnet_ids)
      SECURITY_GROUPS   = aws_security_group.task.id
      CAPACITY_PROVIDER = var.capacity_provider_strategy[0].capacity_provider
      TIMEOUT_SECONDS   = tostring(var.migrations_timeout_seconds)
    }
  }
}

# ------------------------------------------------------------------ service discovery

resource "aws_service_discovery_service" "gateway" {
  name = var.discovery_name
  tags = var.tags

  dns_config {
    namespace_id   = var.namespace_id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  # ECS reports task health to Cloud Map (container health check and ALB target health).
  health_check_custom_config {
    failure_threshold = 1
  }
}

# ---------------------------------------------------------------------------- service

# The service may register targets only once the target group is attached to a listener.
resource "terraform_data" "listener" {
  input = var.listener_arn
}

# With manage_service = false the service (and its rollouts) belong to tollgate-ecs, which
# reads this module's outputs; Terraform then keeps only the infrastructure around it. Never
# let both change the service's task definition: each would undo the other's rollouts.
resource "aws_ecs_service" "gateway" {
  count = var.manage_service ? 1 : 0

  name                               = "gateway"
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.gateway.arn
  desired_count                      = var.desired_count
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 30
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  wait_for_steady_state              = var.wait_for_steady_state
  tags                               = var.tags

  # A version that never becomes healthy is rolled back by ECS.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  dynamic "capacity_provider_strategy" {
    for_each = var.capacity_provider_strategy
    content {
      capacity_provider = capacity_provider_strategy.value.capacity_provider
      weight            = capacity_provider_strategy.value.weight
      base              = capacity_provider_strategy.value.base
    }
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = var.target_group_arn
    container_name   = "tollgate"
    container_port   = var.proxy_port
  }

  service_registries {
    registry_arn = aws_service_discovery_service.gateway.arn
  }

  lifecycle {
    # Autoscaling owns the running count once the service exists.
    ignore_changes = [desired_count]
  }

  depends_on = [terraform_data.migrations, terraform_data.listener, aws_iam_role_policy.execution]
}

# ------------------------------------------------------------------------ autoscaling

resource "aws_appautoscaling_target" "gateway" {
  count = var.manage_service ? 1 : 0

  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.gateway[0].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
  tags               = var.tags
}

resource "aws_appautoscaling_policy" "cpu" {
  count = var.manage_service ? 1 : 0

  name               = "${var.name}-gateway-cpu"
  service_namespace  = aws_appautoscaling_target.gateway[0].service_namespace
  resource_id        = aws_appautoscaling_target.gateway[0].resource_id
  scalable_dimension = aws_appautoscaling_target.gateway[0].scalable_dimension
  policy_type        = "TargetTrackingScaling"

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 120
    scale_out_cooldown = 30
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
