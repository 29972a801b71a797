variable "name" {
  description = "Name prefix (the ALB name is its first 32 characters)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC's id."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets, one per availability zone."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "ingress_cidrs" {
  description = "Client networks allowed to reach the HTTPS listener (0.0.0.0/0 for a public API)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "target_security_group_id" {
  description = "Security group of the gateway tasks (the ALB's only egress destination)."
  type        = string
}

variable "target_port" {
  description = "The gateway tasks' plain-HTTP proxy port (proxy_listen)."
  type        = number
  default     = 8000
}

variable "health_check_port" {
  description = "The gateway tasks' status listener port (status_listen); /status/ready is checked there."
  type        = number
  default     = 8007
}

variable "health_check_interval" {
  description = "Seconds between health checks of a target."
  type        = number
  default     = 15
}

variable "health_check_unhealthy_threshold" {
  description = "Failed checks before a target is unhealthy; interval x threshold (150 s by default) should outlast a database failover."
  type        = number
  default     = 10
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "idle_timeout" {
  description = "Seconds an idle client connection stays open (keep it above upstream timeouts of long requests)."
  type        = number
  default     = 60
}

variable "deregistration_delay" {
  description = "Seconds a stopping task keeps receiving in-flight traffic (Tollgate drains on SIGTERM)."
  type        = number
  default     = 30
}

variable "deletion_protection" {
  description = "Refuse to delete the ALB (turn off before terraform destroy)."
  type        = bool
  default     = true
}

variable "access_log_retention_days" {
  description = "Days ALB access logs are kept in S3."
  type        = number
  default     = 90
}

variable "web_acl_arn" {
  description = "Optional AWS WAFv2 web ACL to associate with the ALB."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
