# The ECS cluster (Fargate, optionally an EC2 capacity provider) and the Cloud Map private DNS
# namespace the services register in. Cloud Map replaces the seed's Weave overlay: every
# awsvpc task has a VPC address and a DNS name <service>.<namespace>.

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = var.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.namespace
  description = "Service discovery for ${var.name}"
  vpc         = var.vpc_id
  tags        = var.tags
}

locals {
  ec2_provider = var.enable_ec2_capacity ? [aws_ecs_capacity_provider.ec2[0].name] : []
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = concat(["FARGATE", "FARGATE_SPOT"], local.ec2_provider)

  default_capacity_provider_strategy {
    capacity_provider = var.enable_ec2_capacity && var.default_to_ec2 ? local.ec2_provider[0] : "FARGATE"
    weight            = 1
    base              = 0
  }
}

# ------------------------------------------------------------ EC2 capacity (optional)

data "aws_ssm_parameter" "ecs_ami" {
  count = var.enable_ec2_capacity ? 1 : 0
  name  = "/aws/service/ecs/optimized-ami/amazon-linux-2023/${var.ec2_architecture == "arm64" ? "arm64/" : ""}recommended/image_id"
}

data "aws_iam_policy_document" "instance_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "instance" {
  count              = var.enable_ec2_capacity ? 1 : 0
  name_prefix        = "${substr(var.name, 0, 20)}-ecs-host-"
  assume_role_policy = data.aws_iam_policy_document.instance_assume.json
  tags               = var.tags
}

# The AWS-managed policy is exactly what the ECS agent needs (register, poll, report state,
# pull from ECR, write awslogs); writing it out by hand would only drift from it.
resource "aws_iam_role_policy_attachment" "instance" {
  count      = var.enable_ec2_capacity ? 1 : 0
  role       = aws_iam_role.instance[0].name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "instance" {
  count       = var.enable_ec2_capacity ? 1 : 0
  name_prefix = "${substr(var.name, 0, 20)}-ecs-host-"
  role        = aws_iam_role.instance[0].name
}

resource "aws_security_group" "instance" {
  count       = var.enable_ec2_capacity ? 1 : 0
  name_prefix = "${var.name}-ecs-host-"
  description = "ECS container instances: no inbound (tasks use their own awsvpc interfaces)"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-ecs-host" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "instance_https" {
  count             = var.enable_ec2_capacity ? 1 : 0
  security_group_id = aws_security_group.instance[0].id
  description       = "ECS agent, ECR and CloudWatch endpoints (HTTPS through the NAT gateways)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_launch_template" "instance" {
  count         = var.enable_ec2_capacity ? 1 : 0
  name_prefix   = "${var.name}-ecs-host-"
  image_id      = data.aws_ssm_parameter.ecs_ami[0].value
  instance_type = var.ec2_instance_type
  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >>/etc/ecs/ecs.config <<CONF
    ECS_CLUSTER=${aws_ecs_cluster.this.name}
    ECS_ENABLE_TASK_IAM_ROLE=true
    ECS_AWSVPC_BLOCK_IMDS=true
    CONF
  EOT
  )
  vpc_security_group_ids = [aws_security_group.instance[0].id]
  ebs_optimized          = true
  tags                   = var.tags

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance[0].arn
  }

  # IMDSv2 only, one hop: containers cannot reach the instance's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = var.ec2_root_volume_size
      volume_type = "gp3"
      # Encrypted with the account's EBS key: a customer key would need a key-policy grant
      # for the Auto Scaling service-linked role, which may not exist before the first ASG.
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-ecs-host" })
  }
}

resource "aws_autoscaling_group" "instance" {
  count               = var.enable_ec2_capacity ? 1 : 0
  name_prefix         = "${var.name}-ecs-host-"
  vpc_zone_identifier = var.private_subnet_ids
  min_size            = var.ec2_min_size
  max_size            = var.ec2_max_size
  health_check_type   = "EC2"
  # ECS managed scaling sets the desired capacity; Terraform must not reset it.
  protect_from_scale_in = false

  launch_template {
    id      = aws_launch_template.instance[0].id
    version = "$Latest"
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
    }
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_ecs_capacity_provider" "ec2" {
  count = var.enable_ec2_capacity ? 1 : 0
  name  = "${var.name}-ec2"
  tags  = var.tags

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.instance[0].arn
    managed_termination_protection = "DISABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status          = "ENABLED"
      target_capacity = 100
    }
  }
}
