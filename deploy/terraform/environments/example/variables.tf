variable "region" {
  description = "AWS region (it needs at least three availability zones)."
  type        = string
  default     = "eu-central-1"
}

variable "azs" {
  description = "Exactly three availability zones of the region, named explicitly so the layout never shifts when AWS adds a zone."
  type        = list(string)
  default     = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  validation {
    condition     = length(var.azs) == 3
    error_message = "This example spreads over exactly three availability zones."
  }
}

variable "environment" {
  description = "Environment name; resources are named tollgate-<environment>."
  type        = string
  default     = "example"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment: 2 to 16 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr" {
  description = "VPC CIDR (a /16): public subnets take /24s at its start, private subnets /20s after them."
  type        = string
  default     = "10.20.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone (cheaper; not zone-failure tolerant)."
  type        = bool
  default     = false
}

variable "route53_zone_id" {
  description = "Public Route53 hosted zone of domain_name (records and certificate validation go there)."
  type        = string
}

variable "domain_name" {
  description = "The hosted zone's domain (e.g. example.com)."
  type        = string
}

variable "public_hostnames" {
  description = "Host names under domain_name that reach the gateway (the first is the certificate's main name)."
  type        = list(string)
  default     = ["api"]
  validation {
    condition     = length(var.public_hostnames) >= 1
    error_message = "At least one public host name is needed."
  }
}

variable "client_cidrs" {
  description = "Client networks allowed to reach the HTTPS listener."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "web_acl_arn" {
  description = "Optional WAFv2 web ACL for the ALB."
  type        = string
  default     = null
}

variable "image" {
  description = "Tollgate image built from deploy/docker/Dockerfile, pinned (e.g. <account>.dkr.ecr.<region>.amazonaws.com/tollgate:0.1.0 or @sha256:...)."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ECR repository holding the image (null for a public registry)."
  type        = string
  default     = null
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64, matching the image."
  type        = string
  default     = "X86_64"
}

variable "gateway_cpu" {
  description = "CPU units per gateway task."
  type        = number
  default     = 1024
}

variable "gateway_memory" {
  description = "Memory per gateway task, MiB."
  type        = number
  default     = 2048
}

variable "gateway_count" {
  description = "Gateway tasks at least (one per zone: keep it a multiple of 3)."
  type        = number
  default     = 3
}

variable "gateway_max_count" {
  description = "Gateway tasks at most (CPU autoscaling)."
  type        = number
  default     = 12
}

variable "gateway_environment" {
  description = "Further Tollgate settings as TOLLGATE_<KEY> = value (e.g. TOLLGATE_PLUGINS, TOLLGATE_LOG_LEVEL). No secrets."
  type        = map(string)
  default     = {}
}

variable "admin_cidrs" {
  description = "Networks inside the VPC allowed to reach the Admin API on port 8001 (default: the whole VPC)."
  type        = list(string)
  default     = []
}

variable "admin_auth" {
  description = "Tollgate admin_auth for the VPC-internal Admin API: token (tokens from 'tollgate admin-tokens create NAME') or mtls; off relies on the security group alone."
  type        = string
  default     = "off"
}

variable "discovery_namespace" {
  description = "Cloud Map private DNS namespace (the Admin API is gateway.<namespace>:8001)."
  type        = string
  default     = "tollgate.internal"
}

variable "enable_ec2_capacity" {
  description = "Run the gateway on an EC2 capacity provider instead of Fargate."
  type        = bool
  default     = false
}

variable "ec2_instance_type" {
  description = "Instance type of the EC2 capacity provider (its architecture must match cpu_architecture)."
  type        = string
  default     = "m7i.large"
}

variable "datastore" {
  description = "postgres (RDS, recommended) or cassandra (Cassandra on ECS with EBS volumes)."
  type        = string
  default     = "postgres"
  validation {
    condition     = contains(["postgres", "cassandra"], var.datastore)
    error_message = "datastore must be postgres or cassandra."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_multi_az" {
  description = "RDS Multi-AZ (a synchronous standby with automatic failover)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "CloudWatch log retention of the containers' logs, days."
  type        = number
  default     = 365
}

variable "deletion_protection" {
  description = "Protect the ALB and the database from deletion (set false, apply, then destroy)."
  type        = bool
  default     = true
}

variable "rollouts" {
  description = "Who owns the gateway's ECS service and rolls new versions: terraform (image variable + apply) or tollgate-ecs (deploy/ecs; Terraform then keeps only the infrastructure around the service)."
  type        = string
  default     = "terraform"
  validation {
    condition     = contains(["terraform", "tollgate-ecs"], var.rollouts)
    error_message = "rollouts must be terraform or tollgate-ecs."
  }
}

variable "run_migrations_on_apply" {
  description = "With rollouts = terraform, apply runs the migrations task (AWS CLI needed where Terraform runs) before the gateway rolls."
  type        = bool
  default     = true
}
