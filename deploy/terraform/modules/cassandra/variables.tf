variable "name" {
  description = "Deployment name (prefix of families, roles and groups)."
  type        = string
}

variable "image" {
  description = "Cassandra image, pinned (the official image's entrypoint reads the CASSANDRA_* variables)."
  type        = string
  default     = "cassandra:5.0.6"
}

variable "node_count" {
  description = "Nodes in the ring: one seed plus node_count - 1 members (3 for replication factor 3)."
  type        = number
  default     = 3
  validation {
    condition     = var.node_count >= 3
    error_message = "A highly available ring needs at least 3 nodes."
  }
}

variable "cpu" {
  description = "Task CPU units per node."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Task memory per node, MiB (half goes to the JVM heap)."
  type        = number
  default     = 8192
}

variable "volume_size_gib" {
  description = "EBS data volume per node, GiB."
  type        = number
  default     = 100
}

variable "cluster_name" {
  description = "Cassandra cluster name (CASSANDRA_CLUSTER_NAME)."
  type        = string
  default     = "tollgate"
}

variable "datacenter" {
  description = "Data center name the nodes announce (use it in cassandra_data_centers and cassandra_local_datacenter)."
  type        = string
  default     = "dc1"
}

variable "cluster_arn" {
  description = "ECS cluster ARN."
  type        = string
}

variable "vpc_id" {
  description = "The VPC's id."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the nodes (the seed runs in the first)."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to connect on 9042 (the gateway and migration tasks)."
  type        = list(string)
}

variable "namespace_id" {
  description = "Cloud Map namespace id."
  type        = string
}

variable "namespace_name" {
  description = "Cloud Map namespace DNS name."
  type        = string
}

variable "log_group_name" {
  description = "CloudWatch log group for the awslogs driver."
  type        = string
}

variable "log_group_arn" {
  description = "ARN of that log group."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the EBS volumes."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
