variable "name" {
  description = "Cluster name (also the prefix of the EC2 capacity resources)."
  type        = string
}

variable "vpc_id" {
  description = "The VPC's id (the Cloud Map namespace is private to it)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for EC2 container instances."
  type        = list(string)
}

variable "namespace" {
  description = "Cloud Map private DNS namespace (e.g. tollgate.internal); services become <service>.<namespace>."
  type        = string
}

variable "enable_ec2_capacity" {
  description = "Add an EC2 Auto Scaling capacity provider next to Fargate."
  type        = bool
  default     = false
}

variable "default_to_ec2" {
  description = "With enable_ec2_capacity, make EC2 the cluster's default capacity provider."
  type        = bool
  default     = false
}

variable "ec2_instance_type" {
  description = "Instance type of the EC2 capacity provider."
  type        = string
  default     = "m7g.large"
}

variable "ec2_architecture" {
  description = "CPU architecture of ec2_instance_type: x86_64 or arm64 (selects the ECS-optimized AMI)."
  type        = string
  default     = "arm64"
  validation {
    condition     = contains(["x86_64", "arm64"], var.ec2_architecture)
    error_message = "ec2_architecture must be x86_64 or arm64."
  }
}

variable "ec2_min_size" {
  description = "Minimum number of container instances."
  type        = number
  default     = 0
}

variable "ec2_max_size" {
  description = "Maximum number of container instances."
  type        = number
  default     = 6
}

variable "ec2_root_volume_size" {
  description = "Root volume size of container instances, GiB."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
