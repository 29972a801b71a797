# The public entry: an internet-facing ALB in the public subnets, HTTPS only (ACM
# certificate), forwarding to the gateway tasks' proxy port (8000) and health-checking them on
# the status listener's /status/ready (8007). The Admin API is never behind this ALB.

data "aws_elb_service_account" "this" {}

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-alb-"
  description = "Tollgate ALB: HTTPS from clients, proxy and status ports to the gateway tasks"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  for_each = toset(var.ingress_cidrs)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "to_targets" {
  for_each = { proxy = var.target_port, status = var.health_check_port }

  security_group_id            = aws_security_group.alb.id
  description                  = "To the gateway tasks (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = var.target_security_group_id
}

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_76:no WAF is attached by default (web_acl_arn is the operator's choice); Tollgate is not Java, Log4j rules do not apply to it
  name                       = substr(var.name, 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  desync_mitigation_mode     = "defensive"
  idle_timeout               = var.idle_timeout
  enable_deletion_protection = var.deletion_protection
  tags                       = var.tags

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "alb"
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_lb_target_group" "proxy" {
  name_prefix          = "tg-"
  target_type          = "ip" # awsvpc tasks register their own addresses
  port                 = var.target_port
  protocol             = "HTTP"
  vpc_id               = var.vpc_id
  deregistration_delay = var.deregistration_delay
  tags                 = var.tags

  # /status/ready answers 503 while a node drains and while the database is unreachable (as
  # Kong's does). ECS replaces tasks the ALB finds unhealthy, so the unhealthy window
  # (interval x unhealthy_threshold) must outlast an RDS Multi-AZ failover: otherwise a
  # failover would make ECS recycle every gateway task at once. A crashed process is caught
  # sooner anyway (essential container exit, `tollgate health`), and draining tasks are
  # deregistered before SIGTERM.
  health_check {
    protocol            = "HTTP"
    port                = tostring(var.health_check_port)
    path                = "/status/ready"
    matcher             = "200"
    interval            = var.health_check_interval
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = var.health_check_unhealthy_threshold
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn
  tags              = var.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.proxy.arn
  }
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

# Access logs. ALB log delivery supports SSE-S3 only (not SSE-KMS).
resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:this is the access-log bucket; logging its own accesses would need yet another bucket
  #checkov:skip=CKV2_AWS_62:nothing consumes events of access-log objects
  #checkov:skip=CKV_AWS_144:access logs are diagnostics with a 90-day expiry; a replica region is not worth its cost here
  #checkov:skip=CKV_AWS_145:ALB access-log delivery supports SSE-S3 only, not SSE-KMS (AWS ELB user guide)
  bucket_prefix = "${substr(var.name, 0, 26)}-alb-logs-" # at most 37 characters
  force_destroy = false
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "logs" {
  # Regions older than August 2022 deliver as the regional ELB account, newer ones as the
  # log-delivery service principal; granting both covers every region.
  statement {
    sid       = "ElbAccountDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/alb/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.this.arn]
    }
  }
  statement {
    sid       = "ServiceDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/alb/*"]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket     = aws_s3_bucket.logs.id
  policy     = data.aws_iam_policy_document.logs.json
  depends_on = [aws_s3_bucket_public_access_block.logs]
}
