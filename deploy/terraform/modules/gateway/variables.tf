variable "name" {
  description = "Deployment name (prefix of families, roles and groups)."
  type        = string
}

variable "image" {
  description = "Tollgate image (built from deploy/docker/Dockerfile), pinned by tag or digest."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ECR repository of the image, if it is in ECR (the execution role may pull from it only)."
  type        = string
  default     = null
}

variable "cluster_arn" {
  description = "ECS cluster ARN."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name (autoscaling resource id)."
  type        = string
}

variable "capacity_provider_strategy" {
  description = "Where tasks run: FARGATE, FARGATE_SPOT or the cluster's EC2 capacity provider. The first entry also runs the migrations task."
  type = list(object({
    capacity_provider = string
    weight            = number
    base              = number
  }))
  default = [{ capacity_provider = "FARGATE", weight = 1, base = 0 }]
}

variable "compatibilities" {
  description = "Launch types the task definitions support (FARGATE, and EC2 with an EC2 capacity provider)."
  type        = list(string)
  default     = ["FARGATE"]
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64; the image must be built for it."
  type        = string
  default     = "X86_64"
  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "cpu" {
  description = "Task CPU units (1024 = one vCPU)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Task memory, MiB."
  type        = number
  default     = 2048
}

variable "desired_count" {
  description = "Tasks at creation (spread over the subnets' zones); autoscaling adjusts it afterwards."
  type        = number
  default     = 3
}

variable "min_count" {
  description = "Autoscaling minimum (keep at least one task per zone)."
  type        = number
  default     = 3
}

variable "max_count" {
  description = "Autoscaling maximum."
  type        = number
  default     = 12
}

variable "cpu_target_percent" {
  description = "Average CPU utilisation autoscaling aims for."
  type        = number
  default     = 60
}

variable "vpc_id" {
  description = "The VPC's id."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's CIDR block (admin_cidrs must lie inside it)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks, one per zone."
  type        = list(string)
}

variable "alb_security_group_id" {
  description = "The ALB's security group (allowed into the proxy and status ports)."
  type        = string
}

variable "target_group_arn" {
  description = "ALB target group of the proxy port."
  type        = string
}

variable "listener_arn" {
  description = "The ALB listener forwarding to target_group_arn (the service is created after it)."
  type        = string
}

variable "admin_cidrs" {
  description = "Networks inside the VPC allowed to reach the Admin API (e.g. the VPC CIDR or an operations subnet)."
  type        = list(string)
  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must be IPv4 CIDR blocks (each is also checked to lie inside vpc_cidr)."
  }
}

variable "admin_auth" {
  description = "Tollgate admin_auth. The Admin API listens beyond loopback here, which Tollgate refuses unless this is set: token (create tokens with 'tollgate admin-tokens create NAME' against the cluster's database) or mtls; off relies on the security group alone."
  type        = string
  default     = "off"
  validation {
    condition     = contains(["off", "token", "mtls"], var.admin_auth)
    error_message = "admin_auth must be off, token or mtls."
  }
}

variable "internal_proxy_cidrs" {
  description = "Networks allowed to call the proxy port directly (through Cloud Map, without the ALB)."
  type        = list(string)
  default     = []
}

variable "egress_cidrs" {
  description = "Where tasks may open TCP connections: upstream services, the database, AWS endpoints."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "proxy_port" {
  description = "Plain-HTTP proxy port (TLS ends at the ALB)."
  type        = number
  default     = 8000
}

variable "admin_port" {
  description = "Admin API port."
  type        = number
  default     = 8001
}

variable "status_port" {
  description = "Status API port (/status, /status/ready)."
  type        = number
  default     = 8007
}

variable "environment" {
  description = "Extra container environment, TOLLGATE_<KEY> = value for any kong.conf key (database, pg_*, plugins, ...). Never put secrets here."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Container environment read from Secrets Manager or SSM at start: variable name => valueFrom (e.g. TOLLGATE_PG_PASSWORD => <secret ARN>:password::)."
  type        = map(string)
  default     = {}
}

variable "secret_arns" {
  description = "ARNs of the secrets referenced in var.secrets (the execution role may read exactly these)."
  type        = list(string)
  default     = []
}

variable "kms_key_arns" {
  description = "KMS keys encrypting those secrets."
  type        = list(string)
  default     = []
}

variable "log_group_name" {
  description = "CloudWatch log group for the awslogs driver."
  type        = string
}

variable "log_group_arn" {
  description = "ARN of that log group."
  type        = string
}

variable "namespace_id" {
  description = "Cloud Map namespace the service registers in."
  type        = string
}

variable "discovery_name" {
  description = "Cloud Map service name: tasks resolve as <discovery_name>.<namespace>."
  type        = string
  default     = "gateway"
}

variable "stop_timeout" {
  description = "Seconds between SIGTERM and SIGKILL (Tollgate drains in-flight requests meanwhile; at most 120 on Fargate)."
  type        = number
  default     = 30
}

variable "manage_service" {
  description = "Terraform creates and rolls the ECS service. false: only the infrastructure around it (task definitions, roles, security group, discovery); tollgate-ecs owns the service and its rollouts."
  type        = bool
  default     = true
}

variable "run_migrations_on_apply" {
  description = "Run the migrations task from terraform apply (needs the AWS CLI where Terraform runs) before the service rolls."
  type        = bool
  default     = true
}

variable "datastore_ready" {
  description = "Any value that is known only once the datastore is up (the migrations wait for it); PostgreSQL needs none, its address already orders them."
  type        = string
  default     = ""
}

variable "migrations_timeout_seconds" {
  description = "How long apply waits for the migrations task."
  type        = number
  default     = 900
}

variable "wait_for_steady_state" {
  description = "Make terraform apply wait until the service is stable."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
