variable "name" {
  description = "Name prefix of the database resources."
  type        = string
}

variable "vpc_id" {
  description = "The VPC's id."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (at least two zones; Multi-AZ places the standby in another one)."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to connect on 5432 (the gateway and migration tasks)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for storage, the master-password secret and Performance Insights."
  type        = string
}

variable "engine_major_version" {
  description = "PostgreSQL major version (parameter group family)."
  type        = string
  default     = "16"
}

variable "engine_version" {
  description = "PostgreSQL engine version; a major version lets RDS pick and upgrade the minor one."
  type        = string
  default     = "16"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "multi_az" {
  description = "Run a synchronous standby in a second zone with automatic failover."
  type        = bool
  default     = true
}

variable "database" {
  description = "Database name (Tollgate's pg_database)."
  type        = string
  default     = "tollgate"
}

variable "username" {
  description = "Master user name (Tollgate's pg_user)."
  type        = string
  default     = "tollgate"
}

variable "allocated_storage" {
  description = "Initial storage, GiB."
  type        = number
  default     = 20
}

variable "max_allocated_storage" {
  description = "Storage autoscaling ceiling, GiB."
  type        = number
  default     = 100
}

variable "backup_retention_days" {
  description = "Days automated backups are kept."
  type        = number
  default     = 14
}

variable "deletion_protection" {
  description = "Refuse to delete the database (turn off before terraform destroy)."
  type        = bool
  default     = true
}

variable "ca_cert_identifier" {
  description = "Server certificate authority of the instance."
  type        = string
  default     = "rds-ca-rsa2048-g1"
}

variable "log_min_duration_ms" {
  description = "Statements slower than this are logged (milliseconds)."
  type        = number
  default     = 500
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
